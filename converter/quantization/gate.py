"""The accuracy gate: a converted variant may lose at most N percentage points (``--max-accuracy-drop``).

With labels the gate compares top-1 accuracy (float model vs variant, from
:func:`converter.quantization.metrics.reference_metrics` and
:func:`converter.quantization.metrics.compare`);
without labels the only measure is how often the variant picks the float model's top
class, so the drop is 100 * (1 - agreement). A failed gate becomes a :class:`GateError`,
a :class:`~converter.errors.ConversionError` whose message carries the figures, which the
CLI prints before exiting non-zero.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from edgefleet.converter.errors import ConversionError

FLAG = "--max-accuracy-drop"
# Drops are differences of float shares times 100: 100 * (0.994 - 0.989) is 0.5000000000000004.
# Rounding to this many decimals first keeps such a drop within a 0.5 pp budget.
_DECIMALS = 9


@dataclass(frozen=True)
class GateResult:
    passed: bool
    drop_pp: float  # percentage points lost against the float model (negative: gained)
    measure: str  # "top1" (labels existed) or "agreement" (no labels: 100 * (1 - agreement))
    message: str  # names the variant, both figures and the budget
    variant: str = ""
    max_drop_pp: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class GateError(ConversionError):
    """A variant lost more accuracy than ``--max-accuracy-drop`` allows; ``result`` says how much."""

    def __init__(self, result: GateResult):
        super().__init__(result.message)
        self.result = result


def check_accuracy_drop(
    float_metrics: dict[str, Any], variant_metrics: dict[str, Any], max_drop_pp: float, variant: str
) -> GateResult:
    """Whether VARIANT (its :func:`~converter.quantization.metrics.compare` figures) is within MAX_DROP_PP.

    Top-1 is compared when both dicts carry one (labelled evaluation data), otherwise the
    variant's ``agreement`` with the float model. A drop equal to the budget passes.
    """
    if not math.isfinite(max_drop_pp):
        raise ConversionError(f"{FLAG} must be a finite number of percentage points (got {max_drop_pp})")
    float_top1, variant_top1 = float_metrics.get("top1"), variant_metrics.get("top1")
    if float_top1 is not None and variant_top1 is not None:
        measure = "top1"
        drop = 100.0 * (float(float_top1) - float(variant_top1))
        figures = f"top-1 {100 * variant_top1:.1f}% vs float {100 * float_top1:.1f}%"
    elif variant_metrics.get("agreement") is not None:
        measure = "agreement"
        agreement = float(variant_metrics["agreement"])
        drop = 100.0 * (1.0 - agreement)
        figures = f"agreement with the float model's top class {100 * agreement:.1f}% (no labels)"
    else:
        raise ConversionError(
            f"cannot check {variant}'s accuracy: the evaluation gave neither top-1 (labels) nor "
            "agreement with the float model"
        )
    drop = round(drop, _DECIMALS)
    passed = drop <= max_drop_pp
    change = f"a drop of {_pp(drop, max_drop_pp)} pp" if drop >= 0 else f"a gain of {_pp(-drop, None)} pp"
    if passed:
        verdict = f"within the {max_drop_pp:g} pp allowed"
    else:
        verdict = f"above the {max_drop_pp:g} pp allowed ({FLAG})"
    message = f"{variant}: {figures} is {change}, {verdict}"
    return GateResult(passed, drop, measure, message, variant, float(max_drop_pp))


def raise_if_failed(result: GateResult) -> GateResult:
    """RESULT unchanged when it passed; otherwise raise :class:`GateError` with it."""
    if not result.passed:
        raise GateError(result)
    return result


def _pp(value: float, budget: float | None) -> str:
    """VALUE with one decimal, or more when one decimal would print it equal to BUDGET."""
    for decimals in (1, 2, 3):
        text = f"{value:.{decimals}f}"
        if budget is None or value == budget or text != f"{budget:.{decimals}f}":
            return text
    return f"{value:.4f}"
