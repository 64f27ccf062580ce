"""The transfer state machine on its own: no broker, no disk, no clock but the one the
test holds. Every path the daemon relies on: the window, timeouts, bad chunks, restarts,
reconnections, a full disk, and the late or foreign messages a broker may deliver."""

from __future__ import annotations

import hashlib

import pytest

from edgefleet.agent import transfer as tx
from edgefleet.protocol.delivery import TransferManifest

LIMITS = tx.Limits(window=3, chunk_timeout_s=10.0, max_bad_chunks=2, manifest_timeout_s=60.0)


def manifest(chunks: list[bytes]) -> TransferManifest:
    data = b"".join(chunks)
    return TransferManifest(
        bundle_id="b-1-000000000000", bundle_sha256=hashlib.sha256(data).hexdigest(),
        bundle_size=len(data), chunk_size=len(chunks[0]),
        chunk_sha256=tuple(hashlib.sha256(c).hexdigest() for c in chunks), name="b", version="1")


CHUNKS = [bytes([i]) * 1024 for i in range(7)]
M = manifest(CHUNKS)


def of(actions: list[tx.Action], kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def subscribed(actions: list[tx.Action]) -> list[int]:
    return [i for a in of(actions, tx.Subscribe) for i in a.chunks]


def started(now: float = 0.0, on_disk: set[int] | None = None) -> tuple[tx.Transfer, list[tx.Action]]:
    t = tx.Transfer(M.bundle_id, LIMITS)
    assert t.start(now) == [tx.Subscribe(manifest=True)]
    return t, t.manifest_accepted(M, on_disk or set(), now)


def test_manifest_first_then_a_window_of_chunks_until_complete():
    t, actions = started()
    assert tx.Unsubscribe(manifest=True) in actions
    assert subscribed(actions) == [0, 1, 2]  # the window, no more
    assert of(actions, tx.Progress) == [tx.Progress(0, 7)]
    written, unsubscribed = [], []
    for step, i in enumerate(range(7)):
        actions = t.chunk_received(i, CHUNKS[i], now=1.0 + step)
        assert of(actions, tx.WriteChunk) == [tx.WriteChunk(i, CHUNKS[i])]
        written.append(i)
        unsubscribed += [c for a in of(actions, tx.Unsubscribe) for c in a.chunks]
        assert len(t.requested) <= LIMITS.window
    assert of(actions, tx.Progress) == [tx.Progress(7, 7)]
    assert actions[-1] == tx.Complete()
    assert written == list(range(7))
    assert sorted(unsubscribed) == list(range(7))  # each one dropped once, none left behind
    assert t.chunk_received(0, CHUNKS[0], now=20.0) == []  # finished: nothing more happens


def test_the_window_is_refilled_half_at_a_time_in_one_subscribe_and_one_unsubscribe():
    """A packet each way per chunk cost 1.8x the time of batches of half a window."""
    t = tx.Transfer(M.bundle_id, tx.Limits(window=4))
    t.start(now=0.0)
    assert subscribed(t.manifest_accepted(M, set(), now=0.0)) == [0, 1, 2, 3]
    assert t.chunk_received(0, CHUNKS[0], now=1.0)[1:] == [tx.Progress(1, 7)]  # 3 still out: wait
    actions = t.chunk_received(1, CHUNKS[1], now=1.0)
    assert actions[2:] == [tx.Unsubscribe(chunks=(0, 1)), tx.Subscribe(chunks=(4, 5))]
    t.chunk_received(2, CHUNKS[2], now=1.0)
    actions = t.chunk_received(3, CHUNKS[3], now=1.0)
    assert actions[2:] == [tx.Unsubscribe(chunks=(2, 3)), tx.Subscribe(chunks=(6,))]
    for i in (4, 5):
        assert of(t.chunk_received(i, CHUNKS[i], now=1.0), tx.Unsubscribe) == []  # nothing left to ask
    actions = t.chunk_received(6, CHUNKS[6], now=1.0)
    assert actions[-2:] == [tx.Unsubscribe(chunks=(4, 5, 6)), tx.Complete()]


def test_restart_with_chunks_on_disk_asks_only_for_the_missing_ones():
    t, actions = started(on_disk={0, 1, 3, 5, 99})  # 99: not a chunk of this bundle
    assert t.have == t.resumed_from == 4
    assert subscribed(actions) == [2, 4, 6]
    assert of(actions, tx.Progress) == [tx.Progress(4, 7)]
    for i in (2, 4, 6):
        actions = t.chunk_received(i, CHUNKS[i], now=1.0)
    assert actions[-1] == tx.Complete()


def test_everything_on_disk_completes_at_once_without_subscribing():
    _, actions = started(on_disk=set(range(7)))
    assert subscribed(actions) == []
    assert actions[-1] == tx.Complete()


def test_a_chunk_failing_its_hash_is_asked_for_again_then_fails_the_transfer():
    t, _ = started()
    damaged = CHUNKS[1][:-1] + b"\xff"
    actions = t.chunk_received(1, damaged, now=1.0)
    assert actions == [tx.Unsubscribe(chunks=(1,))]  # not written, not counted
    assert t.have == 0
    # asked for again within about a second, not after the whole chunk timeout
    assert subscribed(t.tick(now=1.5)) == []
    retry = t.tick(now=2.1)
    assert subscribed(retry) == [1] and tx.Unsubscribe(chunks=(1,)) in retry
    actions = t.chunk_received(1, damaged, now=2.2)  # the second failure: max_bad_chunks = 2
    failed = of(actions, tx.Failed)
    assert failed and failed[0].stage == "download"
    assert "chunk 1 failed its SHA-256 check 2 times" in failed[0].reason
    unsubscribed = [i for a in of(actions, tx.Unsubscribe) for i in a.chunks]
    assert sorted(unsubscribed) == [0, 1, 2]  # every outstanding subscription dropped
    assert t.chunk_received(0, CHUNKS[0], now=3.0) == [] and t.tick(now=100.0) == []


def test_a_chunk_that_does_not_arrive_is_asked_for_again_after_the_timeout():
    t, _ = started(now=0.0)
    t.chunk_received(0, CHUNKS[0], now=5.0)  # 3 was asked for at 5.0
    assert t.tick(now=9.9) == []
    late = t.tick(now=10.5)  # 1 and 2 asked for at 0.0
    assert late == [tx.Unsubscribe(chunks=(1, 2)), tx.Subscribe(chunks=(1, 2))]
    assert t.tick(now=15.1) == [tx.Unsubscribe(chunks=(3,)), tx.Subscribe(chunks=(3,))]
    assert t.tick(now=15.2) == []  # the clock restarted for the ones asked again


def test_no_manifest_within_the_timeout_fails_at_the_manifest_stage():
    t = tx.Transfer(M.bundle_id, LIMITS)
    t.start(now=100.0)
    assert t.tick(now=159.0) == []
    actions = t.tick(now=161.0)
    assert actions[0] == tx.Unsubscribe(chunks=(), manifest=True)
    assert actions[-1].stage == "manifest" and "no manifest for b-1-000000000000" in actions[-1].reason
    assert "after 61 s" in actions[-1].reason


def test_a_refused_manifest_fails_but_a_late_copy_after_acceptance_changes_nothing():
    t = tx.Transfer(M.bundle_id, LIMITS)
    t.start(now=0.0)
    refused = t.manifest_refused("signature rejected")
    assert of(refused, tx.Failed) == [tx.Failed("manifest", "signature rejected")]
    t2, _ = started()
    assert t2.manifest_refused("late garbage") == []
    assert t2.manifest_accepted(M, set(), now=1.0) == []  # a retained copy delivered twice


def test_chunks_not_asked_for_or_out_of_range_are_ignored():
    t, _ = started()
    assert t.chunk_received(5, CHUNKS[5], now=1.0) == []  # outside the window
    assert t.chunk_received(-1, b"x", now=1.0) == [] and t.chunk_received(70, b"x", now=1.0) == []
    early = tx.Transfer(M.bundle_id, LIMITS)
    early.start(now=0.0)
    assert early.chunk_received(0, CHUNKS[0], now=0.1) == []  # before the manifest


def test_reconnection_subscribes_again_to_what_is_outstanding():
    t = tx.Transfer(M.bundle_id, LIMITS)
    t.start(now=0.0)
    assert t.reconnected(now=1.0) == [tx.Subscribe(manifest=True)]
    t.manifest_accepted(M, set(), now=1.0)
    t.chunk_received(0, CHUNKS[0], now=2.0)
    assert t.reconnected(now=50.0) == [tx.Subscribe(chunks=(1, 2, 3))]
    assert t.tick(now=59.0) == []  # the reconnection restarted their timeouts
    assert t.refetched == 3  # counted: what a reconnection asks for again, never beyond the window
    t.tick(now=70.0)  # all three late
    assert t.refetched == 6


def test_a_chunk_that_cannot_be_stored_fails_the_transfer_with_the_reason():
    t, _ = started()
    t.chunk_received(0, CHUNKS[0], now=1.0)
    actions = t.write_failed(0, "[Errno 28] No space left on device")
    assert actions[-1] == tx.Failed("download", "cannot store chunk 0: [Errno 28] No space left on device")
    assert t.done and t.write_failed(1, "again") == []


def test_abort_drops_every_subscription_once():
    t, _ = started()
    assert t.abort() == [tx.Unsubscribe(chunks=(0, 1, 2), manifest=False)]
    assert t.abort() == []
    waiting = tx.Transfer(M.bundle_id, LIMITS)
    waiting.start(now=0.0)
    assert waiting.abort() == [tx.Unsubscribe(chunks=(), manifest=True)]


@pytest.mark.parametrize("window", [1, 2, 8])
def test_any_window_delivers_every_chunk_in_any_arrival_order(window):
    t = tx.Transfer(M.bundle_id, tx.Limits(window=window))
    t.start(now=0.0)
    actions = t.manifest_accepted(M, set(), now=0.0)
    outstanding = subscribed(actions)
    written: list[int] = []
    while outstanding:
        i = outstanding.pop()  # newest first: the broker may deliver in any order
        actions = t.chunk_received(i, CHUNKS[i], now=1.0)
        written += [a.index for a in of(actions, tx.WriteChunk)]
        outstanding += subscribed(actions)
    assert sorted(written) == list(range(7)) and actions[-1] == tx.Complete()
