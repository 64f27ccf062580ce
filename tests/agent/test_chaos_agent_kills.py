"""Chaos (issue 10, the fault suite): the agent SIGKILLed 20 times at random moments while it
downloads an 8 MB bundle from a real Mosquitto. After every kill the record of chunks on disk
names only chunks that are there and whole; the next start resumes from them, and the last
one finishes, verifies and activates the bundle."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from edgefleet.fleet.connection import close, connect
from edgefleet.fleet.publish import publish_bundle
from edgefleet.protocol.delivery import parse_transfer_manifest
from edgefleet.protocol.signing import TrustStore
from edgefleet.protocol.topics import Topics
from tests.support import AgentProcess, Watcher, is_active, signed_variant

pytestmark = pytest.mark.slow
DEVICE = "pi-chaos"
KILLS = 20


def test_twenty_sigkills_during_a_download_never_leave_a_record_of_a_chunk_not_on_disk(
        tmp_path, broker, prefix, keys, tiny):
    topics = Topics(prefix)
    big = signed_variant(tiny.bundle, tmp_path / "big.efb", keys, "2", **{"padding.bin": os.urandom(8 << 20)})
    (tmp_path / "agent").mkdir()
    # 1 KiB chunks, one chunk topic at a time: the download takes seconds, so kills land inside it
    agent = AgentProcess(tmp_path / "agent", DEVICE, broker.address, prefix, keys.trust_dir,
                         extra_toml="window = 1\n")
    client = connect(broker.address, "test")
    watcher = Watcher(broker.address, [topics.reported(DEVICE)])
    try:
        published = publish_bundle(client, topics, big, keys.key, devices=[DEVICE], chunk_size=1024)
        manifest = parse_transfer_manifest(watcher_manifest(broker, topics, published.bundle_id),
                                           TrustStore.from_folder(keys.trust_dir), published.bundle_id)
        folder = agent.state_dir / "downloads" / published.bundle_id
        rng, claimed_after, finished = random.Random(10), [], False
        for _ in range(KILLS):
            fetches = agent.log_text().count("fetching bundle")
            agent.start()
            deadline = time.monotonic() + 30
            while agent.log_text().count("fetching bundle") == fetches and time.monotonic() < deadline:
                time.sleep(0.01)
            # the record is synced every second (or 4 MiB): kills before and after that
            time.sleep(rng.uniform(0.2, 1.15))
            agent.stop(signal.SIGKILL)
            if not (folder / "bundle.part").exists() and any(agent.state_dir.glob("bundles/*.efb")):
                finished = True  # every chunk was in: the file was renamed into the store before the kill
                break
            claimed = _claimed(folder, manifest.chunk_count)
            data = (folder / "bundle.part").read_bytes() if claimed else b""
            for i in claimed:
                assert manifest.chunk_ok(i, data[i * manifest.chunk_size:(i + 1) * manifest.chunk_size]), \
                    f"chunk {i} is in chunks.have but not whole on disk"
            claimed_after.append(len(claimed))
            if len(claimed) == manifest.chunk_count:
                break
        assert any(0 < n < manifest.chunk_count for n in claimed_after), claimed_after  # kills landed mid-way
        assert claimed_after == sorted(claimed_after)  # nothing fetched is lost to a kill
        started = time.time()
        agent.start()
        done = watcher.wait_for(topics.reported(DEVICE), lambda r: r["ts"] > started
                                and is_active(published.bundle_id)(r), 120)
        assert len(claimed_after) >= KILLS // 2, claimed_after
        if not finished:  # the last start took every chunk the record named, fetched the rest
            assert done["install"]["chunks_resumed"] == claimed_after[-1]
    finally:
        close(client)
        watcher.close()
        code = agent.stop()
    assert code == 0, agent.log_text()


def watcher_manifest(broker, topics: Topics, bundle_id: str) -> bytes:
    late = Watcher(broker.address, [topics.bundle_manifest(bundle_id)])
    try:
        deadline = time.monotonic() + 10
        while topics.bundle_manifest(bundle_id) not in late.latest and time.monotonic() < deadline:
            time.sleep(0.05)
        return late.latest[topics.bundle_manifest(bundle_id)]
    finally:
        late.close()


def _claimed(folder, count: int) -> list[int]:
    try:
        record = (folder / "chunks.have").read_bytes()
    except FileNotFoundError:
        return []
    return [i for i in range(count) if i // 8 < len(record) and record[i // 8] >> (i % 8) & 1]
