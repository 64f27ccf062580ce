"""The offline spool (issue 10, item 7): telemetry and reported states taken while the broker
is away wait on disk, bounded in bytes and age with the oldest dropped and counted, and go
out in order, marked as replayed, once it is back (a real Mosquitto stopped and started)."""

from __future__ import annotations

import itertools
import json
import time

import orjson
import pytest

from edgefleet.agent.spool import Spool
from edgefleet.protocol.topics import Topics
from tests.support import AgentProcess, Mosquitto, Watcher, find_mosquitto


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Acked:
    """What paho's MQTTMessageInfo tells the spool: whether the broker has acknowledged."""

    def __init__(self) -> None:
        self.acked = False

    def is_published(self) -> bool:
        return self.acked


def _message(n: int) -> bytes:
    return orjson.dumps({"n": n, "pad": "x" * 60})


def test_the_spool_drops_the_oldest_beyond_its_bytes_and_age_and_counts_them(tmp_path):
    clock = Clock()
    spool = Spool(tmp_path / "spool", max_bytes=600, max_age_s=60, wall=clock)
    for n in range(10):
        spool.add("t", _message(n))
        clock.now += 1
    kept = [orjson.loads(p.read_bytes())["payload"]["n"] for p in sorted((tmp_path / "spool").glob("*.json"))]
    assert kept == list(range(10 - len(kept), 10)) and 0 < len(kept) < 10  # the newest, in order
    assert spool.dropped == 10 - len(kept)
    clock.now += 61  # all older than max_age_s now
    spool.add("t", _message(10))
    assert spool.queued == 1 and spool.dropped == 10
    reopened = Spool(tmp_path / "spool", max_bytes=600, max_age_s=60, wall=clock)  # after a restart
    reopened.add("t", _message(11))
    assert reopened.queued == 2


def test_replay_is_in_order_marked_and_keeps_what_the_broker_did_not_acknowledge(tmp_path):
    clock, sent = Clock(), []
    spool = Spool(tmp_path / "spool", max_bytes=10**6, max_age_s=60, wall=clock)
    for n in range(3):
        spool.add("t/a", _message(n))

    def publish(topic: str, payload: bytes) -> Acked | None:
        if len(sent) == 2:
            return None  # offline again after two
        sent.append((topic, orjson.loads(payload), Acked()))
        return sent[-1][2]

    assert spool.replay(publish) == 2
    assert [(t, p["n"], p["replayed"]) for t, p, _ in sent] == [("t/a", 0, True), ("t/a", 1, True)]
    assert sent[0][1]["spooled_at"] == clock.now
    sent[0][2].acked = True
    spool.tick()
    assert spool.queued == 2 and spool.replayed == 1  # 1 was handed over but not acknowledged
    spool.disconnected()
    sent.clear()
    assert spool.replay(lambda topic, payload: sent.append(orjson.loads(payload)["n"]) or Acked()) == 2
    assert sent == [1, 2]


@pytest.mark.slow
@pytest.mark.skipif(find_mosquitto() is None, reason="needs mosquitto to stop and restart a broker")
@pytest.mark.parametrize("outage_s", [4.5, 60.0])
def test_telemetry_taken_while_the_broker_is_away_arrives_after_it_is_back(tmp_path, keys, outage_s):
    broker = Mosquitto(find_mosquitto(), tmp_path).start()
    topics, device = Topics("spool"), "pi-spool"
    (tmp_path / "a").mkdir()
    agent = AgentProcess(tmp_path / "a", device, broker.address, "spool", keys.trust_dir).start()
    watcher = Watcher(broker.address, [topics.telemetry(device)])
    try:
        last = watcher.wait_for(topics.telemetry(device), lambda t: "spool" in t, 30)
        watcher.close()
        last = watcher.json(topics.telemetry(device)) or last  # the last one before the broker went
        broker.stop()
        away = time.time()
        time.sleep(outage_s)  # telemetry every second: one message spooled a second
        spooled = sorted((agent.state_dir / "spool").glob("*.json"))
        assert len(spooled) >= int(outage_s) - 1, agent.log_text()
        broker.start()  # same port; the agent retries after 1, 2, 4 s...: the watcher is there first
        watcher = Watcher(broker.address, [topics.telemetry(device)])
        fresh = watcher.wait_for(topics.telemetry(device), lambda t: not t.get("replayed"), 60)
        received = [json.loads(p) for topic, p, _ in watcher.messages if topic == topics.telemetry(device)]
        replayed = [t for t in received if t.get("replayed")]
        assert len(replayed) >= int(outage_s) - 1, received
        # all of them: a record every second from the last before the outage to the first after it
        times = [last["ts"], *(t["ts"] for t in replayed), fresh["ts"]]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert max(gaps) < 1.9, gaps
        assert all(away - 1.5 <= t["ts"] <= fresh["ts"] for t in replayed)
        assert [t["ts"] for t in replayed] == sorted(t["ts"] for t in replayed)  # in order
        assert received.index(replayed[-1]) < received.index(fresh)  # before the telemetry of now
        deadline = time.monotonic() + 10
        while list((agent.state_dir / "spool").glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not list((agent.state_dir / "spool").glob("*.json"))  # acknowledged, so removed
        later = watcher.wait_for(topics.telemetry(device),
                                 lambda t: t["spool"]["replayed_total"] >= len(replayed), 30)
        assert later["spool"]["dropped_total"] == 0
    finally:
        code = agent.stop()
        watcher.close()
        broker.stop()
    assert code == 0, agent.log_text()
    assert "Traceback" not in agent.log_text(), agent.log_text()
