"""Peak resident memory (RSS) of a conversion, and of each of its steps.

On Linux the kernel keeps the process's RSS high-water mark (``VmHWM`` in
/proc/self/status) and resets it to the current RSS when "5" is written to
/proc/self/clear_refs (Linux 4.0 and later). That gives exact peaks per step inside one
process, with no sampling thread to miss a short spike, and a conversion's own peak even
in a process that did other work before it (a test session, a benchmark).

Elsewhere (macOS, or a /proc that refuses the write) the figure is ``ru_maxrss``: the
process's peak over its whole life so far, which is the conversion's peak only in a fresh
process, as a ``edgefleet convert`` run is. ``method`` says which one was measured.
"""

from __future__ import annotations

import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_RESET_PEAK = "5"  # clear_refs value that resets VmHWM only (1-4 clear page flags)
HWM = "VmHWM"
LIFETIME = "ru_maxrss"


class PeakMemory:
    """Peaks of RSS between :meth:`reset` and :meth:`peak`, in bytes."""

    def __init__(self) -> None:
        self.method = HWM if self._can_reset() else LIFETIME

    @staticmethod
    def _can_reset() -> bool:
        try:
            _CLEAR_REFS.write_text(_RESET_PEAK)
            return _read_hwm() is not None
        except OSError:
            return False

    def reset(self) -> None:
        """Start a new peak from the current RSS (does nothing with ru_maxrss)."""
        if self.method == HWM:
            try:
                _CLEAR_REFS.write_text(_RESET_PEAK)
            except OSError:  # /proc changed its mind: keep the lifetime peak from here on
                self.method = LIFETIME

    def peak(self) -> int:
        """The highest RSS since the last reset (HWM) or since the process began (ru_maxrss)."""
        if self.method == HWM:
            hwm = _read_hwm()
            if hwm is not None:
                return hwm
            self.method = LIFETIME
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(maxrss if sys.platform == "darwin" else maxrss * 1024)  # bytes on macOS, KiB on Linux


def _read_hwm() -> int | None:
    try:
        match = re.search(r"^VmHWM:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


class StepPeaks:
    """Wall time and peak RSS of a whole conversion, and the peak of each named step.

    :meth:`start` folds the peak so far into the overall one and resets the meter, so the
    time between steps counts too; steps must not nest (an inner reset would hide the
    outer step's earlier peak from its own figure, not from the overall one).
    """

    def __init__(self) -> None:
        self.meter = PeakMemory()
        self.meter.reset()
        self.started = time.perf_counter()
        self.overall = 0
        self.steps: dict[str, int] = {}

    def start(self) -> None:
        self.overall = max(self.overall, self.meter.peak())
        self.meter.reset()

    def done(self, key: str) -> None:
        peak = self.meter.peak()
        self.overall = max(self.overall, peak)
        if self.meter.method == HWM:  # a lifetime figure says nothing about one step
            self.steps[key] = peak

    def figures(self) -> dict[str, Any]:
        """For report.json: peak_rss_bytes, wall_seconds and how the peak was measured."""
        self.overall = max(self.overall, self.meter.peak())
        return {"peak_rss_bytes": self.overall,
                "wall_seconds": round(time.perf_counter() - self.started, 3),
                "peak_rss": {"method": self.meter.method, "by_step_bytes": dict(self.steps)}}
