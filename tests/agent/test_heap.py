"""The agent hands freed heap memory back to the system (glibc's malloc_trim)."""

from __future__ import annotations

import ctypes

import numpy as np
import psutil
import pytest

from edgefleet.agent import heap

glibc = hasattr(ctypes.CDLL(None), "malloc_trim")


@pytest.mark.skipif(not glibc, reason="malloc_trim is glibc's; elsewhere give_back only collects garbage")
def test_freed_heap_memory_goes_back_to_the_system():
    process = psutil.Process()
    junk, keep = [], []
    for _ in range(2000):
        junk.append(np.ones(100_000 // 8))  # 100 kB each: below glibc's mmap threshold, on the heap
        keep.append(bytes(1024))  # a survivor after each: the freed blocks are not at the heap's top
    full = process.memory_info().rss
    del junk
    still = process.memory_info().rss
    heap.give_back()
    after = process.memory_info().rss
    assert still > full - 50 * 2**20  # glibc kept what was freed...
    assert after < still - 150 * 2**20  # ...until it was asked to give it back (200 MB freed)
    assert keep  # the survivors lived through it


def test_one_arena_is_accepted_where_glibc_is():
    assert heap.one_arena() is glibc
