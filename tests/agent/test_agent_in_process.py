"""The agent run in this process, against the private Mosquitto: the injected clock
drives its timeouts without waiting for them, and its own MQTT client can be cut off
underneath it to show what the broker and the agent do when a link dies."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgefleet.agent.config import parse_config
from edgefleet.agent.daemon import Agent, Clock
from edgefleet.fleet.connection import close, connect
from edgefleet.protocol.topics import Topics
from tests.support import GHOST, Watcher, desired


class ManualClock:
    """Monotonic time that moves only when the test says so (plus real time, so that
    the agent's own loop still runs)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Running:
    agent: Agent
    thread: threading.Thread
    errors: list[BaseException]
    topics: Topics
    socket_path: Path

    def stop(self) -> None:
        self.agent.stop()
        self.thread.join(20)
        assert not self.thread.is_alive(), "the agent did not stop"


@pytest.fixture
def start_agent(tmp_path, broker, prefix, keys) -> Iterator:
    started: list[Running] = []

    def start(device_id: str, clock: Clock | None = None, state: str | None = None) -> Running:
        host, port = broker.address.rsplit(":", 1)
        sock = tmp_path / f"{state or device_id}.sock"
        cfg = parse_config({"device_id": device_id, "state_dir": str(tmp_path / (state or device_id)),
                            "trust_dir": str(keys.trust_dir),
                            "mqtt": {"host": host, "port": int(port), "prefix": prefix},
                            "serve": {"http": f"unix:{sock}"}, "telemetry": {"interval_s": 0.5}})
        agent = Agent(cfg, clock=clock)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                agent.run()
            except BaseException as exc:  # the test asserts there were none
                errors.append(exc)

        thread = threading.Thread(target=run, name=f"agent-{device_id}", daemon=True)
        thread.start()
        running = Running(agent, thread, errors, Topics(prefix), sock)
        started.append(running)
        deadline = time.monotonic() + 15
        while not agent.link.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert agent.link.connected, "the agent did not connect to the broker"
        return running

    yield start
    for running in started:
        if running.thread.is_alive():
            running.stop()


def _cut_link(agent: Agent) -> None:
    """Kill the agent's TCP connection without an MQTT DISCONNECT, as a power cut or a
    dead network does, while paho still believes it is connected."""
    agent.link.client.loop_stop()
    agent.link.client.socket().close()


def test_the_manifest_timeout_runs_on_the_injected_clock(start_agent, broker, keys):
    clock = ManualClock()
    running = start_agent("pi-clock", Clock(monotonic=clock))
    topics = running.topics
    watcher = Watcher(broker.address, [topics.reported("pi-clock")])
    client = connect(broker.address, "test")
    try:
        client.publish(topics.device_desired("pi-clock"), desired(keys.key, "pi-clock", GHOST),
                       qos=1, retain=True).wait_for_publish(10)
        watcher.wait_for(topics.reported("pi-clock"),
                         lambda r: (r.get("install") or {}).get("state") == "downloading", 15)
        started = time.monotonic()
        clock.advance(121.0)  # past manifest_timeout_s (120 s by default), at once
        failed = watcher.wait_for(topics.reported("pi-clock"),
                                  lambda r: (r.get("install") or {}).get("state") == "failed", 15)
        assert time.monotonic() - started < 10
        assert failed["install"]["stage"] == "manifest"
        assert "no manifest for ghost-1-000000000000 on the broker after 12" in failed["install"]["reason"]
    finally:
        client.publish(topics.device_desired("pi-clock"), b"", qos=1, retain=True).wait_for_publish(10)
        close(client)
        watcher.close()
    running.stop()
    assert running.errors == []


def test_the_last_will_says_offline_without_a_time_the_agent_could_not_know(start_agent, broker):
    running = start_agent("pi-will")
    topics = running.topics
    watcher = Watcher(broker.address, [topics.status("pi-will"), topics.reported("pi-will")])
    try:
        online = watcher.wait_for(topics.status("pi-will"), lambda s: s["state"] == "online", 15)
        assert isinstance(online["ts"], float)
        reported = watcher.wait_for(topics.reported("pi-will"), lambda r: r.get("state") == "idle", 15)
        _cut_link(running.agent)
        offline = watcher.wait_for(topics.status("pi-will"), lambda s: s["state"] == "offline", 30)
        # no stale connect time passed off as "when"; the instance is the online one's
        assert offline["instance"] == online["instance"] and "ts" not in offline
        assert offline["since"] <= online["ts"]  # when the session began, not when it ended
        from edgefleet.fleet.fleet_view import DeviceView

        view = DeviceView("pi-will", status=offline, reported=reported)
        assert view.summary()["last_seen_at"] == reported["ts"]  # when it was last heard from
    finally:
        watcher.close()
    running.stop()
    assert running.errors == []


def test_shutdown_finishes_when_the_link_dies_at_the_last_moment(start_agent):
    """Saying `stopped` fails (paho raises from wait_for_publish): the local API must still
    close and its unix socket go away, or the next start finds the path taken."""
    running = start_agent("pi-dying")
    assert running.socket_path.exists()
    _cut_link(running.agent)
    running.stop()
    assert running.errors == []
    assert not running.socket_path.exists()


def test_a_failed_download_keeps_its_good_chunks_for_the_next_attempt(start_agent, broker, keys, tiny):
    """Re-setting the desired state after a failed download fetches only what is missing
    (issue 10: the whole download folder used to be deleted)."""
    from edgefleet.fleet.publish import publish_bundle
    from edgefleet.protocol.delivery import split_chunks

    running = start_agent("pi-resume")
    topics, device = running.topics, "pi-resume"
    watcher = Watcher(broker.address, [topics.reported(device)])
    client = connect(broker.address, "test")
    try:
        published = publish_bundle(client, topics, tiny.bundle, keys.key, chunk_size=4096)  # no desired yet
        chunks = split_chunks(tiny.bundle.read_bytes(), 4096)
        bad = len(chunks) // 2
        client.publish(topics.bundle_chunk(published.bundle_id, bad), b"junk" * 1024, qos=1,
                       retain=True).wait_for_publish(10)
        client.publish(topics.device_desired(device), desired(keys.key, device, published),
                       qos=1, retain=True).wait_for_publish(10)
        failed = watcher.wait_for(topics.reported(device),
                                  lambda r: (r.get("install") or {}).get("state") == "failed", 30)
        assert failed["install"]["stage"] == "download" and "SHA-256" in failed["install"]["reason"]
        record = (running.agent.store.downloads / published.bundle_id / "chunks.have").read_bytes()
        kept = [i for i in range(len(chunks)) if record[i // 8] >> (i % 8) & 1]
        assert kept == [i for i in range(len(chunks)) if i != bad]  # every chunk but the damaged one
        client.publish(topics.bundle_chunk(published.bundle_id, bad), chunks[bad], qos=1,
                       retain=True).wait_for_publish(10)
        client.publish(topics.device_desired(device), desired(keys.key, device, published),
                       qos=1, retain=True).wait_for_publish(10)  # a new set_at: try again
        done = watcher.wait_for(topics.reported(device),
                                lambda r: (r.get("install") or {}).get("chunks_have") == len(chunks), 30)
        assert done["install"]["chunks_resumed"] == len(chunks) - 1
        watcher.wait_for(topics.reported(device), lambda r: (r.get("active") or {}).get("bundle_id")
                         == published.bundle_id, 30)
    finally:
        client.publish(topics.device_desired(device), b"", qos=1, retain=True).wait_for_publish(10)
        close(client)
        watcher.close()
    running.stop()
    assert running.errors == []


def test_a_second_agent_with_the_same_device_id_is_reported_not_fought_forever(start_agent, broker,
                                                                                 monkeypatch):
    """Two agents with one device id used to take the broker's session from each other every
    second for ever (issue 10, item 10): each notices the pattern, says so, and backs off."""
    from edgefleet.agent import link

    monkeypatch.setattr(link, "CLASH_DELAYS_S", (2, 2))  # the test's patience, not a board's
    first = start_agent("pi-twin")
    second = start_agent("pi-twin", state="pi-twin-2")  # another board's copy of the same config
    topics = first.topics
    watcher = Watcher(broker.address, [topics.reported("pi-twin")])
    try:
        deadline = time.monotonic() + 40
        while not (first.agent.link.clash or second.agent.link.clash) and time.monotonic() < deadline:
            time.sleep(0.1)
        clashing = first if first.agent.link.clash else second
        message = clashing.agent.link.clash
        assert message and "identity clash" in message and "'edgefleet-agent-pi-twin'" in message
        assert "device_id 'pi-twin'" in message
        reported = watcher.wait_for(topics.reported("pi-twin"),
                                    lambda r: (r.get("last_error") or {}).get("stage") == "identity", 30)
        assert "another client uses client id" in reported["last_error"]["reason"]
        assert "identity clash" in clashing.agent._status()  # systemctl status says it too
    finally:
        watcher.close()
    second.stop()
    first.stop()
    assert first.errors == [] and second.errors == []
