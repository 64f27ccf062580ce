"""Desired states set on their own, without publishing a bundle: a rollback to the bundle
each device ran before, and clearing what a device or group was told to run."""

from __future__ import annotations

from collections.abc import Sequence

import paho.mqtt.client as mqtt

from edgefleet.fleet.publish import QOS, PublishError, desired_targets, wait_published
from edgefleet.protocol.desired import PREVIOUS, desired_payload
from edgefleet.protocol.signing import Signer
from edgefleet.protocol.topics import Topics


def _targets(topics: Topics, devices: Sequence[str], groups: Sequence[str]) -> list[tuple[str, str, str]]:
    if not devices and not groups:
        raise PublishError("name at least one --device or --group")
    return desired_targets(topics, devices, groups)


def roll_back(client: mqtt.Client, topics: Topics, key: Signer, devices: Sequence[str] = (),
              groups: Sequence[str] = ()) -> list[str]:
    """Tell each device (of each group) to go back to the bundle it ran before, which it
    keeps on disk: a signed desired state with `"bundle": "previous"`. The topics set."""
    sent = []
    for kind, name, topic in _targets(topics, devices, groups):
        payload = desired_payload(key, kind, name, PREVIOUS, rollback=True, set_by="edgefleet rollback")
        wait_published(client.publish(topic, payload, qos=QOS, retain=True), f"the rollback of {kind} {name}")
        sent.append(topic)
    return sent


def clear(client: mqtt.Client, topics: Topics, devices: Sequence[str] = (),
          groups: Sequence[str] = ()) -> list[str]:
    """Remove the retained desired states: the devices keep running what they run (a device
    cleared of its own follows its groups' again). The topics cleared."""
    sent = []
    for kind, name, topic in _targets(topics, devices, groups):
        wait_published(client.publish(topic, b"", qos=QOS, retain=True), f"clearing {kind} {name}")
        sent.append(topic)
    return sent
