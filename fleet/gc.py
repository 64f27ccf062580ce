"""`edgefleet gc`: remove the retained bundles (manifest and chunks) that nothing names.

A bundle is kept while a desired state names it, or a device reports it as active,
previous, being installed or desired: a device may need its active bundle again from the
broker when its own copy is damaged. Every other bundle's chunks are cleared, then its
manifest, so that a gc stopped half way leaves the manifest and a second run finishes.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from edgefleet.fleet.connection import subscribe_and_wait
from edgefleet.fleet.publish import QOS, wait_published
from edgefleet.protocol.topics import Topics

WAIT_S = 10.0
# where a device's reported state names a bundle it may need from the broker again
_REPORTED_NAMES = (("active", "bundle_id"), ("previous",), ("install", "bundle_id"), ("desired", "bundle_id"))


@dataclass
class Retained:
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)  # bundle id -> manifest body
    named: dict[str, list[str]] = field(default_factory=dict)  # bundle id -> who names it


@dataclass(frozen=True)
class Unused:
    bundle_id: str
    name: str | None
    version: str | None
    bundle_bytes: int | None
    chunks: int


def _json(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


def _at(obj: Any, *keys: str) -> Any:
    """OBJ[k1][k2]...; None where a level is missing or not an object."""
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def _name(found: Retained, bundle_id: Any, who: str) -> None:
    if isinstance(bundle_id, str) and bundle_id:
        found.named.setdefault(bundle_id, []).append(who)


def _read(found: Retained, topics: Topics, topic: str, payload: bytes) -> None:
    doc, parts = _json(payload), topic[len(topics.prefix) + 1:].split("/")
    if not isinstance(doc, dict):
        return
    if parts[0] == "bundles" and parts[-1] == "manifest":
        body = doc.get("body")
        found.manifests[parts[1]] = body if isinstance(body, dict) else {}
    elif parts[-1] == "desired":  # names a bundle whether or not its signature holds: keep it
        _name(found, _at(doc, "body", "bundle", "id"), f"{parts[0][:-1]} {parts[1]} desired")
    elif parts[-1] == "reported":
        for path in _REPORTED_NAMES:
            _name(found, _at(doc, *path), f"device {parts[1]} {path[0]}")


def collect(client: mqtt.Client, topics: Topics, wait_s: float = WAIT_S) -> Retained:
    """The retained manifests, desired and reported states. A marker published after the
    subscription comes back once the broker has sent what it retained (it sends those
    first); WAIT_S bounds the wait on a broker that does not."""
    found, lock, done = Retained(), threading.Lock(), threading.Event()
    marker = f"{topics.prefix}/gc/{uuid.uuid4().hex}"

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == marker:
            done.set()
        elif msg.retain:
            with lock:
                _read(found, topics, msg.topic, bytes(msg.payload))

    client.on_message = on_message
    filters = [f"{topics.prefix}/bundles/+/manifest", topics.all_devices("desired"),
               f"{topics.prefix}/groups/+/desired", topics.all_devices("reported"), marker]
    subscribe_and_wait(client, [(f, QOS) for f in filters])
    wait_published(client.publish(marker, b"", qos=QOS), "the end-of-retained marker")
    done.wait(wait_s)
    client.unsubscribe(filters)
    return found


def unused(found: Retained) -> list[Unused]:
    out = []
    for bundle_id, body in sorted(found.manifests.items()):
        if bundle_id in found.named:
            continue
        chunks, size, name, version = (body.get(k) for k in ("chunks", "bundle_size", "name", "version"))
        out.append(Unused(bundle_id, name if isinstance(name, str) else None,
                          version if isinstance(version, str) else None,
                          size if isinstance(size, int) else None,
                          len(chunks) if isinstance(chunks, list) else 0))
    return out


def remove(client: mqtt.Client, topics: Topics, bundle: Unused) -> None:
    """Clear the bundle's retained chunks, then its manifest."""
    infos = [client.publish(topics.bundle_chunk(bundle.bundle_id, i), b"", qos=QOS, retain=True)
             for i in range(bundle.chunks)]
    for i, info in enumerate(infos):
        wait_published(info, f"clearing chunk {i} of {bundle.bundle_id}")
    wait_published(client.publish(topics.bundle_manifest(bundle.bundle_id), b"", qos=QOS, retain=True),
                   f"clearing the manifest of {bundle.bundle_id}")
