"""A connected paho-mqtt client for command-line tools, with errors that say what to do."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt

from edgefleet.mqtt_options import disable_nagle


class BrokerError(Exception):
    """The broker cannot be reached or refused us."""


def parse_broker(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, 1883
    if not port.isdigit():
        raise BrokerError(f"broker address {address!r} is not HOST:PORT")
    return host or "localhost", int(port)


def connect(address: str, role: str, timeout: float = 10.0) -> mqtt.Client:
    """Connect, start the network loop, and return once the broker has accepted us."""
    host, port = parse_broker(address)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"edgefleet-{role}-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv311)
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                   properties: Any) -> None:
        outcome["rc"] = reason_code
        disable_nagle(client)
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        raise BrokerError(
            f"cannot reach the MQTT broker at {host}:{port} ({exc}). Start one (e.g. "
            "'apt-get install mosquitto') or point --broker / EDGEFLEET_BROKER at yours"
        ) from None
    client.loop_start()
    if not done.wait(timeout):
        client.loop_stop()
        raise BrokerError(f"no answer from the MQTT broker at {host}:{port} within {timeout:.0f} s")
    if outcome["rc"].is_failure:
        client.loop_stop()
        raise BrokerError(f"the broker at {host}:{port} refused the connection: {outcome['rc']}")
    return client


def close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def subscribe_and_wait(client: mqtt.Client, topics: list[tuple[str, int]], timeout: float = 10.0) -> None:
    """Subscribe and return once the broker has acknowledged (so no answer is missed)."""
    acked: set[int] = set()
    cond = threading.Condition()

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any,
                     properties: Any) -> None:
        with cond:  # the SUBACK may arrive before subscribe() has even returned its mid
            acked.add(mid)
            cond.notify_all()

    previous = client.on_subscribe
    client.on_subscribe = on_subscribe
    try:
        rc, mid = client.subscribe(topics)
        with cond:
            ok = rc == mqtt.MQTT_ERR_SUCCESS and cond.wait_for(lambda: mid in acked, timeout)
        if not ok:
            raise BrokerError(f"the broker did not acknowledge the subscription to {topics}")
    finally:
        client.on_subscribe = previous
