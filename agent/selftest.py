"""The golden self-test: a new model must reproduce the conversion machine's outputs
on the configured runtime and delegate before it may serve."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgefleet.protocol.bundle import Bundle
from edgefleet.runtime import InputError, TFLiteModel


@dataclass(frozen=True)
class SelfTestResult:
    passed: bool
    samples: int
    top1_agreement: float
    mean_abs_error: float
    seconds: float
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_selftest(model: TFLiteModel, bundle: Bundle) -> SelfTestResult:
    spec = bundle.manifest.get("selftest") or {}
    name = spec.get("file", "golden.npz")
    min_agreement = float(spec.get("min_top1_agreement", 1.0))
    max_error = float(spec.get("max_mean_abs_error", 0.0))
    try:
        golden = np.load(io.BytesIO(bundle.files[name]), allow_pickle=False)
        inputs, reference = golden["inputs"], golden["reference_outputs"]
    except (KeyError, ValueError, OSError) as exc:
        return SelfTestResult(False, 0, 0.0, float("inf"), 0.0, f"golden set {name} unreadable: {exc}")
    try:
        outputs, latencies = model.predict(inputs)
    except (InputError, RuntimeError, ValueError) as exc:
        return SelfTestResult(False, len(inputs), 0.0, float("inf"), 0.0, f"model failed to run: {exc}")
    if outputs.shape != reference.shape:
        return SelfTestResult(False, len(inputs), 0.0, float("inf"), sum(latencies),
                              f"output shape {outputs.shape} differs from reference {reference.shape}")
    agreement = float(np.mean(outputs.argmax(-1) == reference.argmax(-1)))
    error = float(np.mean(np.abs(outputs - reference)))
    reasons = []
    if agreement < min_agreement:
        reasons.append(f"top-1 agreement {agreement:.3f} below {min_agreement:.3f}")
    if error > max_error:
        reasons.append(f"mean abs error {error:.5f} above {max_error:.5f}")
    return SelfTestResult(not reasons, len(inputs), agreement, error, sum(latencies),
                          "; ".join(reasons) or None)
