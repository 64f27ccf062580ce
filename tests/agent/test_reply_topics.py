"""Inference answers to the asker (issue 10, item 8), on a real agent and Mosquitto: a request
names where its answer goes (the `reply_to` field on MQTT 3.1.1, the Response Topic and
Correlation Data properties on MQTT 5), never outside the device's response sub-tree."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgefleet.agent.inference import InferenceService
from edgefleet.agent.replies import Replies
from edgefleet.protocol import messages
from edgefleet.protocol.topics import Topics
from tests.support import AgentProcess, Watcher, is_active, publish_cli

pytestmark = pytest.mark.slow
DEVICE = "pi-reply"


class Asker:
    """An MQTT client (3.1.1 or 5) that collects what arrives on its topics."""

    def __init__(self, address: str, topics: list[str], v5: bool = False):
        host, port = address.rsplit(":", 1)
        self.got: list[tuple[str, dict, bytes | None]] = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._message
        self.client.connect(host, int(port))
        self.client.loop_start()
        self.client.subscribe([(t, 1) for t in topics])
        assert subscribed.wait(10)

    def _message(self, client, userdata, msg) -> None:
        with self.cond:
            corr = getattr(msg.properties, "CorrelationData", None)
            self.got.append((msg.topic, json.loads(msg.payload), corr))
            self.cond.notify_all()

    def wait(self, count: int, timeout: float = 20.0) -> list:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.got) >= count, timeout), self.got
            return list(self.got)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _agent(tmp_path, broker, prefix, keys, tiny, protocol: str = "3.1.1"):
    topics = Topics(prefix)
    watcher = Watcher(broker.address, [topics.reported(DEVICE)])
    agent = AgentProcess(tmp_path, DEVICE, broker.address, prefix, keys.trust_dir,
                         mqtt_toml=f'protocol = "{protocol}"\n').start()
    published = publish_cli(tiny.bundle, broker.address, prefix, keys.private, "--device", DEVICE)
    watcher.wait_for(topics.reported(DEVICE), is_active(published["bundle_id"]), 60)
    watcher.close()
    return topics, agent


def _request(tx: str, tiny, **extra) -> bytes:
    return messages.dumps({"transaction": tx, "inputs_npy": messages.encode_array(tiny.x[:1]), **extra})


def test_each_asker_gets_its_own_answers_and_bad_reply_topics_are_refused(tmp_path, broker, prefix, keys,
                                                                           tiny):
    topics, agent = _agent(tmp_path, broker, prefix, keys, tiny)
    base = topics.response(DEVICE, "infer")
    a, b = Asker(broker.address, [f"{base}/a"]), Asker(broker.address, [f"{base}/team/b"])
    everyone = Asker(broker.address, [base])  # the shared topic: only answers nobody routed
    try:
        request = topics.request(DEVICE, "infer")
        for i in range(5):
            a.client.publish(request, _request(f"a{i}", tiny, reply_to="a"), qos=1)
            b.client.publish(request, _request(f"b{i}", tiny, reply_to="team/b"), qos=1)
        assert sorted(body["transaction"] for _, body, _ in a.wait(5)) == [f"a{i}" for i in range(5)]
        assert sorted(body["transaction"] for _, body, _ in b.wait(5)) == [f"b{i}" for i in range(5)]
        assert all(body["status"] == "ok" for _, body, _ in a.got + b.got)
        for bad in ("../x", "a/+", "a/#", "a/b/c/d/e", "", "/a"):
            a.client.publish(request, _request(f"bad {bad}", tiny, reply_to=bad), qos=1)
        answers = everyone.wait(6)
        assert all(body["status"] == "error" and "reply_to" in body["error"] for _, body, _ in answers)
        assert len(a.got) == 5 and len(b.got) == 5  # nothing strayed
    finally:
        for c in (a, b, everyone):
            c.close()
        code = agent.stop()
    assert code == 0, agent.log_text()
    assert "Traceback" not in agent.log_text(), agent.log_text()


def test_mqtt5_response_topic_and_correlation_data(tmp_path, broker, prefix, keys, tiny):
    topics, agent = _agent(tmp_path, broker, prefix, keys, tiny, protocol="5")
    base = topics.response(DEVICE, "infer")
    mine = f"{topics.response(DEVICE, 'mine')}/x1"  # anywhere in the device's response sub-tree
    asker, everyone = Asker(broker.address, [mine], v5=True), Asker(broker.address, [base], v5=True)
    try:
        for topic, corr in ((mine, b"\x00\x01corr"), (f"{prefix}/devices/other/response/x", b"2")):
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic, props.CorrelationData = topic, corr
            asker.client.publish(topics.request(DEVICE, "infer"), _request("t", tiny), qos=1,
                                 properties=props)
        [(topic, body, corr)] = asker.wait(1)
        assert topic == mine and body["status"] == "ok" and corr == b"\x00\x01corr"
        [(topic, body, corr)] = everyone.wait(1)  # outside the sub-tree: refused, on the base topic
        assert topic == base and body["status"] == "error" and corr == b"2"
        assert "is outside this device's" in body["error"]
    finally:
        asker.close()
        everyone.close()
        code = agent.stop()
    assert code == 0, agent.log_text()


def test_busy_and_refused_answers_go_where_the_request_asked(tmp_path):
    answers = []
    service = InferenceService(lambda body, route, reply_to: answers.append((json.loads(body), reply_to)),
                               max_pending=1)
    try:
        assert service._slots.acquire(blocking=False)  # the one slot taken: the next request is busy
        service.submit(messages.dumps({"transaction": 7, "reply_to": "me/1", "inputs": [[0.0]]}))
        [(body, reply_to)] = answers
        assert (body["code"], body["transaction"], reply_to) == ("busy", 7, "me/1")
        service.submit(messages.dumps({"transaction": 8, "reply_to": "../up", "inputs": [[0.0]]}))
        assert answers[1][1] is None  # a reply_to that would leave the sub-tree: the base topic
        service._slots.release()
        service.submit(messages.dumps({"transaction": 9, "reply_to": "me/1", "inputs": "not numbers"}))
        deadline = time.monotonic() + 10
        while len(answers) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        body, reply_to = answers[2]  # a request that cannot be used is answered where it asked
        assert (body["status"], body["transaction"], reply_to) == ("error", 9, "me/1")
    finally:
        service.shutdown()
    sent = []
    replies = Replies("p/devices/d/response/infer", "p/devices/d/response/", lambda *a: sent.append(a))
    replies.answer(b"{}", replies.route(None, None), "me/1")
    assert sent[0][0] == "p/devices/d/response/infer/me/1" and sent[0][2] is None
