"""A model swap while clients keep asking (issue 10, item 6 and its acceptance item): at
least 200 requests a second over HTTP and MQTT together, and not one fails; requests in
flight finish on the old model, the next ones get the new one."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from edgefleet.fleet.connection import close, connect
from edgefleet.protocol import messages
from edgefleet.protocol.topics import Topics
from tests.agent.test_bad_input_keeps_old_model import rebuild
from tests.support import AgentProcess, Watcher, is_active, npy_bytes, publish_cli

pytestmark = pytest.mark.slow
DEVICE = "pi-swap"


class HttpClient(threading.Thread):
    """Kept-alive POSTs of one sample, as fast as the agent answers, until stopped."""

    def __init__(self, port: int, body: bytes):
        super().__init__(daemon=True)
        self.request = (b"POST /v1/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-npy\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.port, self.stop, self.answers = port, threading.Event(), []

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            buf = b""
            while not self.stop.is_set():
                s.sendall(self.request)
                while b"\r\n\r\n" not in buf:
                    buf += s.recv(65536)
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(buf) < length:
                    buf += s.recv(65536)
                self.answers.append((int(head.split()[1]), json.loads(buf[:length])))
                buf = buf[length:]


def test_a_swap_under_load_fails_no_request(tmp_path, broker, prefix, keys, tiny):
    topics = Topics(prefix)
    watcher = Watcher(broker.address, [topics.reported(DEVICE)])
    agent = AgentProcess(tmp_path, DEVICE, broker.address, prefix, keys.trust_dir).start()
    mqtt_answers: list[dict] = []
    client = connect(broker.address, "swap-test")
    client.on_message = lambda c, u, msg: mqtt_answers.append(json.loads(msg.payload))
    client.subscribe(topics.response(DEVICE, "infer"), qos=0)
    http = [HttpClient(agent.http_port, npy_bytes(tiny.x[i:i + 1])) for i in range(2)]
    try:
        v1 = publish_cli(tiny.bundle, broker.address, prefix, keys.private, "--device", DEVICE)["bundle_id"]
        watcher.wait_for(topics.reported(DEVICE), is_active(v1), 60)
        v2_bundle = rebuild(tiny.bundle, tmp_path / "v2.efb", keys, "2")
        for t in http:
            t.start()
        started, sent = time.monotonic(), 0
        request = messages.dumps({"transaction": 0, "inputs": tiny.x[0].tolist()})

        def mqtt_for(seconds: float) -> None:
            nonlocal sent
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                client.publish(topics.request(DEVICE, "infer"), request, qos=0)
                sent += 1
                time.sleep(0.01)  # 100 a second beside the HTTP clients

        mqtt_for(1.0)
        v2 = publish_cli(v2_bundle, broker.address, prefix, keys.private, "--device", DEVICE)["bundle_id"]
        swap_seen = threading.Event()
        threading.Thread(target=lambda: (watcher.wait_for(topics.reported(DEVICE), is_active(v2), 60),
                                         swap_seen.set()), daemon=True).start()
        while not swap_seen.is_set() and time.monotonic() - started < 60:
            mqtt_for(0.2)
        mqtt_for(1.0)  # a second on the new model
        elapsed = time.monotonic() - started
        for t in http:
            t.stop.set()
            t.join(10)
        deadline = time.monotonic() + 10
        while len(mqtt_answers) < sent and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        close(client)
        for t in http:
            t.stop.set()
        code = agent.stop()
        watcher.close()
    answers = [a for t in http for a in t.answers]
    assert swap_seen.is_set(), "the new model never became active"
    failed_http = [a for a in answers if a[0] != 200]
    failed_mqtt = [a for a in mqtt_answers if a.get("status") != "ok"]
    assert failed_http == [] and failed_mqtt == [], (failed_http[:3], failed_mqtt[:3])
    assert len(mqtt_answers) == sent  # every MQTT request answered
    rate = (len(answers) + len(mqtt_answers)) / elapsed
    print(f"{rate:.0f} requests a second, {len(answers)} over HTTP, {len(mqtt_answers)} over MQTT")
    assert rate >= 200, f"only {rate:.0f} requests a second"
    served_by = [a[1]["bundle_id"] for t in http for a in t.answers]
    assert served_by[0] == v1 and served_by[-1] == v2  # before the swap the old one, after it the new
    assert {a["data"]["bundle_id"] for a in mqtt_answers} == {v1, v2}
    assert code == 0, agent.log_text()
