"""Do calibration and evaluation data look alike, and do they fit what the model expects?

int8 calibration records each tensor's value range on the calibration data; a model then
fed data of another range (calibrated on 0..255 pixels, evaluated on 0..1) reads every
input as a handful of quantisation steps and answers nonsense, although both data sets
look fine on their own. These checks run before conversion and give warnings, never
errors: a range can differ on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgefleet.converter.data.arrays import Dataset

# Spans further apart than this factor, or ranges sharing less than this share of their
# union, are called different (0..255 vs 0..1 is a factor 255; two image sets preprocessed
# alike differ by a few percent).
SPAN_FACTOR = 3.0
MIN_OVERLAP = 0.5


@dataclass(frozen=True)
class ValueRange:
    low: float
    high: float

    @property
    def span(self) -> float:
        return self.high - self.low

    def text(self) -> str:
        return f"{self.low:.4g}..{self.high:.4g}"


@dataclass(frozen=True)
class ExpectedRange:
    """The range a model's own first layers (or its metadata) imply for an input."""

    range: ValueRange
    why: str  # e.g. "its first layer Rescaling(scale=0.00392, offset=0) maps 0..255 to 0..1"


def value_range(x: np.ndarray) -> ValueRange:
    return ValueRange(float(np.min(x)), float(np.max(x)))


def differ(a: ValueRange, b: ValueRange) -> str | None:
    """How A and B differ, or None when they are alike."""
    small, large = sorted((a.span, b.span))
    if large > 0 and (small == 0 or large / small > SPAN_FACTOR):
        factor = "a constant against a range" if small == 0 else f"spans {large / small:.3g}x apart"
        return factor
    union = max(a.high, b.high) - min(a.low, b.low)
    overlap = min(a.high, b.high) - max(a.low, b.low)
    if union > 0 and overlap / union < MIN_OVERLAP:
        return f"they share {max(overlap, 0.0) / union:.0%} of their combined range"
    return None


def compare_data(calib: Dataset, evaluation: Dataset) -> list[str]:
    """Warnings for inputs whose calibration and evaluation data differ in dtype or range."""
    warnings = []
    for name, x in calib.inputs.items():
        if name not in evaluation.inputs:
            continue
        what = f"input {name!r}: " if len(calib.inputs) > 1 else ""
        c, e = value_range(x), value_range(evaluation.inputs[name])
        how = differ(c, e)
        if how is not None:
            warnings.append(
                f"{what}calibration data ({calib.path.name}) runs {c.text()} but evaluation data "
                f"({evaluation.path.name}) runs {e.text()} ({how}): int8 calibrated on one range "
                "misreads the other; preprocess both the same way, as the device will")
        cd, ed = calib.dtypes.get(name), evaluation.dtypes.get(name)
        if cd and ed and cd != ed:
            warnings.append(
                f"{what}calibration data is stored as {cd} and evaluation data as {ed}: check that "
                "both were preprocessed the same way")
    return warnings


def check_expected(data: Dataset, expected: dict[str, ExpectedRange], what: str) -> list[str]:
    """Warnings for inputs of DATA (WHAT: "calibration", "evaluation") outside EXPECTED."""
    warnings = []
    for name, exp in expected.items():
        if name not in data.inputs:
            continue
        got = value_range(data.inputs[name])
        how = differ(got, exp.range)
        if how is not None:
            label = f"input {name!r}" if len(data.inputs) > 1 else "the input"
            warnings.append(
                f"{what} data ({data.path.name}) runs {got.text()}, but the model expects about "
                f"{exp.range.text()} for {label} ({exp.why}; {how})")
    return warnings
