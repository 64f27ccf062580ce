"""Chaos (issue 10, the fault suite): Mosquitto, with persistence on, SIGKILLed and restarted
three times while an agent downloads a 5 MB bundle from it. The bundle arrives intact, and
each restart makes the agent ask again for no more than the window of chunks it had
outstanding (`install.chunks_refetched` counts them); the rest resumes where it was.

Each kill lands mid-download by construction: the agent is paused (SIGSTOP) once its file
holds a quarter, a half, three quarters of the chunks, the broker is killed and restarted,
and the agent continues (SIGCONT) to find its connection gone."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time

import pytest

from edgefleet.fleet.connection import close, connect
from edgefleet.fleet.publish import publish_bundle
from edgefleet.protocol.delivery import TransferManifest, parse_transfer_manifest
from edgefleet.protocol.signing import TrustStore
from edgefleet.protocol.topics import Topics
from tests.agent.test_chaos_agent_kills import watcher_manifest
from tests.support import AgentProcess, Mosquitto, Watcher, find_mosquitto, is_active, signed_variant

pytestmark = pytest.mark.slow
DEVICE = "pi-broker-chaos"
WINDOW = 8
KILLS = 3


def _chunk_written(part, manifest: TransferManifest, index: int) -> bool:
    """Chunk INDEX whole in the download's file: chunks are asked for in order, so this is cheap
    progress to poll (while the agent runs: the page cache shows writes not yet synced)."""
    if not part.exists():
        return False
    with part.open("rb") as f:
        f.seek(index * manifest.chunk_size)
        return manifest.chunk_ok(index, f.read(manifest.chunk_size))


def _chunks_written(part, manifest: TransferManifest) -> int:
    """Chunks whole in the download's file now (written, synced or not: the page cache shows them)."""
    data = part.read_bytes() if part.exists() else b""
    size = manifest.chunk_size
    return sum(manifest.chunk_ok(i, data[i * size:(i + 1) * size]) for i in range(manifest.chunk_count))


def test_broker_sigkilled_three_times_during_a_5mb_download(tmp_path, keys, tiny):
    binary = find_mosquitto()
    if binary is None:
        pytest.skip("needs Mosquitto: it is the broker being killed")
    broker = Mosquitto(binary, tmp_path / "broker", persistence=True).start()
    prefix = "chaos"
    topics = Topics(prefix)
    big = signed_variant(tiny.bundle, tmp_path / "big.efb", keys, "2", **{"padding.bin": os.urandom(5 << 20)})
    agent = AgentProcess(tmp_path / "agent", DEVICE, broker.address, prefix, keys.trust_dir,
                         extra_toml=f"window = {WINDOW}\n")
    # chunks come again because the broker came back, not because a pause made them late
    config = agent.config.read_text()
    agent.config.write_text(config.replace("chunk_timeout_s = 3.0", "chunk_timeout_s = 60.0"))
    client = connect(broker.address, "test")
    try:
        published = publish_bundle(client, topics, big, keys.key, devices=[DEVICE], chunk_size=1024)
        close(client)
        manifest = parse_transfer_manifest(watcher_manifest(broker, topics, published.bundle_id),
                                           TrustStore.from_folder(keys.trust_dir), published.bundle_id)
        deadline = time.monotonic() + 30  # saved (autosave every second) before the first kill
        while not (broker.db.exists() and broker.db.stat().st_size > big.stat().st_size):
            assert time.monotonic() < deadline, "Mosquitto did not save the retained bundle"
            time.sleep(0.2)
        time.sleep(1.5)  # and the desired state after it
        watcher = Watcher(broker.address, [topics.reported(DEVICE)])
        agent.start()
        part = agent.state_dir / "downloads" / published.bundle_id / "bundle.part"
        at_kill = []
        for k in range(1, KILLS + 1):
            target = manifest.chunk_count * k // (KILLS + 1)
            deadline = time.monotonic() + 120
            while not _chunk_written(part, manifest, target):
                assert time.monotonic() < deadline, f"download stuck before kill {k}:\n{agent.log_text()}"
                time.sleep(0.02)
            agent.proc.send_signal(signal.SIGSTOP)
            try:
                written = _chunks_written(part, manifest)
                assert written < manifest.chunk_count, "the download finished before the kill"
                at_kill.append(written)
                watcher.close()
                broker.kill()
                broker.start()
            finally:
                agent.proc.send_signal(signal.SIGCONT)
            watcher = Watcher(broker.address, [topics.reported(DEVICE)])
        done = watcher.wait_for(topics.reported(DEVICE), is_active(published.bundle_id), 180)
        stored = agent.state_dir / "bundles" / f"{published.bundle_id}.efb"
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == hashlib.sha256(big.read_bytes()).hexdigest()
        refetched = done["install"]["chunks_refetched"]
        print(f"\nchunks written at each kill: {at_kill} of {manifest.chunk_count}; "
              f"asked for again: {refetched} ({refetched / KILLS:.1f} per restart, window {WINDOW})")
        assert 0 < refetched <= KILLS * WINDOW, json.dumps(done["install"])
        assert agent.log_text().count("lost the broker") >= KILLS
        assert "identity clash" not in agent.log_text()  # restarts are not a second agent
        watcher.close()
    finally:
        code = agent.stop()
        broker.stop()
    assert code == 0, agent.log_text()


def test_only_another_processes_fresh_status_is_evidence_of_a_second_agent():
    from edgefleet.agent.link import foreign_status
    from edgefleet.protocol import messages

    started = 1000.0
    ours = b'{"state": "online", "ts": 1001, "instance": "aaaa"}'
    assert not foreign_status(ours, "aaaa", started)
    assert foreign_status(b'{"state": "online", "ts": 1001, "instance": "bbbb"}', "aaaa", started)
    assert foreign_status(b'{"state": "online", "ts": 1001}', "aaaa", started)  # an agent of before
    # the will the broker publishes when another client takes the session over
    assert foreign_status(b'{"state": "offline", "instance": "bbbb", "since": 1001}', "aaaa", started)
    for stale_or_not_online in (b'{"state": "online", "ts": 999, "instance": "bbbb"}',  # our last run
                                b'{"state": "offline", "instance": "bbbb", "since": 999}',
                                b'{"state": "offline", "instance": "bbbb"}',
                                b'{"state": "online", "ts": true, "instance": "bbbb"}',
                                b'{"state": "online", "ts": NaN}', b"\xff", b"[]", b""):
        assert not foreign_status(stale_or_not_online, "aaaa", started)
    assert b'"instance":"x1"' in messages.status_payload("online", instance="x1")
