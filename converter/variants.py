"""Variants of one model (float32, dynamic, float16, int8, 16x8, pruned-*), each built,
measured the same way (size, compressed size, accuracy against the float model per
output, latency with LiteRT, sparsity, Edge TPU mapping), and a recommendation among them.

The recommendation (:func:`recommend`): the smallest variant by compressed size that
passes the accuracy gate, is allowed and runnable on the target, and is not much slower
than float32 here. Much slower: a median invoke time with 1 thread above ``MAX_SLOWDOWN``
(1.5) times float32's and ``MIN_SLOWDOWN_MS`` (0.05 ms) above it (a tiny model's invoke
takes microseconds, where a shared machine's noise alone makes 1.5x). ``prefer="size"``
drops that condition; ``prefer="speed"`` takes the fastest.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgefleet.converter.errors import ConversionError
from edgefleet.converter.latency import all_cores, latency_p50_ms
from edgefleet.tensors import Arrays
from edgefleet.tflite_graph import read_graph

if TYPE_CHECKING:
    from edgefleet.converter.evaluation import Reference

# what users type -> quantisation mode of converter.quantization.modes
MODE_NAMES = {"float32": "float32", "fp32": "float32", "dynamic": "dynamic", "float16": "float16",
              "fp16": "float16", "int8": "int8", "int16x8": "int16x8", "16x8": "int16x8"}
PRUNED_PREFIX = "pruned-"
PREFERENCES = ("balanced", "size", "speed")
# "Much slower" than float32: a variant whose 1-thread p50 exceeds float32's by this factor is
# not recommended under the default preference (an int8 model without fast integer kernels
# on this CPU can be several times slower than float32 under XNNPACK)
MAX_SLOWDOWN = 1.5
MIN_SLOWDOWN_MS = 0.05
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
    metrics: dict[str, Any]  # converter.quantization.metrics.compare_outputs against the float model
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
            "message": gate.message, "output": getattr(gate, "output", ""),
            "max_drop_pp": gate.max_drop_pp, "min_snr_db": getattr(gate, "min_snr_db", None),
            "snr_db": getattr(gate, "snr_db", None), "outputs": getattr(gate, "outputs", {})}


def measure(model_bytes: bytes, reference: Reference | None, sample: Arrays | np.ndarray,
            latency: bool = True, warnings: list[str] | None = None) -> Measured:
    """Everything the report says about one model, measured with the device runtime:
    figures per output against REFERENCE's float outputs (none without evaluation data),
    latency on SAMPLE (one sample per input). Warnings (names compared in order) go to WARNINGS."""
    metrics: dict[str, Any] = {}
    inputs = sample
    if reference is not None:
        from edgefleet.runtime import TFLiteModel

        metrics, notes = reference.measure(model_bytes)
        if warnings is not None:
            warnings.extend(n for n in notes if n not in warnings)
        if isinstance(sample, dict):
            inputs, _note = reference.inputs_for(TFLiteModel(model_bytes), sample)
    lat: dict[str, float] = {}
    if latency:
        lat["1"] = latency_p50_ms(model_bytes, inputs, threads=1)
        cores = all_cores()
        lat["all"] = lat["1"] if cores == 1 else latency_p50_ms(model_bytes, inputs, threads=cores)
        lat["all_threads"] = float(cores)
    graph = read_graph(model_bytes)
    return Measured(len(model_bytes), len(zlib.compress(model_bytes, 9)), metrics, lat,
                    graph.weight_sparsity(), graph.op_counts())


def check_prefer(prefer: str) -> None:
    if prefer not in PREFERENCES:
        raise ConversionError(f"--prefer {prefer!r}: choose one of {', '.join(PREFERENCES)}")


def recommend(results: list[VariantResult], allowed_modes: list[str] | None,
              needs_edgetpu: bool, float_p50_ms: float | None = None,
              prefer: str = "balanced") -> tuple[VariantResult, str]:
    """The smallest (compressed) variant that passes its accuracy gate, runs where the
    target needs it, is a mode the target allows and (PREFER "balanced") is at most
    MAX_SLOWDOWN times slower than float32 (FLOAT_P50_MS, 1 thread); ties go to the faster
    one. PREFER "size" ignores speed, "speed" takes the fastest of those that qualify."""
    check_prefer(prefer)

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
    slow = {r.spec.name: p50 / float_p50_ms for r in candidates
            if float_p50_ms and (p50 := r.measured.latency_p50_ms.get("1")) is not None
            and p50 > MAX_SLOWDOWN * float_p50_ms and p50 > float_p50_ms + MIN_SLOWDOWN_MS}
    fast = [r for r in candidates if r.spec.name not in slow] if prefer == "balanced" else candidates
    note = ""
    if prefer == "balanced" and slow:
        if not fast:  # all slow: speed cannot decide, size does
            fast = candidates
            note = f"; every eligible variant is more than {MAX_SLOWDOWN:g}x slower than float32 here"
        else:
            names = ", ".join(f"{n} ({x:.1f}x)" for n, x in slow.items())
            note = (f"; not recommended for speed (p50 with 1 thread more than {MAX_SLOWDOWN:g}x float32's "
                    f"{float_p50_ms:.3f} ms here; --prefer size ignores speed): {names}")

    def p50(r: VariantResult) -> float:
        return r.measured.latency_p50_ms.get("1", r.measured.latency_p50_ms.get("all", 0.0))

    if prefer == "speed" and all("1" in r.measured.latency_p50_ms for r in fast):
        best = min(fast, key=lambda r: (p50(r), r.measured.compressed_bytes))
        what = f"fastest (p50 {p50(best):.3f} ms with 1 thread)"
    else:
        best = min(fast, key=lambda r: (r.measured.compressed_bytes, p50(r)))
        what = f"smallest compressed size ({best.measured.compressed_bytes:,} bytes)"
    gate = "passes the accuracy gate, " if best.gate is not None else ""
    reason = f"{best.spec.name}: {gate}{what} among {len(fast)} eligible variant(s){note}"
    return best, reason


def choose(results: list[VariantResult], pick: str | None, allowed_modes: list[str] | None,
           needs_edgetpu: bool, float_p50_ms: float | None, prefer: str) -> tuple[VariantResult, str]:
    """The variant for the bundle: PICK (which must pass its gate) or the recommendation.
    Raises GateError when every variant the gate judged fails it, naming each one's worst output."""
    import dataclasses

    from edgefleet.converter.quantization.gate import GateError

    if pick:
        picked = [r for r in results if r.spec.name == VariantSpec.parse(pick).name]
        if not picked:
            raise ConversionError(f"--pick {pick}: not among the variants {[r.spec.name for r in results]}")
        chosen = picked[0]
        if chosen.gate is not None and not chosen.gate.passed:
            raise GateError(chosen.gate)
        return chosen, f"{chosen.spec.name}: picked with --pick"
    gated = [r for r in results if r.gate is not None]
    if gated and not any(r.gate.passed for r in gated):
        if len(gated) == 1:
            raise GateError(gated[0].gate)
        closest = min(gated, key=lambda r: r.gate.drop_pp)
        raise GateError(dataclasses.replace(closest.gate, message="no variant passes the accuracy gate:\n  "
                                            + "\n  ".join(r.gate.message for r in gated)))
    return recommend(results, allowed_modes, needs_edgetpu, float_p50_ms, prefer)
