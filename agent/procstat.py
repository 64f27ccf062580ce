"""CPU time and resident memory of the agent and CPU use of the board, from Linux's /proc.

Read by hand: psutil costs the agent a megabyte of resident memory
(benchmarks/agent_choices_bench.py) for three figures that Linux gives in one line each: the process's CPU
time (os.times), its resident pages (/proc/self/statm) and the board's CPU time by kind
(the first line of /proc/stat, proc(5)).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


class ProcStat:
    """Percentages since the previous `sample` (the first since construction)."""

    def __init__(self, proc_root: str | os.PathLike[str] = "/proc"):
        self._root = Path(proc_root)
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._last = self._read()

    def _read(self) -> tuple[float, float, tuple[int, int] | None]:
        times = os.times()
        return time.monotonic(), times.user + times.system, self._board_jiffies()

    def _board_jiffies(self) -> tuple[int, int] | None:
        """(busy, total) clock ticks of all CPUs since boot; None where /proc has no stat."""
        try:
            fields = (self._root / "stat").read_text().split("\n", 1)[0].split()
            # user nice system idle iowait irq softirq steal (guest time is inside user and nice)
            ticks = [int(v) for v in fields[1:9]]
        except (OSError, ValueError):
            return None
        if fields[0] != "cpu" or len(ticks) < 4:
            return None
        total = sum(ticks)
        return total - ticks[3] - (ticks[4] if len(ticks) > 4 else 0), total

    def sample(self) -> tuple[float | None, float | None]:
        """(this process's CPU in % of one core, the board's CPU in % of all its cores)."""
        (t0, cpu0, board0), self._last = self._last, self._read()
        t1, cpu1, board1 = self._last
        process = (cpu1 - cpu0) / (t1 - t0) * 100.0 if t1 > t0 else None
        board = None
        if board0 and board1 and board1[1] > board0[1]:
            board = (board1[0] - board0[0]) / (board1[1] - board0[1]) * 100.0
        return process, board

    def rss_bytes(self) -> int | None:
        try:
            return int((self._root / "self" / "statm").read_text().split()[1]) * self._page
        except (OSError, ValueError, IndexError):
            return None
