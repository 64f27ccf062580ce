"""The agent's MQTT link: one paho-mqtt client with a last will, reconnection, and
publishing that never queues without bound while the broker is away.

paho's network thread only hands events over (`on_event`) and inference requests to
their own handler (`on_request`); everything else happens on the agent's worker.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from edgefleet.agent.config import MqttSettings
from edgefleet.mqtt_options import disable_nagle
from edgefleet.protocol import messages
from edgefleet.protocol.topics import Topics

log = logging.getLogger("edgefleet.agent")
QOS = 1
STOP_PUBLISH_TIMEOUT_S = 5.0
# Another client with our client id: the broker ends the older session whenever the other
# connects (MQTT 3.1.1 says why in no way but that), so both reconnect in turn for ever.
# Three sessions ended within 10 s of their start, within two minutes, is that pattern; a
# broker restarted three times does the same, so it takes evidence too: our status topic
# holding another agent process's `online`, or its will (which the broker publishes when it
# hands the session over), from after this one started.
CLASH_SESSION_S, CLASH_WINDOW_S, CLASH_COUNT = 10.0, 120.0, 3
CLASH_DELAYS_S = (60, 300)  # reconnection delays meanwhile: the other keeps the broker, mostly
NORMAL_DELAYS_S = (1, 30)

ClientFactory = Callable[..., mqtt.Client]  # (client id[, protocol]) -> a client


def paho_client(client_id: str, protocol: int = mqtt.MQTTv311) -> mqtt.Client:
    """MQTT 3.1.1 with a clean session (works the same on every broker), or MQTT 5 with a
    clean start (set on every connection in MqttLink.start)."""
    if protocol == mqtt.MQTTv5:
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                       protocol=mqtt.MQTTv311, clean_session=True)


class MqttLink:
    def __init__(self, settings: MqttSettings, topics: Topics, device_id: str,
                 on_event: Callable[[tuple[Any, ...]], None],
                 on_request: Callable[[bytes, str | None, bytes | None], None],
                 request_topics: Iterable[str] = (), client_factory: ClientFactory = paho_client):
        self.settings, self.topics, self.device_id = settings, topics, device_id
        self._on_event, self._on_request = on_event, on_request
        self._request_topics = set(request_topics)
        self._stopping = False
        self.client_id = settings.client_id or f"edgefleet-agent-{device_id}"
        self.v5 = settings.protocol == "5"  # a request may then name its Response Topic (replies.py)
        self.client = client_factory(self.client_id, *([mqtt.MQTTv5] if self.v5 else []))
        self.host, self.port = settings.host, settings.broker_port
        self._security = settings.security
        self._security.apply(self.client)  # checked at config load, so this does not raise now
        self._failing = False  # connection attempts failing in a row: explained once, not each time
        self._refused = False
        self._clash: str | None = None
        self._connected_at: float | None = None
        self._short_sessions: deque[float] = deque()
        self.instance, self._started = uuid.uuid4().hex[:12], time.time()
        self._status_topic = topics.status(device_id)
        self._foreign_at: float | None = None  # when another instance's status was last seen
        self._arm_will()
        self.client.reconnect_delay_set(*NORMAL_DELAYS_S)
        self.client.on_connect = self._connected
        self.client.on_connect_fail = self._connect_failed
        self.client.on_disconnect = self._disconnected
        self.client.on_message = self._message

    def _arm_will(self) -> None:
        """Before each connection. The broker publishes the will when it notices the agent is
        gone, at a time the agent cannot know: the will has no `ts` (the monitor shows when it
        last heard from the device instead), only `since`, when this session was about to begin."""
        self.client.will_set(self._status_topic, messages.status_payload(
            messages.STATUS_OFFLINE, stamped=False, instance=self.instance, since=time.time()),
            qos=QOS, retain=True)

    @property
    def connected(self) -> bool:
        return self.client.is_connected()

    @property
    def clash(self) -> str | None:
        """What the agent says while another client seems to have its identity; a session the
        broker keeps for CLASH_SESSION_S ends it."""
        began = self._connected_at
        if self._clash and began is not None and time.monotonic() - began >= CLASH_SESSION_S:
            return None
        return self._clash

    def start(self) -> None:
        clean = {"clean_start": True} if self.v5 else {}  # MQTT 5: a clean start on every connection
        self.client.connect_async(self.host, self.port, self.settings.keepalive, **clean)
        self.client.loop_start()

    # paho's network thread: hand over, never block
    def _connected(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                   properties: Any) -> None:
        if reason_code.is_failure:
            hint = " (check [mqtt] username and password_file)" if reason_code.value in (134, 135) else ""
            self._refused = True  # its disconnection follows: said here already
            log.error("broker %s:%s refused the connection: %s%s", self.host, self.port, reason_code, hint)
            return
        disable_nagle(client)
        client.subscribe(self._status_topic, QOS)  # the retained copy tells if another had our id
        self._connected_at, self._failing = time.monotonic(), False
        log.info("connected to broker %s:%s%s", self.host, self.port,
                 " over TLS" if self._security.uses_tls else "")
        self._on_event(("connected",))

    def _connect_failed(self, client: mqtt.Client, userdata: Any) -> None:
        # paho keeps the reason to itself; a handshake of our own finds a TLS one (first failure only)
        why = None if self._failing else self._security.diagnose(self.host, self.port)
        self._failing = True
        if why:
            log.error("%s; retrying", why)
        else:
            log.warning("cannot reach the broker at %s:%s; retrying (the local API keeps serving)",
                        self.host, self.port)

    def _disconnected(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                      properties: Any) -> None:
        if self._stopping:
            return
        self._arm_will()  # paho reconnects with it
        now, began, self._connected_at = time.monotonic(), self._connected_at, None
        if began is None:  # closed before it accepted us
            if self._refused:
                self._refused = False
                return
            log.warning("the broker at %s:%s closed the connection before accepting it (%s)%s; retrying",
                        self.host, self.port, reason_code,
                        "" if self._security.uses_tls else ": if it listens with TLS, set [mqtt] tls = true")
            return
        log.warning("lost the broker (%s); reconnecting, downloads resume from disk", reason_code)
        if now - began >= CLASH_SESSION_S:
            if self._clash:  # a session that lasted: whoever it was has gone
                log.info("the broker kept the session for %.0f s: back to normal reconnection", now - began)
                self._clash = None
                client.reconnect_delay_set(*NORMAL_DELAYS_S)
            return
        self._short_sessions.append(now)
        while self._short_sessions and now - self._short_sessions[0] > CLASH_WINDOW_S:
            self._short_sessions.popleft()
        seen = self._foreign_at is not None and now - self._foreign_at <= CLASH_WINDOW_S
        if len(self._short_sessions) >= CLASH_COUNT and seen and not self._clash:
            low, high = CLASH_DELAYS_S
            self._clash = (f"identity clash: the broker ended {len(self._short_sessions)} sessions within "
                          f"{CLASH_SESSION_S:.0f} s of their start: another client uses client id "
                          f"{self.client_id!r} (a second agent with device_id {self.device_id!r}?); give "
                          f"each its own; reconnecting every {low}-{high} s meanwhile")
            log.error("%s", self._clash)
            client.reconnect_delay_set(low, high)

    def _message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self._status_topic:
            if foreign_status(bytes(msg.payload), self.instance, self._started):
                self._foreign_at = time.monotonic()
            return
        if msg.topic in self._request_topics:
            props = msg.properties if self.v5 else None
            self._on_request(bytes(msg.payload), getattr(props, "ResponseTopic", None),
                             getattr(props, "CorrelationData", None))
        else:
            self._on_event(("message", msg.topic, bytes(msg.payload)))

    # the worker's side
    def publish(self, topic: str, payload: bytes, retain: bool = False) -> bool:
        """Send now or not at all: offline, paho would queue without bound (the daemon spools
        what must not be lost, agent/spool.py). Returns whether the message was handed to paho."""
        return self.send(topic, payload, retain) is not None

    def send(self, topic: str, payload: bytes, retain: bool = False,
             properties: Any = None) -> mqtt.MQTTMessageInfo | None:
        """As publish, with paho's handle to see when the broker has acknowledged it.
        PROPERTIES (MQTT 5 only) go with it."""
        if not self.client.is_connected():
            return None
        info = self.client.publish(topic, payload, qos=QOS, retain=retain,
                                   properties=properties if self.v5 else None)
        return info if info.rc == mqtt.MQTT_ERR_SUCCESS else None

    def subscribe(self, topics: Iterable[str]) -> None:
        wanted = [(t, QOS) for t in topics]
        if wanted:
            self.client.subscribe(wanted)

    def unsubscribe(self, topics: Iterable[str]) -> None:
        wanted = list(topics)
        if wanted:
            self.client.unsubscribe(wanted)

    def stop(self) -> None:
        """Say `stopped` (a clean stop, unlike the will's `offline`) and disconnect. Never
        raises: shutdown goes on whatever the broker does."""
        self._stopping = True
        try:
            if self.client.is_connected():
                info = self.client.publish(self.topics.status(self.device_id),
                                           messages.status_payload(messages.STATUS_STOPPED,
                                                                   instance=self.instance),
                                           qos=QOS, retain=True)
                info.wait_for_publish(timeout=STOP_PUBLISH_TIMEOUT_S)
                self.client.disconnect()
        except (RuntimeError, ValueError, OSError) as exc:  # paho raises these when the link dies now
            log.warning("could not say 'stopped' to the broker: %s", exc)
        finally:
            self.client.loop_stop()


def foreign_status(payload: bytes, instance: str, started: float) -> bool:
    """PAYLOAD, on our own status topic, is another agent process's `online`, or its will, from
    after ours STARTED (an older process of ours stamped its own before; unreadable: no)."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(body, dict) or body.get("instance") == instance:
        return False
    state = body.get("state")
    if state not in (messages.STATUS_ONLINE, messages.STATUS_OFFLINE):
        return False
    ts = body.get("ts" if state == messages.STATUS_ONLINE else "since")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts):
        return False
    return ts >= started
