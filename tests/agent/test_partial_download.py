"""The partial download on its own (agent/partial.py): chunks in place in one preallocated
file, fsync batched, and a record that never names a chunk that is not on disk, also
after a SIGKILL at a random moment."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from edgefleet.agent import partial as partial_mod
from edgefleet.agent.partial import RECORD, PartialDownload
from edgefleet.protocol.delivery import build_transfer_manifest, parse_transfer_manifest
from edgefleet.protocol.signing import TrustStore


def _manifest(keys, data: bytes, chunk_size: int = 1024):
    payload, chunks = build_transfer_manifest(data, "m", "1", keys.key, chunk_size=chunk_size)
    m = parse_transfer_manifest(json.dumps(payload).encode(), TrustStore.from_folder(keys.trust_dir),
                                payload["body"]["bundle_id"])
    return m, chunks, payload


def _recorded(folder, count: int) -> set[int]:
    """What the record itself claims, read without the checks PartialDownload makes on resume."""
    try:
        bits = (folder / RECORD).read_bytes()
    except OSError:
        return set()
    return {i for i in range(min(count, len(bits) * 8)) if bits[i // 8] >> (i % 8) & 1}


def test_the_file_has_the_bundle_s_size_from_the_start_and_chunks_land_in_place(tmp_path, keys):
    data = os.urandom(5000)
    m, chunks, _ = _manifest(keys, data)
    part = PartialDownload(tmp_path, m)
    assert part.path.stat().st_size == len(data)
    for i in reversed(range(len(chunks))):  # any order
        part.write(i, chunks[i])
    done = part.finish()
    assert done.data == data and part.path.read_bytes() == data
    with pytest.raises(ValueError, match="expected 1024"):
        part.write(0, b"short")


def test_chunks_are_recorded_only_once_synced(tmp_path, keys):
    m, chunks, _ = _manifest(keys, os.urandom(8 * 1024))
    part = PartialDownload(tmp_path, m)
    for i in (0, 2, 5):
        part.write(i, chunks[i])
    assert _recorded(tmp_path, m.chunk_count) == set()  # written, not synced: not claimed
    assert PartialDownload(tmp_path, m).present == set()  # a crash now would fetch them again
    part.sync()
    assert _recorded(tmp_path, m.chunk_count) == {0, 2, 5}
    assert PartialDownload(tmp_path, m).present == {0, 2, 5}


def test_fsync_is_batched_by_size_and_by_time(tmp_path, keys, monkeypatch):
    monkeypatch.setattr(partial_mod, "SYNC_BYTES", 3 * 1024)
    now = [0.0]
    m, chunks, _ = _manifest(keys, os.urandom(8 * 1024))
    part = PartialDownload(tmp_path, m, clock=lambda: now[0])
    part.write(0, chunks[0])
    part.write(1, chunks[1])
    assert _recorded(tmp_path, m.chunk_count) == set() and not part.due()
    part.write(2, chunks[2])  # 3 KiB unsynced: synced now, once for the three
    assert _recorded(tmp_path, m.chunk_count) == {0, 1, 2}
    part.write(3, chunks[3])
    now[0] = partial_mod.SYNC_S - 0.01
    assert not part.due()
    now[0] = partial_mod.SYNC_S + 0.01
    assert part.due()  # the daemon's loop syncs what waited a second


def test_a_damaged_chunk_on_disk_is_not_taken_on_resume(tmp_path, keys):
    m, chunks, _ = _manifest(keys, os.urandom(4 * 1024))
    part = PartialDownload(tmp_path, m)
    for i in range(4):
        part.write(i, chunks[i])
    part.sync()
    part.close()
    with (tmp_path / "bundle.part").open("r+b") as f:
        f.seek(1024 + 7)
        f.write(b"\x00\xff")
    assert PartialDownload(tmp_path, m).present == {0, 2, 3}


# Chunks come in as from the network, a little apart, in any order; synced every 256 KiB so
# that a kill lands between syncs as often as not.
WRITER = """
import json, random, sys, time
from pathlib import Path
from edgefleet.agent import partial
from edgefleet.agent.partial import PartialDownload
partial.SYNC_BYTES = 256 * 1024
from edgefleet.protocol.delivery import TransferManifest
doc = json.loads(Path(sys.argv[1]).read_text())["body"]
m = TransferManifest(doc["bundle_id"], doc["bundle_sha256"], doc["bundle_size"], doc["chunk_size"],
                     tuple(doc["chunks"]), doc["name"], doc["version"])
data = Path(sys.argv[2]).read_bytes()
part = PartialDownload(Path(sys.argv[3]), m)
order = [i for i in range(m.chunk_count) if i not in part.present]
random.shuffle(order)
print("ready", flush=True)
for i in order:
    part.write(i, data[i * m.chunk_size:(i + 1) * m.chunk_size])
    time.sleep(0.001)
part.sync()
"""


def test_after_a_sigkill_at_random_moments_the_record_names_only_chunks_on_disk(tmp_path, keys):
    data = os.urandom(6 * 2**20)
    m, _, payload = _manifest(keys, data, chunk_size=64 * 1024)
    (tmp_path / "manifest.json").write_text(json.dumps(payload))
    (tmp_path / "bundle.bin").write_bytes(data)
    folder = tmp_path / "download"
    rng = random.Random(7)
    resumed = []
    for _attempt in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "manifest.json"),
                                 str(tmp_path / "bundle.bin"), str(folder)], stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.01, 0.04))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        claimed = _recorded(folder, m.chunk_count)
        on_disk = (folder / "bundle.part").read_bytes()
        for i in claimed:
            chunk = on_disk[i * m.chunk_size:(i + 1) * m.chunk_size]
            assert m.chunk_ok(i, chunk), f"chunk {i} is claimed by the record but not on disk"
        resumed.append(len(claimed))
    assert resumed == sorted(resumed)  # each attempt resumed from what the one before left
    assert 0 < resumed[0] < m.chunk_count  # the first kill landed half way
    part = PartialDownload(folder, m)
    for i in set(range(m.chunk_count)) - part.present:
        part.write(i, data[i * m.chunk_size:(i + 1) * m.chunk_size])
    assert part.finish().data == data
