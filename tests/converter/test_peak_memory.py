"""The converter's peak-RSS meter: a step's peak is its own, not the process's so far."""

from __future__ import annotations

import numpy as np
import pytest

from edgefleet.converter.memory import HWM, PeakMemory, StepPeaks

MIB = 1 << 20


def _touch(mib: int) -> np.ndarray:
    return np.ones(mib * MIB, dtype=np.uint8)  # ones, not zeros: every page is written


def test_a_reset_forgets_the_peak_of_memory_since_freed() -> None:
    meter = PeakMemory()
    if meter.method != HWM:
        pytest.skip("this kernel does not let a process reset its RSS high-water mark")
    meter.reset()
    before = meter.peak()
    block = _touch(96)
    high = meter.peak()
    assert high >= before + 90 * MIB
    del block
    assert meter.peak() == pytest.approx(high, abs=8 * MIB)  # a high-water mark stays high
    meter.reset()
    assert meter.peak() < high - 80 * MIB


def test_step_peaks_name_the_step_that_took_the_memory() -> None:
    steps = StepPeaks()
    if steps.meter.method != HWM:
        pytest.skip("this kernel does not let a process reset its RSS high-water mark")
    steps.start()
    block = _touch(96)
    del block
    steps.done("big")
    steps.start()
    small = _touch(4)
    steps.done("small")
    del small
    figures = steps.figures()
    by_step = figures["peak_rss"]["by_step_bytes"]
    assert by_step["big"] >= by_step["small"] + 80 * MIB
    assert figures["peak_rss_bytes"] == max(by_step.values())
    assert figures["peak_rss"]["method"] == HWM and figures["wall_seconds"] >= 0
