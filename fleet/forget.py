"""`edgefleet devices forget`: clear what the broker keeps of devices that are gone (their
retained status and reported state), so that monitors stop showing them. A device that
comes back publishes both again and reappears. Desired states are the operator's and stay
(`edgefleet desired clear`)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import paho.mqtt.client as mqtt

from edgefleet.fleet.fleet_view import FleetView
from edgefleet.fleet.monitor import attach
from edgefleet.protocol.topics import Topics

SETTLE_S = 1.5  # retained messages arrive right after subscribing; this long covers a slow broker


def known(client: mqtt.Client, topics: Topics, settle_s: float = SETTLE_S) -> FleetView:
    """The devices the broker keeps a retained status or reported state for."""
    view = FleetView(topics)
    attach(client, view)
    time.sleep(settle_s)
    return view


def choose(view: FleetView, device_ids: Iterable[str], offline_for_s: float | None) -> list[dict[str, Any]]:
    """The rows of the named devices, and of those offline or stopped for OFFLINE_FOR_S or more;
    an online device is never chosen by age."""
    rows = {r["device_id"]: r for r in view.rows()}
    unseen = {"status": "unknown", "last_seen_age_s": None}
    chosen = [rows.get(d) or {"device_id": d, **unseen} for d in device_ids]
    if offline_for_s is not None:
        named = {r["device_id"] for r in chosen}
        chosen += [r for r in rows.values() if r["device_id"] not in named
                   and r["status"] in ("offline", "stopped", "unknown")
                   and (r["last_seen_age_s"] is None or r["last_seen_age_s"] >= offline_for_s)]
    return chosen


def clear(client: mqtt.Client, topics: Topics, device_ids: Iterable[str]) -> list[str]:
    """Empty retained payloads on each device's status and reported topics; the topics cleared."""
    cleared = []
    for d in device_ids:
        for topic in (topics.status(d), topics.reported(d)):
            client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)
            cleared.append(topic)
    return cleared
