"""MQTT topic names: the one place that spells them (see docs/protocol.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def is_id(value: str) -> bool:
    return bool(_ID.match(value))


def check_id(kind: str, value: str) -> str:
    """Device, group and bundle ids become topic levels, so wildcards and slashes are refused."""
    if not _ID.match(value):
        raise ValueError(
            f"{kind} id {value!r} is not valid: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


@dataclass(frozen=True)
class Topics:
    prefix: str = "edgefleet"

    def __post_init__(self) -> None:
        if not self.prefix or any(c in self.prefix for c in "#+") or self.prefix.endswith("/"):
            raise ValueError(f"topic prefix {self.prefix!r} must be non-empty, without # + or a trailing /")

    # bundles: retained, written by the publisher
    def bundle_manifest(self, bundle_id: str) -> str:
        return f"{self.prefix}/bundles/{bundle_id}/manifest"

    def bundle_chunk(self, bundle_id: str, index: int) -> str:
        return f"{self.prefix}/bundles/{bundle_id}/chunks/{index}"

    def bundle_chunks(self, bundle_id: str) -> str:
        """What every chunk topic of the bundle starts with."""
        return f"{self.prefix}/bundles/{bundle_id}/chunks/"

    # desired state: retained, written by the operator
    def device_desired(self, device_id: str) -> str:
        return f"{self.prefix}/devices/{device_id}/desired"

    def group_desired(self, group: str) -> str:
        return f"{self.prefix}/groups/{group}/desired"

    # device state: written by the agent
    def status(self, device_id: str) -> str:
        return f"{self.prefix}/devices/{device_id}/status"

    def reported(self, device_id: str) -> str:
        return f"{self.prefix}/devices/{device_id}/reported"

    def telemetry(self, device_id: str) -> str:
        return f"{self.prefix}/devices/{device_id}/telemetry"

    # request/response, answered on the matching response topic
    def request(self, device_id: str, path: str) -> str:
        return f"{self.prefix}/devices/{device_id}/request/{path}"

    def response(self, device_id: str, path: str) -> str:
        return f"{self.prefix}/devices/{device_id}/response/{path}"

    # wildcards for monitors
    def all_devices(self, leaf: str) -> str:
        return f"{self.prefix}/devices/+/{leaf}"

    def device_of(self, topic: str) -> str | None:
        """The device id in a `<prefix>/devices/<id>/...` topic, or None."""
        head = f"{self.prefix}/devices/"
        if not topic.startswith(head):
            return None
        rest = topic[len(head):]
        return rest.split("/", 1)[0] or None

    def group_of(self, topic: str) -> str | None:
        """The group in a `<prefix>/groups/<group>/...` topic, or None."""
        head = f"{self.prefix}/groups/"
        if not topic.startswith(head):
            return None
        return topic[len(head):].split("/", 1)[0] or None
