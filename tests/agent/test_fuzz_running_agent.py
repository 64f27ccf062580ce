"""Fuzzing a running agent over MQTT (issue 10, the fault suite): 2,000 generated payloads on
each topic it subscribes to (its desired state, its group's, the manifest of a bundle it is
waiting for, inference requests, its own status), sent through a real Mosquitto to an agent
in its own process. Afterwards it is still up, answers inference as before, reports a valid
state, and still installs a real bundle. The payloads are those of
tests/protocol/test_fuzz_payloads.py, which fuzzes the same parsers in process."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.fleet.connection import close, connect
from edgefleet.protocol.topics import Topics
from tests.protocol.test_fuzz_payloads import (
    EXAMPLES,
    _signed,
    desired_bodies,
    json_values,
    manifest_bodies,
    requests,
    status_bodies,
)
from tests.support import GHOST, AgentProcess, Watcher, desired, http_infer, is_active, npy_bytes, publish_cli

pytestmark = pytest.mark.slow
DEVICE, GROUP = "pi-1", "g1"  # the device the generated desired bodies name


def test_a_running_agent_survives_2000_payloads_on_each_of_its_topics(tmp_path, broker, prefix, keys, tiny):
    topics = Topics(prefix)
    agent = AgentProcess(tmp_path, DEVICE, broker.address, prefix, keys.trust_dir, groups=(GROUP,))
    config = agent.config.read_text()  # it waits for the ghost's manifest while the fuzz runs
    agent.config.write_text(config.replace("manifest_timeout_s = 5.0", "manifest_timeout_s = 600.0"))
    agent.start()
    watcher = Watcher(broker.address, [topics.reported(DEVICE), topics.response(DEVICE, "infer")])
    client = connect(broker.address, "fuzz")
    sent: dict[str, int] = {}

    def send(topic: str, payload: bytes) -> None:
        client.publish(topic, payload, qos=1)
        sent[topic] = sent.get(topic, 0) + 1
        if sent[topic] % 200 == 0:  # keep paho's queue short
            client.publish(topic, payload, qos=1).wait_for_publish(30)
            sent[topic] += 1

    raw = st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode())
    try:
        published = publish_cli(tiny.bundle, broker.address, prefix, keys.private, "--device", DEVICE)
        watcher.wait_for(topics.reported(DEVICE), is_active(published["bundle_id"]), 60)
        body = npy_bytes(tiny.x[:16])
        status, before = http_infer(agent.http_port, body)
        assert status == 200, before

        client.publish(topics.device_desired(DEVICE), desired(keys.key, DEVICE, GHOST), qos=1,
                       retain=True).wait_for_publish(10)
        watcher.wait_for(topics.reported(DEVICE), lambda r: (r.get("install") or {}).get("bundle_id")
                         == GHOST.bundle_id, 30)
        ghost_manifest = topics.bundle_manifest(GHOST.bundle_id)

        @EXAMPLES
        @given(raw | manifest_bodies.map(lambda b: _signed(keys, b)))
        def manifests(payload: bytes) -> None:
            send(ghost_manifest, payload)

        @EXAMPLES
        @given(raw | desired_bodies.map(lambda b: _signed(keys, b)))
        def desired_states(payload: bytes) -> None:
            send(topics.device_desired(DEVICE), payload)
            send(topics.group_desired(GROUP), payload)

        @EXAMPLES
        @given(st.binary(max_size=300) | requests.map(lambda r: json.dumps(r).encode()))
        def inference_requests(payload: bytes) -> None:
            send(topics.request(DEVICE, "infer"), payload)

        @EXAMPLES
        @given(raw | status_bodies.map(lambda b: json.dumps(b).encode()))
        def statuses(payload: bytes) -> None:
            send(topics.status(DEVICE), payload)

        for fuzz in (manifests, desired_states, inference_requests, statuses):
            fuzz()
        assert min(sent.values()) >= 2000, sent
        client.publish(topics.request(DEVICE, "infer"), b'{"transaction": "last"}', qos=1)
        watcher.wait_for(topics.response(DEVICE, "infer"), lambda r: r.get("transaction") == "last", 120)

        assert agent.proc.poll() is None, agent.log_text()[-3000:]
        status, after = http_infer(agent.http_port, body)
        assert status == 200 and after["outputs"] == before["outputs"], after
        latest = watcher.json(topics.reported(DEVICE))
        assert latest["active"]["bundle_id"] == published["bundle_id"]
        assert latest["state"] in ("active", "downloading", "failed")

        # and a real bundle still goes in (the status topic was fuzzed last: clear it first)
        client.publish(topics.status(DEVICE), b"", qos=1, retain=True).wait_for_publish(10)
        v2 = tmp_path / "v2.efb"
        from tests.support import signed_variant

        signed_variant(tiny.bundle, v2, keys, "2")
        started = time.time()
        published2 = publish_cli(v2, broker.address, prefix, keys.private, "--device", DEVICE)
        watcher.wait_for(topics.reported(DEVICE), lambda r: r["ts"] > started
                         and is_active(published2["bundle_id"])(r), 60)
        print(f"\npayloads sent per topic: {sent}")
    finally:
        close(client)
        watcher.close()
        code = agent.stop()
    assert code == 0, agent.log_text()[-3000:]
    assert "Traceback" not in agent.log_text(), agent.log_text()[-3000:]
