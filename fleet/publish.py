"""Put a bundle on the broker (signed transfer manifest + retained chunks) and set desired state."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from edgefleet.accelerators import target_of
from edgefleet.compat import requires_of
from edgefleet.protocol import messages
from edgefleet.protocol.bundle import check_contents, sha256_hex
from edgefleet.protocol.delivery import bundle_id_for, sign_transfer_manifest, split_chunks
from edgefleet.protocol.desired import BundleRef, desired_payload
from edgefleet.protocol.limits import DEFAULT_CHUNK_SIZE
from edgefleet.protocol.signing import Signer
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
    bundle_sha256: str
    bundle_bytes: int
    chunks: int
    chunk_size: int
    devices: list[str]
    groups: list[str]
    seconds: float
    bundle_signed_by: str  # key id of the bundle's own signature (devices must trust it too)
    signed_by: str  # key id that signed the transfer manifest and the desired states
    rollback: bool

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def desired_targets(topics: Topics, devices: Sequence[str],
                    groups: Sequence[str]) -> list[tuple[str, str, str]]:
    """(kind, name, desired-state topic) of each device and group, their ids checked."""
    return [*(("device", check_id("device", d), topics.device_desired(d)) for d in devices),
            *(("group", check_id("group", g), topics.group_desired(g)) for g in groups)]


def wait_published(info: mqtt.MQTTMessageInfo, what: str) -> None:
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        raise PublishError(f"could not queue {what}: {mqtt.error_string(info.rc)}")
    info.wait_for_publish(PUBLISH_TIMEOUT_S)
    if not info.is_published():
        raise PublishError(f"the broker did not acknowledge {what} within {PUBLISH_TIMEOUT_S:.0f} s")


def publish_bundle(
    client: mqtt.Client,
    topics: Topics,
    bundle_path: str | Path,
    key: Signer,
    devices: Sequence[str] = (),
    groups: Sequence[str] = (),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Callable[[int, int], None] | None = None,
    rollback: bool = False,
) -> PublishResult:
    """Check and hash the bundle, then send its manifest, the desired states and its chunks,
    in that order, and wait for the broker to take them all.

    Devices start fetching while the chunks are still going out: one they ask for before
    it is on the broker reaches them when it arrives (they are subscribed to its topic),
    so the bundle crosses the broker once, not publisher-then-device. Nothing goes out
    before the bundle has passed its checks: a damaged bundle does not ship. Should the
    broker stop taking chunks half way, the devices named keep serving their model and
    wait for them; publishing the same bundle again completes their download.

    The desired states are signed, one for each device and group; ROLLBACK lets devices
    that run a newer version of the model go back to this one (docs/protocol.md).
    """
    targets = desired_targets(topics, devices, groups)
    start = time.monotonic()
    data = Path(bundle_path).read_bytes()
    chunks = split_chunks(data, chunk_size)
    with ThreadPoolExecutor(2) as pool:  # hashlib and zlib let go of the GIL: the three run at once
        checked = pool.submit(check_contents, data)  # every device would refuse a damaged bundle
        hashed = pool.submit(lambda: [hashlib.sha256(c).hexdigest() for c in chunks])
        digest = sha256_hex(data)
        bundle, digests = checked.result(), hashed.result()
    name, version = bundle.name, bundle.version
    bundle_id = bundle_id_for(name, version, digest)
    delegate, profile = target_of(bundle.manifest)
    target = {k: v for k, v in (("delegate", delegate), ("profile", profile)) if v}
    payload = sign_transfer_manifest(digest, len(data), chunk_size, digests, name, version, key, target,
                                     requires_of(bundle.manifest))
    ref, set_at = BundleRef(name, version, digest), time.time()
    # one connection: the broker takes these in the order they are sent
    first = [(client.publish(topics.bundle_manifest(bundle_id), messages.dumps(payload), qos=QOS,
                             retain=True), "the manifest")]
    first += [(client.publish(topic, desired_payload(key, kind, who, ref, rollback, set_at=set_at), qos=QOS,
                              retain=True), f"desired state of {kind} {who}") for kind, who, topic in targets]
    infos = [client.publish(topics.bundle_chunk(bundle_id, i), chunk, qos=QOS, retain=True)
             for i, chunk in enumerate(chunks)]
    for info, what in first:
        wait_published(info, what)
    for i, info in enumerate(infos):
        try:
            wait_published(info, f"chunk {i}")
        except PublishError as exc:
            named = ", ".join([*devices, *(f"group {g}" for g in groups)])
            wait = f"; {named} now want it and wait for its chunks" if named else ""
            raise PublishError(f"{exc}{wait}: publish the bundle again to complete it") from None
        if progress:
            progress(i + 1, len(chunks))
    return PublishResult(bundle_id, name, version, digest, len(data), len(chunks), chunk_size,
                         list(devices), list(groups), round(time.monotonic() - start, 3),
                         bundle.signed_by, key.key_id, rollback)
