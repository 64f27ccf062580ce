"""One bundle being downloaded: its chunks written in place into one preallocated file, and
a record of which of them are safely there.

    <state_dir>/downloads/<bundle_id>/bundle.part   the bundle's size from the start; chunk n
                                                    at n * chunk_size
    <state_dir>/downloads/<bundle_id>/chunks.have   a bitmap of the chunks in bundle.part

Crash-safe with fsync batched: chunks are written without one (an fsync per 64 KiB chunk cost
more than the network here), and every SYNC_BYTES or SYNC_S the file is fdatasync'ed first
and the record replaced after (atomically), so the record never claims a chunk that is not
on disk, after a power cut as after a SIGKILL. What was written since the last sync is
fetched again after a crash; chunks the record names are checked against their hash again
when the download resumes.

Each chunk is hashed as it arrives (transfer.py) against the signed manifest's list, so
the bundle is not hashed again as a whole: a file made of chunks that each match the signed
list is the bundle the manifest names (and the installer checks every file inside it
against the bundle's own signed manifest). Hashing it again cost the worker a third of its
time per chunk.

Preallocating (posix_fallocate) makes a full disk fail the download before any chunk is
fetched, with the reason, instead of after most of them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgefleet.agent.durable import atomic_write
from edgefleet.protocol.delivery import TransferManifest

PART, RECORD = "bundle.part", "chunks.have"
SYNC_BYTES = 4 * 1024 * 1024  # at most this much is fetched again after a crash,
SYNC_S = 1.0  # or what arrived in this long


@dataclass(frozen=True)
class Downloaded:
    """A finished download: its bytes, their SHA-256 (by its chunks), and the synced file."""

    data: bytes
    sha256: str
    path: Path


class PartialDownload:
    def __init__(self, folder: Path, m: TransferManifest, clock: Callable[[], float] = time.monotonic):
        """Open (or create and preallocate) the partial file; OSError when it cannot be had
        (a full disk: ENOSPC)."""
        self.m, self.folder, self._clock = m, folder, clock
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / PART
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(self._fd, 0, max(1, m.bundle_size))
            os.ftruncate(self._fd, m.bundle_size)
        except OSError:
            self.close()
            raise
        self.present: set[int] = set()  # in the file and recorded
        self._unsynced: list[int] = []
        self._unsynced_bytes, self._unsynced_since = 0, 0.0
        self._resume()

    def _resume(self) -> None:
        """The chunks the record names that still match their hash."""
        try:
            bits = (self.folder / RECORD).read_bytes()
        except OSError:
            bits = b""
        for index in range(min(self.m.chunk_count, len(bits) * 8)):
            if bits[index // 8] >> (index % 8) & 1 and self.m.chunk_ok(index, self._read(index)):
                self.present.add(index)

    def _read(self, index: int) -> bytes:
        return os.pread(self._fd, self.m.expected_chunk_size(index), index * self.m.chunk_size)

    def write(self, index: int, data: bytes) -> None:
        """Put a chunk that passed its hash in place; synced and recorded in a later batch."""
        if len(data) != self.m.expected_chunk_size(index):
            expected = self.m.expected_chunk_size(index)
            raise ValueError(f"chunk {index} is {len(data)} bytes, expected {expected}")
        os.pwrite(self._fd, data, index * self.m.chunk_size)
        if not self._unsynced:
            self._unsynced_since = self._clock()
        self._unsynced.append(index)
        self._unsynced_bytes += len(data)
        if self._unsynced_bytes >= SYNC_BYTES:
            self.sync()

    def due(self) -> bool:
        return bool(self._unsynced) and self._clock() - self._unsynced_since >= SYNC_S

    def sync(self) -> None:
        """Data first, then the record that names it."""
        if not self._unsynced:
            return
        os.fdatasync(self._fd)
        self.present.update(self._unsynced)
        self._unsynced.clear()
        self._unsynced_bytes = 0
        bits = bytearray((self.m.chunk_count + 7) // 8)
        for index in self.present:
            bits[index // 8] |= 1 << (index % 8)
        atomic_write(self.folder / RECORD, bytes(bits))

    def finish(self) -> Downloaded:
        """Every chunk is in place: sync, and return the bundle (ValueError when one is not)."""
        self.sync()
        if len(self.present) != self.m.chunk_count:
            missing = sorted(set(range(self.m.chunk_count)) - self.present)
            raise ValueError(f"chunks {missing[:5]} of {self.m.chunk_count} are not in place")
        return Downloaded(self.path.read_bytes(), self.m.bundle_sha256, self.path)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
