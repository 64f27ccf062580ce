"""The agent across restarts and outages: what it has on disk is never lost."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from edgefleet.fleet.connection import close, connect
from edgefleet.protocol import messages
from edgefleet.protocol.delivery import build_transfer_manifest
from edgefleet.protocol.topics import Topics
from tests.support import (
    AgentProcess,
    Mosquitto,
    Watcher,
    find_mosquitto,
    http_infer,
    is_active,
    npy_bytes,
    publish_cli,
    run_cli,
)

pytestmark = pytest.mark.slow


def _wait_log(agent: AgentProcess, pattern: str, timeout: float = 30) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, agent.log_text())
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} not in the agent log:\n{agent.log_text()}")


@pytest.mark.skipif(find_mosquitto() is None, reason="needs mosquitto to stop and restart a broker")
def test_restarted_agent_serves_from_disk_while_broker_is_down(tmp_path, keys, digits):
    broker = Mosquitto(find_mosquitto(), tmp_path).start()
    topics = Topics("life")
    (tmp_path / "a").mkdir()
    agent = AgentProcess(tmp_path / "a", "pi-life", broker.address, "life", keys.trust_dir)
    watcher = Watcher(broker.address, [topics.reported("pi-life"), topics.status("pi-life")])
    try:
        agent.start()
        v1 = publish_cli(digits.bundle, broker.address, "life", keys.private, "--device", "pi-life")
        watcher.wait_for(topics.reported("pi-life"), is_active(v1["bundle_id"]), 60)
        assert agent.stop() == 0
        watcher.close()
        broker.stop()

        agent.start()  # no broker at all now
        _wait_log(agent, "serving .* from disk")
        _wait_log(agent, "cannot reach the broker")
        x = np.load(digits.eval)["x"][:10]
        status, answer = http_infer(agent.http_port, npy_bytes(x))
        assert status == 200 and answer["bundle_id"] == v1["bundle_id"]

        broker.start()  # same port: the agent reconnects by itself and reports what it runs
        watcher = Watcher(broker.address, [topics.status("pi-life"), topics.reported("pi-life")])
        watcher.wait_for(topics.status("pi-life"), lambda s: s["state"] == "online", 60)
        reported = watcher.wait_for(topics.reported("pi-life"), lambda r: r.get("active") is not None, 30)
        assert reported["active"]["bundle_id"] == v1["bundle_id"]
    finally:
        agent.stop()
        watcher.close()
        broker.stop()
    assert "Traceback" not in agent.log_text(), agent.log_text()


def test_download_resumes_across_agent_restart_fetching_only_missing_chunks(
        tmp_path, broker, prefix, keys, digits):
    topics = Topics(prefix)
    data = digits.bundle.read_bytes()
    payload, chunks = build_transfer_manifest(data, "digits", "1", keys.key, chunk_size=2048)
    bundle_id = payload["body"]["bundle_id"]
    held_back = {3, len(chunks) - 1}  # not on the broker yet
    client = connect(broker.address, "test")
    agent = AgentProcess(tmp_path, "pi-resume", broker.address, prefix, keys.trust_dir)
    watcher = Watcher(broker.address, [topics.reported("pi-resume")])
    try:
        def put(topic: str, body: bytes) -> None:
            client.publish(topic, body, qos=1, retain=True).wait_for_publish(10)

        for i, chunk in enumerate(chunks):
            if i not in held_back:
                put(topics.bundle_chunk(bundle_id, i), chunk)
        put(topics.bundle_manifest(bundle_id), messages.dumps(payload))
        put(topics.device_desired("pi-resume"), messages.desired_payload(bundle_id))
        agent.start()
        have = len(chunks) - len(held_back)
        watcher.wait_for(topics.reported("pi-resume"),
                         lambda r: (r.get("install") or {}).get("chunks_have") == have, 60)
        assert agent.stop() == 0

        for i in held_back:
            put(topics.bundle_chunk(bundle_id, i), chunks[i])
        agent.start()
        watcher.wait_for(topics.reported("pi-resume"), is_active(bundle_id), 60)
        line = rf"{re.escape(bundle_id)}: {len(chunks)} chunk\(s\), (\d+) already on disk"
        _wait_log(agent, line)
        first_run, second_run = re.findall(line, agent.log_text())
        assert (int(first_run), int(second_run)) == (0, have)
    finally:
        close(client)
        agent.stop()
        watcher.close()
    assert "Traceback" not in agent.log_text(), agent.log_text()


def test_local_api_port_in_use_is_a_clear_error(tmp_path, broker, keys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        agent = AgentProcess(tmp_path, "pi-port", broker.address, "p", keys.trust_dir, http_port=port)
        proc = run_cli("agent", "run", "--config", str(agent.config), timeout=60)
    assert proc.returncode == 1
    assert "cannot serve the local API" in proc.stderr and "[serve] http" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_damaged_bundle_on_disk_is_removed_and_downloaded_again(tmp_path, broker, prefix, keys, digits):
    topics = Topics(prefix)
    agent = AgentProcess(tmp_path, "pi-rot", broker.address, prefix, keys.trust_dir)
    watcher = Watcher(broker.address, [topics.reported("pi-rot")])
    try:
        agent.start()
        v1 = publish_cli(digits.bundle, broker.address, prefix, keys.private, "--device", "pi-rot")
        watcher.wait_for(topics.reported("pi-rot"), is_active(v1["bundle_id"]), 60)
        assert agent.stop() == 0
        stored = agent.state_dir / "bundles" / f"{v1['bundle_id']}.efb"
        data = bytearray(stored.read_bytes())
        data[len(data) // 2] ^= 0x01  # bit rot on the board
        stored.write_bytes(bytes(data))

        agent.start()  # the retained desired state still names v1: it must come back whole
        _wait_log(agent, "stored bundle unusable, removed")
        found = _wait_log(agent, rf"{re.escape(v1['bundle_id'])}: 1 chunk\(s\), 0 already on disk")
        assert found
        # the watcher still holds the first run's retained "active": wait for the second activation
        activated = rf"bundle {re.escape(v1['bundle_id'])} active \(self-test"
        deadline = time.monotonic() + 60
        while len(re.findall(activated, agent.log_text())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(re.findall(activated, agent.log_text())) == 2, agent.log_text()
        status, answer = http_infer(agent.http_port, npy_bytes(np.load(digits.eval)["x"][:5]))
        assert status == 200 and answer["bundle_id"] == v1["bundle_id"]
    finally:
        agent.stop()
        watcher.close()
    assert "Traceback" not in agent.log_text(), agent.log_text()
