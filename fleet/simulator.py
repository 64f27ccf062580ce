"""Many simulated devices in one process (`edgefleet simulate`): one MQTT connection each,
with its own last will, driven by one selector loop through paho's external-loop calls
(a thread per device would not fit thousands in a process).

Each speaks the real protocol (docs/protocol.md): a retained `online` status and its last
will, a retained reported state, telemetry v2 every interval, answers to inference requests,
installs that follow the device's and its groups' desired states. The telemetry of up to
`uplink_size` devices goes over one shared connection (on each device's own topic, the same
payload): one connection per device costs a loopback send per message, which kept one
process here far below thousands of devices. What a device does not do:
fetch chunks or run a model (an install takes `Behaviour.install_s` and ends as told), and,
without a trust folder, check the desired state's signature.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import selectors
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edgefleet.fleet.connection import BrokerTarget
from edgefleet.fleet.sim_device import Behaviour, SimDevice
from edgefleet.mqtt_options import disable_nagle
from edgefleet.protocol import messages
from edgefleet.protocol.desired import PREVIOUS, BundleRef, parse_desired
from edgefleet.protocol.messages import MessageError
from edgefleet.protocol.signing import TrustStore
from edgefleet.protocol.topics import Topics

log = logging.getLogger("edgefleet.simulate")
KEEPALIVE_S = 60
# Telemetry due within this much is sent together (stamped when sent): one wake-up and one
# write per uplink for a batch rather than one per device.
BATCH_S = 0.05


class _Unchecked(TrustStore):
    """Takes every signature: a simulated device without a trust folder (documented)."""

    def __init__(self) -> None:
        super().__init__({})

    def verify(self, data: bytes, signature: Any) -> str:
        return "unchecked"


@dataclass
class Counts:
    telemetry: int = 0
    reported: int = 0
    answers: int = 0
    refused: int = 0  # desired states or requests that could not be read
    connected: int = 0
    started_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {"telemetry": self.telemetry, "reported": self.reported, "answers": self.answers,
                "refused": self.refused, "connected": self.connected,
                "seconds": round(time.time() - self.started_at, 3)}


class Simulator:
    def __init__(self, broker: BrokerTarget, topics: Topics, devices: Iterable[SimDevice],
                 trust_dir: Path | None = None, uplink_size: int = 1000):
        """UPLINK_SIZE: devices whose telemetry shares one connection (0: each its own)."""
        self.broker, self.topics = broker, topics
        self.devices = list(devices)
        self.uplink_size = uplink_size
        self._uplinks: list[mqtt.Client] = []
        self.trust = TrustStore.from_folder(trust_dir) if trust_dir else _Unchecked()
        self.counts = Counts()
        self._sel = selectors.DefaultSelector()
        self._clients: dict[str, mqtt.Client] = {}
        self._due: list[tuple[float, int, int]] = []  # (when, tie-break, device index)
        self._tie = itertools.count()
        self._running = True

    # --- connections
    def _client(self, device: SimDevice | None, client_id: str) -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                        protocol=mqtt.MQTTv311, clean_session=True, userdata=device)
        self.broker.security.apply(c)
        if device is not None:
            c.will_set(self.topics.status(device.device_id), device.will(), qos=1, retain=True)
            c.on_connect = self._on_connect
            c.on_message = self._on_message
        c.on_socket_open = lambda client, userdata, sock: self._sel.register(
            sock, selectors.EVENT_READ, client)
        c.on_socket_close = lambda client, userdata, sock: self._forget(sock)
        c.on_socket_register_write = lambda client, userdata, sock: self._sel.modify(
            sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)
        c.on_socket_unregister_write = lambda client, userdata, sock: self._sel.modify(
            sock, selectors.EVENT_READ, client)
        return c

    def _forget(self, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(sock)

    def _on_connect(self, client: mqtt.Client, device: SimDevice, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            log.warning("%s: the broker refused the connection: %s", device.device_id, reason_code)
            return
        disable_nagle(client)
        self.counts.connected += 1
        d = device.device_id
        client.subscribe([(self.topics.device_desired(d), 1), (self.topics.request(d, "infer"), 1),
                          *((self.topics.group_desired(g), 1) for g in device.groups)])
        client.publish(self.topics.reported(d), device.reported(), qos=1, retain=True)
        client.publish(self.topics.status(d), device.status(), qos=1, retain=True)
        self.counts.reported += 1

    def _on_message(self, client: mqtt.Client, device: SimDevice, msg: mqtt.MQTTMessage) -> None:
        d, topic = device.device_id, msg.topic
        try:
            if topic == self.topics.request(d, "infer"):
                self._answer(client, device, bytes(msg.payload))
            elif topic == self.topics.device_desired(d):
                self._desired(device, "device", d, bytes(msg.payload))
            elif topic.startswith(f"{self.topics.prefix}/groups/"):
                group = topic.split("/")[-2]
                self._desired(device, f"group:{group}", group, bytes(msg.payload))
        except MessageError as exc:
            self.counts.refused += 1
            log.info("%s: %s", d, exc)

    def _answer(self, client: mqtt.Client, device: SimDevice, payload: bytes) -> None:
        transaction, reply_to = None, None
        try:
            transaction, _, reply_to = messages.parse_request(payload)
            body = device.answer(transaction)
        except MessageError as exc:
            self.counts.refused += 1
            body = messages.response_payload(exc.transaction, error=str(exc))
            reply_to = exc.reply_to
        base = self.topics.response(device.device_id, "infer")
        client.publish(f"{base}/{reply_to}" if reply_to else base, body, qos=1)
        self.counts.answers += 1

    def _desired(self, device: SimDevice, source: str, target: str, payload: bytes) -> None:
        kind = "device" if source == "device" else "group"
        desired = parse_desired(payload, self.trust, kind, target)
        bundle: BundleRef | str | None = PREVIOUS if desired.previous else desired.bundle
        device.want(source, bundle, desired.signed_by or None)

    # --- the loop
    def start(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Connect every device (each sends its status and reported state once connected)."""
        host, port = self.broker.host_port
        if self.uplink_size:
            for k in range(-(-len(self.devices) // self.uplink_size)):
                uplink = self._client(None, f"edgefleet-sim-uplink-{k}-{uuid.uuid4().hex[:6]}")
                uplink.connect(host, port, keepalive=KEEPALIVE_S)
                self._uplinks.append(uplink)
        for i, device in enumerate(self.devices):
            client = self._client(device, device.device_id)
            self._clients[device.device_id] = client
            client.connect(host, port, keepalive=KEEPALIVE_S)
            if i % 200 == 0:
                self.turn(0)  # take CONNACKs while connecting the rest
                if progress:
                    progress(i, len(self.devices))
        if progress:
            progress(len(self.devices), len(self.devices))

    def turn(self, timeout: float) -> None:
        for key, mask in self._sel.select(timeout):
            client: mqtt.Client = key.data
            if mask & selectors.EVENT_READ:
                client.loop_read()
            if mask & selectors.EVENT_WRITE and client.socket() is not None:
                client.loop_write()

    def run(self, seconds: float | None = None) -> None:
        """Send telemetry on time and answer until SECONDS have passed (None: until stop())."""
        end = None if seconds is None else time.time() + seconds
        misc = time.time()
        if not self._due:  # the first telemetry spread over one interval: an even load from the start
            for i, device in enumerate(self.devices):
                first = misc + device.interval_s * i / len(self.devices)
                heapq.heappush(self._due, (first, next(self._tie), i))
        while self._running and (end is None or time.time() < end):
            now = time.time()
            used: set[int] = set()
            while self._due and self._due[0][0] <= now + BATCH_S:
                due, _, i = heapq.heappop(self._due)
                device = self.devices[i]
                if self._tick(i, device, now):
                    used.add(i // self.uplink_size)
                # on the device's own cadence; one that fell a whole interval behind starts again
                due = max(due + device.interval_s, now)
                heapq.heappush(self._due, (due, next(self._tie), i))
            for k in used:
                self._flush(self._uplinks[k])
            wait = min(self._due[0][0] - time.time(), BATCH_S) if self._due else BATCH_S
            self.turn(max(wait, 0.0))
            if time.time() - misc > 1.0:  # keep-alive, and reconnection after a broker restart
                misc = time.time()
                for client in [*self._uplinks, *self._clients.values()]:
                    if client.loop_misc() == mqtt.MQTT_ERR_NO_CONN:
                        self._reconnect(client)

    def _tick(self, i: int, device: SimDevice, now: float) -> bool:
        """Telemetry (and a changed reported state) of one device; True if it went by an uplink."""
        client = self._clients[device.device_id]
        device.advance(now)
        if not client.is_connected():
            return False  # offline: an agent's spool would keep it; the simulator drops it
        if device.reported_due:
            client.publish(self.topics.reported(device.device_id), device.reported(), qos=1, retain=True)
            self.counts.reported += 1
        uplink = self._uplinks[i // self.uplink_size] if self.uplink_size else client
        # QoS 0 on an uplink: paho holds at most 20 QoS 1 messages in flight per connection, and
        # a thousand devices' PUBACKs cost more than their telemetry (an agent sends QoS 1)
        uplink.publish(self.topics.telemetry(device.device_id), device.telemetry(now),
                       qos=0 if uplink is not client else 1)
        self.counts.telemetry += 1
        return uplink is not client

    @staticmethod
    def _flush(uplink: mqtt.Client) -> None:
        """Write what an uplink holds in as few TCP segments as fit: corked, the kernel joins
        the small sends instead of pushing each through loopback on its own (most of the
        simulator's CPU time, measured with one connection per device)."""
        sock = uplink.socket()
        if not isinstance(sock, socket.socket):
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        try:
            uplink.loop_write()
        finally:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)

    def _reconnect(self, client: mqtt.Client) -> None:
        with contextlib.suppress(OSError):  # the broker is still away: the next sweep tries again
            client.reconnect()

    def halt(self) -> None:
        """Make run() return (from a signal handler)."""
        self._running = False

    def stop(self, state: str = "stopped") -> None:
        """Each device says STATE on its status topic, as an agent does on a clean shutdown."""
        self._running = False
        for device in self.devices:
            client = self._clients.get(device.device_id)
            if client is not None and client.is_connected():
                client.publish(self.topics.status(device.device_id), device.status(state), qos=1, retain=True)
        deadline = time.time() + 5
        while time.time() < deadline and any(c.want_write() for c in self._clients.values()):
            self.turn(0.05)
        for client in [*self._uplinks, *self._clients.values()]:
            client.disconnect()
        self.turn(0.1)


def make_devices(count: int, profiles: list[Any], groups: list[str], model: BundleRef | None,
                 behaviour: Behaviour, interval_s: float, latency_ms: float, rate_per_s: float,
                 prefix: str = "sim", first: int = 0) -> list[SimDevice]:
    """COUNT devices named PREFIX-00001...; boards and groups taken in turn."""
    width = max(5, len(str(first + count)))
    return [SimDevice(f"{prefix}-{n:0{width}d}", profiles[n % len(profiles)],
                      [groups[n % len(groups)]] if groups else [], model, behaviour,
                      latency_ms=latency_ms, rate_per_s=rate_per_s, interval_s=interval_s, seed=n)
            for n in range(first + 1, first + count + 1)]
