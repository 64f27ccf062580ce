"""The accuracy gate, against the float model, output by output (:func:`check_outputs`):

- an output of class scores may lose at most ``--max-accuracy-drop`` percentage points
  (default 1.0): of top-1 accuracy where labels were given for it, else of agreement with
  the float model's top class (the drop is then 100 * (1 - agreement));
- every other output needs an SNR of at least ``--min-snr-db`` dB (default 20: the
  error's energy at most 1 % of the output's).

A variant passes when every output does. The verdict names the worst output: the failing
one furthest beyond its bound, relative to the bound (the closest to it when all pass). A
failed gate becomes a :class:`GateError`, a :class:`~converter.errors.ConversionError`
whose message carries the figures, which the CLI prints before exiting non-zero.
:func:`check_accuracy_drop` is the verdict on one class-score output's figures.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from edgefleet.converter.errors import ConversionError

FLAG = "--max-accuracy-drop"
SNR_FLAG = "--min-snr-db"
DEFAULT_MAX_DROP_PP = 1.0
DEFAULT_MIN_SNR_DB = 20.0
DEFAULT = "default"  # a budget not given: DEFAULT_MAX_DROP_PP where there is evaluation data
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
    output: str = ""  # the worst output (check_outputs)
    min_snr_db: float | None = None
    snr_db: float | None = None  # the lowest SNR of the outputs judged by SNR
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # every output's verdict

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class GateError(ConversionError):
    """A variant lost more accuracy than the gate allows; ``result`` says how much. MESSAGE
    (default: the result's) may add what else the caller knows, such as the report's path."""

    def __init__(self, result: GateResult, message: str | None = None):
        super().__init__(message or result.message)
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


def gate_budget(max_drop_pp: float | str | None, min_snr_db: float, has_eval: bool,
                keep_float: bool = False) -> float | None:
    """The drop budget a conversion gates with (None: no gate), checked with what it goes
    with. MAX_DROP_PP: a number, None (the gate off: ``--max-accuracy-drop none``) or DEFAULT."""
    if not math.isfinite(min_snr_db):
        raise ConversionError(f"{SNR_FLAG} must be a number of dB (got {min_snr_db})")
    budget = max_drop_pp
    if budget == DEFAULT:
        budget = DEFAULT_MAX_DROP_PP if has_eval else None
    elif budget is not None:
        if isinstance(budget, str) or not math.isfinite(budget):
            raise ConversionError(f"{FLAG} must be a number of percentage points or none (got {budget})")
        if not has_eval:
            raise ConversionError(f"{FLAG} needs evaluation data (--eval)")
    if keep_float and budget is None:
        raise ConversionError(f"--keep-float-layers auto needs the accuracy gate: evaluation data (--eval) "
                              f"and a {FLAG} other than none")
    return float(budget) if budget is not None else None


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


def check_outputs(float_metrics: dict[str, Any], variant_metrics: dict[str, Any], max_drop_pp: float,
                  min_snr_db: float, variant: str) -> GateResult:
    """The gate over every output of VARIANT_METRICS (metrics.compare_outputs) against
    FLOAT_METRICS (metrics.reference_figures): class-score outputs by their drop, the others
    by their SNR. The result carries the worst output's figures and every output's verdict."""
    if not math.isfinite(min_snr_db):
        raise ConversionError(f"{SNR_FLAG} must be a finite number of dB (got {min_snr_db})")
    per = variant_metrics.get("outputs") or {}
    if not per:
        raise ConversionError(f"cannot check {variant}'s accuracy: the evaluation measured no outputs")
    float_per = float_metrics.get("outputs") or {}
    verdicts: dict[str, dict[str, Any]] = {}
    excess: dict[str, float] = {}
    drops: list[float] = []
    snrs: list[float] = []
    for name, figures in per.items():
        if figures.get("class_scores"):
            one = check_accuracy_drop(float_per.get(name, {}), figures, max_drop_pp, variant)
            excess[name] = (one.drop_pp - max_drop_pp) / max(abs(max_drop_pp), 1.0)
            drops.append(one.drop_pp)
            verdicts[name] = {"passed": one.passed, "measure": one.measure, "drop_pp": one.drop_pp,
                              "message": one.message}
        else:
            snr = float(figures["snr_db"])
            passed = snr >= min_snr_db
            excess[name] = (min_snr_db - snr) / max(abs(min_snr_db), 1.0)
            snrs.append(snr)
            verdict = (f"at or above the {min_snr_db:g} dB floor" if passed
                       else f"below the {min_snr_db:g} dB floor ({SNR_FLAG})")
            verdicts[name] = {"passed": passed, "measure": "snr", "snr_db": snr,
                              "message": f"{variant}: SNR {snr:.1f} dB against the float model is {verdict}"}
        if (float_per.get(name) or {}).get("constant"):
            verdicts[name]["constant_reference"] = True
    failing = [n for n, v in verdicts.items() if not v["passed"]]
    worst = max(failing or list(verdicts), key=lambda n: excess[n])
    w = verdicts[worst]
    message = f"{w['message']}, on output {worst!r}"
    if len(verdicts) > 1:
        fail = f"{len(failing)} fail" if failing else "all pass"
        message += f", the worst of {len(verdicts)} outputs ({fail})"
    if w.get("constant_reference"):
        message += ("; the float model's output is the same for every evaluation input, so agreeing "
                    "with it proves little")
    return GateResult(
        passed=not failing, drop_pp=w.get("drop_pp", max(drops) if drops else 0.0), measure=w["measure"],
        message=message, variant=variant, max_drop_pp=float(max_drop_pp), output=worst,
        min_snr_db=float(min_snr_db), snr_db=min(snrs) if snrs else None, outputs=verdicts)
