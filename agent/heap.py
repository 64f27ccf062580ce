"""Keep the agent's C heap small on glibc boards (a no-op elsewhere, e.g. musl).

glibc gives every thread that allocates its own malloc arena, and keeps memory that
Python and LiteRT free (a downloaded bundle, its verification, the self-test) in the heap
instead of handing it back. On a board with 512 MiB both matter
(benchmarks/agent_footprint_bench.py measures the agent's memory). The agent's threads
take turns on the GIL, so one arena costs no speed. The same as MALLOC_ARENA_MAX=1 in the
environment, which would need every way of starting the agent to set it.
"""

from __future__ import annotations

import ctypes
import functools
import gc

_M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    libc = ctypes.CDLL(None)  # the symbols already in the process: the C library's among them
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def one_arena() -> bool:
    """One malloc arena for every thread; call before the agent starts its threads."""
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(_M_ARENA_MAX, 1))


def give_back() -> None:
    """Collect Python's garbage, then return the heap's free pages to the system."""
    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
