"""The agent across restarts and outages: what it has on disk is never lost."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from edgefleet.fleet.connection import close, connect
from edgefleet.protocol import messages
from edgefleet.protocol.delivery import build_transfer_manifest
from edgefleet.protocol.topics import Topics
from tests.support import (
    AgentProcess,
    Mosquitto,
    Watcher,
    desired,
    find_mosquitto,
    http_infer,
    is_active,
    npy_bytes,
    publish_cli,
    run_cli,
)

pytestmark = pytest.mark.slow


def _reported(watcher: Watcher, topic: str) -> list[dict]:
    """Every `reported` payload the watcher has seen on TOPIC, oldest first."""
    return [json.loads(body) for t, body, _ in list(watcher.messages) if t == topic and body]


def _wait_health(agent: AgentProcess, bundle_id: str, timeout: float = 30) -> None:
    """The local API says BUNDLE_ID serves (works with no broker at all)."""
    url = f"http://127.0.0.1:{agent.http_port}/v1/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if json.loads(resp.read()).get("bundle_id") == bundle_id:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{bundle_id} never served on {url}:\n{agent.log_text()}")


@pytest.mark.skipif(find_mosquitto() is None, reason="needs mosquitto to stop and restart a broker")
def test_restarted_agent_serves_from_disk_while_broker_is_down(tmp_path, keys, tiny):
    broker = Mosquitto(find_mosquitto(), tmp_path).start()
    topics = Topics("life")
    (tmp_path / "a").mkdir()
    agent = AgentProcess(tmp_path / "a", "pi-life", broker.address, "life", keys.trust_dir)
    watcher = Watcher(broker.address, [topics.reported("pi-life"), topics.status("pi-life")])
    try:
        agent.start()
        v1 = publish_cli(tiny.bundle, broker.address, "life", keys.private, "--device", "pi-life")
        watcher.wait_for(topics.reported("pi-life"), is_active(v1["bundle_id"]), 60)
        assert agent.stop() == 0
        watcher.close()
        broker.stop()

        agent.start()  # no broker at all now
        _wait_health(agent, v1["bundle_id"])
        x = tiny.x[:10]
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
        tmp_path, broker, prefix, keys, tiny):
    topics = Topics(prefix)
    data = tiny.bundle.read_bytes()
    payload, chunks = build_transfer_manifest(data, "tiny-digits", "1", keys.key, chunk_size=2048)
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
        put(topics.device_desired("pi-resume"), desired(keys.key, "pi-resume", payload["body"]))
        agent.start()
        have = len(chunks) - len(held_back)
        watcher.wait_for(topics.reported("pi-resume"),
                         lambda r: (r.get("install") or {}).get("chunks_have") == have, 60)
        assert agent.stop() == 0

        for i in held_back:
            put(topics.bundle_chunk(bundle_id, i), chunks[i])
        agent.start()
        watcher.wait_for(topics.reported("pi-resume"), is_active(bundle_id), 60)
        resumed = [r["install"]["chunks_resumed"] for r in _reported(watcher, topics.reported("pi-resume"))
                   if "chunks_resumed" in (r.get("install") or {})]
        # the first run started from nothing; the second from every chunk the first one stored
        assert resumed[0] == 0 and resumed[-1] == have, resumed
        assert sorted(set(resumed)) == [0, have]
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


def test_damaged_bundle_on_disk_is_removed_and_downloaded_again(tmp_path, broker, prefix, keys, tiny):
    topics = Topics(prefix)
    agent = AgentProcess(tmp_path, "pi-rot", broker.address, prefix, keys.trust_dir)
    watcher = Watcher(broker.address, [topics.reported("pi-rot")])
    try:
        agent.start()
        v1 = publish_cli(tiny.bundle, broker.address, prefix, keys.private, "--device", "pi-rot")
        watcher.wait_for(topics.reported("pi-rot"), is_active(v1["bundle_id"]), 60)
        assert agent.stop() == 0
        stored = agent.state_dir / "bundles" / f"{v1['bundle_id']}.efb"
        data = bytearray(stored.read_bytes())
        data[len(data) // 2] ^= 0x01  # bit rot on the board
        stored.write_bytes(bytes(data))

        first_activation = watcher.json(topics.reported("pi-rot"))["active"]["activated_at"]
        agent.start()  # the retained desired state still names v1: it must come back whole
        # the watcher still holds the first run's retained "active": wait for a newer activation
        again = watcher.wait_for(
            topics.reported("pi-rot"),
            lambda r: is_active(v1["bundle_id"])(r) and r["active"]["activated_at"] > first_activation, 60)
        assert again["install"]["state"] == "active"
        history = _reported(watcher, topics.reported("pi-rot"))
        startup = [r["last_error"] for r in history if (r.get("last_error") or {}).get("stage") == "startup"]
        assert startup and "stored bundle unusable, removed" in startup[0]["reason"]
        assert startup[0]["bundle_id"] == v1["bundle_id"]
        # downloaded again from nothing: the damaged copy was not kept as a partial download
        assert any((r.get("install") or {}).get("chunks_resumed") == 0
                   and r["install"].get("chunks_have") == r["install"].get("chunks_total") for r in history)
        status, answer = http_infer(agent.http_port, npy_bytes(tiny.x[:5]))
        assert status == 200 and answer["bundle_id"] == v1["bundle_id"]
    finally:
        agent.stop()
        watcher.close()
    assert "Traceback" not in agent.log_text(), agent.log_text()
