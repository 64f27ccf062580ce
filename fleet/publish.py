"""Put a bundle on the broker (signed transfer manifest + retained chunks) and set desired state."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from edgefleet.accelerators import target_of
from edgefleet.protocol import messages
from edgefleet.protocol.bundle import check_contents
from edgefleet.protocol.delivery import build_transfer_manifest
from edgefleet.protocol.limits import DEFAULT_CHUNK_SIZE
from edgefleet.protocol.signing import SigningKey
from edgefleet.protocol.topics import Topics, check_id

QOS = 1
PUBLISH_TIMEOUT_S = 60.0


class PublishError(Exception):
    pass


@dataclass(frozen=True)
class PublishResult:
    bundle_id: str
    name: str
    version: str
    bundle_bytes: int
    chunks: int
    chunk_size: int
    devices: list[str]
    groups: list[str]
    seconds: float
    bundle_signed_by: str  # key id of the bundle's own signature (devices must trust it too)

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _wait(info: mqtt.MQTTMessageInfo, what: str) -> None:
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        raise PublishError(f"could not queue {what}: {mqtt.error_string(info.rc)}")
    info.wait_for_publish(PUBLISH_TIMEOUT_S)
    if not info.is_published():
        raise PublishError(f"the broker did not acknowledge {what} within {PUBLISH_TIMEOUT_S:.0f} s")


def publish_bundle(
    client: mqtt.Client,
    topics: Topics,
    bundle_path: str | Path,
    key: SigningKey,
    devices: Sequence[str] = (),
    groups: Sequence[str] = (),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> PublishResult:
    """Chunks first, then the manifest, then desired state: a device never sees a
    manifest whose chunks are not on the broker yet."""
    for d in devices:
        check_id("device", d)
    for g in groups:
        check_id("group", g)
    start = time.monotonic()
    data = Path(bundle_path).read_bytes()
    # a damaged bundle would be refused by every device: refuse it here, before it ships
    bundle = check_contents(data)
    manifest = bundle.manifest
    name, version = str(manifest.get("name")), str(manifest.get("version"))
    delegate, profile = target_of(manifest)
    target = {k: v for k, v in (("delegate", delegate), ("profile", profile)) if v}
    payload, chunks = build_transfer_manifest(data, name, version, key, chunk_size, target=target)
    bundle_id = payload["body"]["bundle_id"]
    infos = []
    for i, chunk in enumerate(chunks):
        infos.append(client.publish(topics.bundle_chunk(bundle_id, i), chunk, qos=QOS, retain=True))
    for i, info in enumerate(infos):
        _wait(info, f"chunk {i}")
        if progress:
            progress(i + 1, len(chunks))
    _wait(client.publish(topics.bundle_manifest(bundle_id), messages.dumps(payload), qos=QOS,
                         retain=True), "the manifest")
    desired = messages.desired_payload(bundle_id)
    for d in devices:
        _wait(client.publish(topics.device_desired(d), desired, qos=QOS, retain=True),
              f"desired state of device {d}")
    for g in groups:
        _wait(client.publish(topics.group_desired(g), desired, qos=QOS, retain=True),
              f"desired state of group {g}")
    return PublishResult(bundle_id, name, version, len(data), len(chunks), chunk_size,
                         list(devices), list(groups), round(time.monotonic() - start, 3),
                         bundle.signed_by)
