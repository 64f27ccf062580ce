"""A connected paho-mqtt client for command-line tools, with errors that say what to do."""

from __future__ import annotations

import dataclasses
import ssl
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from edgefleet.mqtt_options import disable_nagle
from edgefleet.mqtt_security import MqttSecurity, SecurityError, tls_failure

SCHEMES = {"mqtt": False, "mqtts": True}  # scheme -> TLS
PLAIN = MqttSecurity()


class BrokerError(Exception):
    """The broker cannot be reached or refused us."""


@dataclass(frozen=True)
class BrokerTarget:
    """Where the broker is and how to log in: [mqtts://]HOST[:PORT] and the security options."""

    address: str
    security: MqttSecurity = PLAIN

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_broker(self.address, self.security.default_port())


def target(address: str, security: MqttSecurity = PLAIN) -> BrokerTarget:
    """An address with an mqtts:// scheme turns TLS on."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        return BrokerTarget(address, security)
    if scheme not in SCHEMES:
        raise BrokerError(f"broker address {address!r}: use mqtt://, mqtts:// or HOST:PORT")
    return BrokerTarget(rest, dataclasses.replace(security, tls=security.tls or SCHEMES[scheme]))


def parse_broker(address: str, default_port: int = 1883) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep:
        return address or "localhost", default_port
    if not port.isdigit():
        raise BrokerError(f"broker address {address!r} is not HOST:PORT")
    return host or "localhost", int(port)


def connect(broker: str | BrokerTarget, role: str, timeout: float = 10.0) -> mqtt.Client:
    """Connect, start the network loop, and return once the broker has accepted us."""
    broker = target(broker) if isinstance(broker, str) else broker
    host, port = broker.host_port
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"edgefleet-{role}-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv311)
    try:
        broker.security.apply(client)
    except SecurityError as exc:
        raise BrokerError(str(exc)) from None
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                   properties: Any) -> None:
        outcome["rc"] = reason_code
        disable_nagle(client)
        done.set()

    def on_disconnect(client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                      properties: Any) -> None:
        outcome.setdefault("closed", reason_code)
        done.set()

    client.on_connect, client.on_disconnect = on_connect, on_disconnect
    try:
        client.connect(host, port, keepalive=30)
    except ssl.SSLCertVerificationError as exc:
        raise BrokerError(tls_failure(host, port, exc)) from None
    except ssl.SSLError as exc:
        raise BrokerError(f"TLS handshake with the broker at {host}:{port} failed ({exc.reason or exc}); "
                          "does it listen with TLS on that port?") from None
    except OSError as exc:
        raise BrokerError(
            f"cannot reach the MQTT broker at {host}:{port} ({exc}). Start one (e.g. "
            "'apt-get install mosquitto') or point --broker / EDGEFLEET_BROKER at yours"
        ) from None
    client.loop_start()
    if not done.wait(timeout):
        client.loop_stop()
        raise BrokerError(f"no answer from the MQTT broker at {host}:{port} within {timeout:.0f} s")
    rc = outcome.get("rc")
    if rc is None or rc.is_failure:
        client.loop_stop()
        raise BrokerError(_refusal(broker, rc))
    client.on_disconnect = None
    return client


def _refusal(broker: BrokerTarget, rc: Any) -> str:
    host, port = broker.host_port
    if rc is None:  # closed without a CONNACK: a TLS listener spoken to in clear text, mostly
        hint = ("is it a TLS listener? use mqtts://HOST:PORT or --tls (with --ca-file)"
                if not broker.security.uses_tls else "does it take this client certificate?")
        return f"the broker at {host}:{port} closed the connection before accepting it; {hint}"
    hint = " (check --username and --password-file)" if rc.value in (134, 135) else ""
    return f"the broker at {host}:{port} refused the connection: {rc}{hint}"


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
