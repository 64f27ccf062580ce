"""The golden self-test: run the bundle's golden inputs on this board's runtime and
delegate, and compare every output with what the workstation got (protocol/golden.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgefleet.protocol import golden
from edgefleet.protocol.bundle import Bundle
from edgefleet.runtime import InputError, TFLiteModel


@dataclass(frozen=True)
class SelfTestResult:
    passed: bool
    samples: int
    top1_agreement: float | None  # the lowest over the class-score outputs; None: there are none
    mean_abs_error: float | None  # the largest share of its tolerance, as that output's error
    seconds: float
    reason: str | None = None
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # per output, as compared

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        what = f"{len(self.outputs)} output(s)" if len(self.outputs) != 1 else "1 output"
        if self.top1_agreement is not None:
            return f"{100 * self.top1_agreement:.0f}% agreement on {self.samples} samples, {what}"
        return f"within tolerance on {self.samples} samples, {what}"


def _failed(reason: str, samples: int = 0, seconds: float = 0.0) -> SelfTestResult:
    return SelfTestResult(False, samples, None, None, seconds, reason)


def run_selftest(model: TFLiteModel, bundle: Bundle) -> SelfTestResult:
    spec = bundle.manifest.get("selftest") or {}
    name = spec.get("file", "golden.npz")
    if name not in bundle.files:
        return _failed(f"golden set {name} is not in the bundle")
    try:
        golden_set = golden.decode(bundle.files[name], spec)
    except golden.GoldenError as exc:
        return _failed(f"golden set {name}: {exc}")
    golden_set = golden.bind_v1(golden_set, model.inputs[0].name, model.outputs[0].name)
    try:
        outputs, latencies = model.run(golden_set.inputs)
    except (InputError, RuntimeError, ValueError) as exc:
        return _failed(f"model failed to run: {exc}", golden_set.samples)
    results = golden.compare(golden_set, outputs)
    agreements = [r.top1_agreement for r in results if r.top1_agreement is not None]
    worst = max(results, key=lambda r: r.mean_abs_error / r.max_mean_abs_error if r.max_mean_abs_error > 0
                else (0.0 if r.mean_abs_error == 0 else float("inf")))
    reasons = [r.reason() for r in results if not r.passed]
    return SelfTestResult(
        passed=not reasons, samples=golden_set.samples,
        top1_agreement=min(agreements) if agreements else None,
        mean_abs_error=worst.as_dict()["mean_abs_error"], seconds=sum(latencies),
        reason="; ".join(r for r in reasons if r) or None, outputs={r.name: r.as_dict() for r in results})
