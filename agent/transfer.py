"""The transfer of one bundle as a pure state machine: events and the time go in,
actions come out. No network, no disk, no clock of its own, so a unit test drives
every path (timeouts, bad chunks, restarts) in microseconds.

The daemon feeds it what happened (the manifest arrived and was accepted, a chunk
arrived, time passed, the broker came back) and carries out what it returns:
subscribe or unsubscribe topics, write a chunk, report progress, assemble the
bundle, or fail the install with a reason.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from edgefleet.protocol.delivery import TransferManifest


@dataclass(frozen=True)
class Subscribe:
    """Subscribe to the manifest topic (manifest=True) and/or these chunk topics."""

    chunks: tuple[int, ...] = ()
    manifest: bool = False


@dataclass(frozen=True)
class Unsubscribe:
    chunks: tuple[int, ...] = ()
    manifest: bool = False


@dataclass(frozen=True)
class WriteChunk:
    """Store a chunk that passed its hash check."""

    index: int
    data: bytes


@dataclass(frozen=True)
class Progress:
    have: int
    total: int


@dataclass(frozen=True)
class Complete:
    """Every chunk is on disk: assemble, check the whole bundle, install it."""


@dataclass(frozen=True)
class Failed:
    stage: str  # manifest | download
    reason: str


Action = Subscribe | Unsubscribe | WriteChunk | Progress | Complete | Failed


@dataclass(frozen=True)
class Limits:
    # chunk topics subscribed at once; asked for again in batches of half of it, in one
    # SUBSCRIBE (and the received ones dropped in one UNSUBSCRIBE): a packet per chunk each
    # way took 1.8x as long for a 10 MB bundle here (benchmarks/delivery_bench.py)
    window: int = 16
    chunk_timeout_s: float = 15.0  # ask again for a chunk that has not arrived by then
    max_bad_chunks: int = 3  # a chunk failing its hash this often fails the transfer
    manifest_timeout_s: float = 120.0


@dataclass
class Transfer:
    """One bundle being fetched, chunk by chunk. Start with `start()`."""

    bundle_id: str
    limits: Limits = field(default_factory=Limits)
    manifest: TransferManifest | None = None
    pending: deque[int] = field(default_factory=deque)  # not asked for yet
    requested: dict[int, float] = field(default_factory=dict)  # chunk -> when (re)asked for
    bad: dict[int, int] = field(default_factory=dict)  # chunk -> hash failures
    received: list[int] = field(default_factory=list)  # chunks in, not unsubscribed yet
    have: int = 0
    started_at: float = 0.0
    resumed_from: int = 0  # chunks already on disk when the manifest was accepted
    refetched: int = 0  # chunks asked for again: after a reconnection, a time-out or a bad hash
    done: bool = False  # completed or failed: no further actions

    def start(self, now: float) -> list[Action]:
        self.started_at = now
        return [Subscribe(manifest=True)]

    def manifest_accepted(self, manifest: TransferManifest, on_disk: set[int], now: float) -> list[Action]:
        """The signed manifest checked out; ON_DISK: chunks kept from an earlier attempt."""
        if self.done or self.manifest is not None:
            return []
        self.manifest = manifest
        present = {i for i in on_disk if 0 <= i < manifest.chunk_count}
        self.have = self.resumed_from = len(present)
        self.pending = deque(i for i in range(manifest.chunk_count) if i not in present)
        return [Unsubscribe(manifest=True), Progress(self.have, manifest.chunk_count),
                *self._request_more(now)]

    def manifest_refused(self, reason: str, stage: str = "manifest") -> list[Action]:
        """The manifest cannot be taken (STAGE download: it can, but there is no room for its bundle)."""
        if self.done or self.manifest is not None:
            return []  # a late copy of a manifest we already took changes nothing
        return self._fail(stage, reason)

    def chunk_received(self, index: int, data: bytes, now: float) -> list[Action]:
        m = self.manifest
        if self.done or m is None or index not in self.requested:
            return []  # a late duplicate, or a chunk we did not ask for
        if not m.chunk_ok(index, data):
            self.bad[index] = self.bad.get(index, 0) + 1
            if self.bad[index] >= self.limits.max_bad_chunks:
                return self._fail("download", f"chunk {index} failed its SHA-256 check {self.bad[index]} "
                                  "times; the copy on the broker is damaged: publish the bundle again")
            # unsubscribe now and ask again within a second: a new subscription makes the
            # broker resend its retained copy
            self.requested[index] = now - self.limits.chunk_timeout_s + 1.0
            self.refetched += 1
            return [Unsubscribe(chunks=(index,))]
        del self.requested[index]
        self.have += 1
        self.received.append(index)
        return [WriteChunk(index, data), Progress(self.have, m.chunk_count), *self._request_more(now)]

    def write_failed(self, index: int | None, reason: str) -> list[Action]:
        """Storing chunk INDEX (None: the chunks written so far) failed (a full disk, for example)."""
        what = f"chunk {index}" if index is not None else "the chunks downloaded"
        return [] if self.done else self._fail("download", f"cannot store {what}: {reason}")

    def tick(self, now: float) -> list[Action]:
        """Time passed: a manifest that never came fails; chunks that did not come are asked for again."""
        if self.done:
            return []
        if self.manifest is None:
            waited = now - self.started_at
            if waited > self.limits.manifest_timeout_s:
                return self._fail("manifest", f"no manifest for {self.bundle_id} on the broker after "
                                  f"{waited:.0f} s: publish the bundle (edgefleet publish) and set the "
                                  "desired state again")
            return []
        late = tuple(i for i, since in self.requested.items() if now - since > self.limits.chunk_timeout_s)
        for index in late:
            self.requested[index] = now
        self.refetched += len(late)
        return [Unsubscribe(chunks=late), Subscribe(chunks=late)] if late else []

    def reconnected(self, now: float) -> list[Action]:
        """A clean session: the broker forgot our subscriptions; ask again for what is outstanding."""
        if self.done:
            return []
        if self.manifest is None:
            return [Subscribe(manifest=True)]
        for index in self.requested:
            self.requested[index] = now
        self.refetched += len(self.requested)  # at most one window: the rest is on disk or not asked for
        return [Subscribe(chunks=tuple(self.requested))] if self.requested else []

    def abort(self) -> list[Action]:
        """Nobody wants this bundle now: drop every subscription."""
        if self.done:
            return []
        self.done = True
        chunks = (*self.received, *self.requested)
        self.received = []
        return [Unsubscribe(chunks=chunks, manifest=self.manifest is None)]

    def _request_more(self, now: float) -> list[Action]:
        """Fill the window once half of it has come in (or nothing else is left to come)."""
        assert self.manifest is not None
        if not self.pending and not self.requested:
            self.done = True
            done, self.received = tuple(self.received), []
            return [Unsubscribe(chunks=done), Complete()] if done else [Complete()]
        window = self.limits.window
        if len(self.requested) > window - max(1, window // 2) or not self.pending:
            return []
        asked = []
        while self.pending and len(self.requested) < window:
            index = self.pending.popleft()
            self.requested[index] = now
            asked.append(index)
        actions: list[Action] = []
        if self.received:
            actions.append(Unsubscribe(chunks=tuple(self.received)))
            self.received = []
        return [*actions, Subscribe(chunks=tuple(asked))]

    def _fail(self, stage: str, reason: str) -> list[Action]:
        actions = self.abort()
        return [*actions, Failed(stage, reason)]
