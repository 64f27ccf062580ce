"""Variants of one model (float32, dynamic, float16, int8, 16x8, pruned-*), each built,
measured the same way (size, compressed size, accuracy against the float model,
latency with LiteRT, sparsity, Edge TPU mapping), and a recommendation among them."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgefleet.converter.errors import ConversionError
from edgefleet.converter.latency import all_cores, latency_p50_ms
from edgefleet.runtime import TFLiteModel
from edgefleet.tflite_graph import read_graph

# what users type -> quantisation mode of converter.quantization.modes
MODE_NAMES = {"float32": "float32", "fp32": "float32", "dynamic": "dynamic", "float16": "float16",
              "fp16": "float16", "int8": "int8", "int16x8": "int16x8", "16x8": "int16x8"}
PRUNED_PREFIX = "pruned-"
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class VariantSpec:
    name: str  # as the user wrote it, e.g. "pruned-int8"
    mode: str  # converter.quantization.modes mode
    pruned: bool = False

    @classmethod
    def parse(cls, text: str) -> VariantSpec:
        name = text.strip().lower()
        pruned = name.startswith(PRUNED_PREFIX)
        base = name[len(PRUNED_PREFIX):] if pruned else name
        if base not in MODE_NAMES:
            known = ", ".join(sorted(set(MODE_NAMES)))
            raise ConversionError(f"unknown variant {text!r}: use one of {known}, "
                                  f"optionally prefixed with '{PRUNED_PREFIX}'")
        mode = MODE_NAMES[base]
        # one name per variant whatever alias was typed (fp16 and float16 are the same thing)
        return cls(f"{PRUNED_PREFIX if pruned else ''}{mode}", mode, pruned)


def parse_variants(text: str) -> list[VariantSpec]:
    specs = [VariantSpec.parse(part) for part in text.split(",") if part.strip()]
    if not specs:
        raise ConversionError("--variants is empty; e.g. --variants int8,fp16,dynamic")
    if len({s.name for s in specs}) != len(specs):
        raise ConversionError(f"--variants names a variant twice: {text}")
    return specs


@dataclass
class Measured:
    """Figures of one converted model, measured on this machine."""

    size_bytes: int
    compressed_bytes: int  # zlib level 9, about what the bundle's deflate makes of it
    metrics: dict[str, Any]  # converter.quantization.metrics.compare against the float model
    latency_p50_ms: dict[str, float]  # threads ("1", "all") -> median invoke time
    sparsity: float  # zero weights in CONV/DEPTHWISE/FULLY_CONNECTED kernels
    ops: dict[str, int]


@dataclass
class VariantResult:
    spec: VariantSpec
    model_bytes: bytes
    measured: Measured
    gate: Any = None  # converter.quantization.gate.GateResult when a budget applies
    edgetpu: dict[str, Any] | None = None
    xnnpack_sparse: dict[str, Any] | None = None
    kept_float_layers: list[str] = field(default_factory=list)
    worst_layers: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self, float_size: int) -> dict[str, Any]:
        m = self.measured
        return {
            "name": self.spec.name, "mode": self.spec.mode, "pruned": self.spec.pruned,
            "size_bytes": m.size_bytes, "compressed_bytes": m.compressed_bytes,
            "size_ratio": round(m.size_bytes / float_size, 4),
            "compressed_ratio": round(m.compressed_bytes / float_size, 4),
            "metrics": m.metrics, "latency_p50_ms": m.latency_p50_ms,
            "sparsity": round(m.sparsity, 4), "ops": m.ops,
            "gate": None if self.gate is None else _gate_dict(self.gate),
            # the per-op verdicts stay out of the summary (report.json keeps them for the chosen one)
            "edgetpu": None if self.edgetpu is None
            else {k: v for k, v in self.edgetpu.items() if k != "ops"},
            "xnnpack_sparse": self.xnnpack_sparse,
            "kept_float_layers": self.kept_float_layers, "worst_layers": self.worst_layers,
            "notes": self.notes,
        }


def _gate_dict(gate: Any) -> dict[str, Any]:
    return {"passed": gate.passed, "drop_pp": gate.drop_pp, "measure": gate.measure,
            "message": gate.message}


def measure(model_bytes: bytes, reference: np.ndarray | None, eval_x: np.ndarray | None,
            labels: np.ndarray | None, sample: np.ndarray, top_k: int = 5,
            latency: bool = True) -> Measured:
    """Everything the report says about one model, measured with the device runtime."""
    from edgefleet.converter.quantization.metrics import compare

    metrics: dict[str, Any] = {}
    if eval_x is not None and reference is not None:
        outputs, _ = TFLiteModel(model_bytes).predict(eval_x)
        metrics = compare(reference, outputs, labels, top_k=top_k)
    lat: dict[str, float] = {}
    if latency:
        lat["1"] = latency_p50_ms(model_bytes, sample, threads=1)
        cores = all_cores()
        lat["all"] = lat["1"] if cores == 1 else latency_p50_ms(model_bytes, sample, threads=cores)
        lat["all_threads"] = float(cores)
    graph = read_graph(model_bytes)
    return Measured(len(model_bytes), len(zlib.compress(model_bytes, 9)), metrics, lat,
                    graph.weight_sparsity(), graph.op_counts())


def recommend(results: list[VariantResult], allowed_modes: list[str] | None,
              needs_edgetpu: bool) -> tuple[VariantResult, str]:
    """The smallest (compressed) variant that passes its accuracy gate, runs where the
    target needs it, and is a mode the target allows; ties go to the faster one."""
    def ok(r: VariantResult) -> bool:
        if allowed_modes and r.spec.mode not in allowed_modes:
            return False
        if needs_edgetpu and not (r.edgetpu or {}).get("fully_mappable"):
            return False
        return r.gate is None or r.gate.passed

    candidates = [r for r in results if ok(r)]
    if not candidates:
        reasons = []
        for r in results:
            why = []
            if allowed_modes and r.spec.mode not in allowed_modes:
                why.append(f"mode {r.spec.mode} not allowed by the target")
            if needs_edgetpu and not (r.edgetpu or {}).get("fully_mappable"):
                why.append("not fully mappable to the Edge TPU")
            if r.gate is not None and not r.gate.passed:
                why.append(r.gate.message)
            reasons.append(f"{r.spec.name}: {'; '.join(why)}")
        raise ConversionError("no variant meets the requirements:\n  " + "\n  ".join(reasons))
    best = min(candidates, key=lambda r: (r.measured.compressed_bytes,
                                          r.measured.latency_p50_ms.get("all", 0.0)))
    gate = "passes the accuracy gate, " if best.gate is not None else ""
    reason = (f"{best.spec.name}: {gate}smallest compressed size "
              f"({best.measured.compressed_bytes:,} bytes) among {len(candidates)} eligible "
              f"variant(s)")
    return best, reason
