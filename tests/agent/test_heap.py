"""The agent hands freed heap memory back to the system (glibc's malloc_trim)."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from edgefleet.agent import heap

glibc = hasattr(ctypes.CDLL(None), "malloc_trim")


# In a fresh interpreter: in one that ran other tests, the heap has holes that take the small
# survivors, the freed blocks lie together at the heap's top, and free() itself trims them.
_FREED_AND_GIVEN_BACK = """
import numpy as np, psutil
from edgefleet.agent import heap
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
assert keep  # the survivors lived through it
print(full, still, after)
"""


@pytest.mark.skipif(not glibc, reason="malloc_trim is glibc's; elsewhere give_back only collects garbage")
def test_freed_heap_memory_goes_back_to_the_system():
    proc = subprocess.run([sys.executable, "-c", _FREED_AND_GIVEN_BACK], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    full, still, after = map(int, proc.stdout.split())
    assert still > full - 50 * 2**20  # glibc kept what was freed...
    assert after < still - 150 * 2**20  # ...until it was asked to give it back (200 MB freed)


def test_one_arena_is_accepted_where_glibc_is():
    assert heap.one_arena() is glibc
