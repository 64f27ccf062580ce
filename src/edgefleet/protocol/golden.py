"""The golden self-test set in a bundle (format `edgefleet.golden/2`): a few inputs and
what the converted model answered to them on the workstation, for every output.

The device runs the same inputs and compares. It is compact, so a bundle stays about
the size of its model:

- inputs are stored in the model's input type (int8 for a quantised input, float16 for a
  float one); an image input too large for the size budget is stored at 1/f of its
  height and width and restored by repeating each pixel f x f times. The reference
  outputs were computed on exactly the restored inputs, so nothing is approximated;
- reference outputs are stored raw for quantised outputs (the integers the model wrote)
  and as float32 otherwise; an output larger than `SAMPLED_ELEMENTS` per sample is
  compared at that many fixed positions (stored), class scores always whole.

The manifest's `selftest` section describes the file (see docs/protocol.md). Bundles of
format 1 (`inputs`, `reference_outputs`: float32, first output only) still read.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

FORMAT = "edgefleet.golden/2"
SAMPLED_ELEMENTS = 256
MAX_UPSAMPLE = 16


class GoldenError(ValueError):
    """The golden set or its manifest section is unreadable or does not fit the model."""


@dataclass(frozen=True)
class OutputCheck:
    """How one output is compared: the device's tolerance and whether it holds class scores."""

    max_mean_abs_error: float
    class_scores: bool = False
    min_top1_agreement: float = 1.0
    scale: float = 0.0  # > 0: the reference holds the raw quantised integers
    zero_point: int = 0

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"max_mean_abs_error": self.max_mean_abs_error, "class_scores": self.class_scores}
        if self.class_scores:
            d["min_top1_agreement"] = self.min_top1_agreement
        if self.scale > 0:
            d.update(scale=self.scale, zero_point=self.zero_point)
        return d


@dataclass
class GoldenSet:
    inputs: dict[str, np.ndarray]  # restored: ready for the model
    references: dict[str, np.ndarray]  # (samples, compared elements), real values
    positions: dict[str, np.ndarray | None]  # flat positions compared per sample; None: all
    checks: dict[str, OutputCheck]

    @property
    def samples(self) -> int:
        return len(next(iter(self.inputs.values())))


@dataclass(frozen=True)
class OutputResult:
    name: str
    mean_abs_error: float
    max_mean_abs_error: float
    top1_agreement: float | None  # class scores only
    min_top1_agreement: float | None
    problem: str | None = None  # a missing output, a wrong shape

    @property
    def passed(self) -> bool:
        if self.problem:
            return False
        if self.top1_agreement is not None and self.min_top1_agreement is not None \
                and self.top1_agreement < self.min_top1_agreement:
            return False
        return self.mean_abs_error <= self.max_mean_abs_error

    def reason(self) -> str | None:
        if self.problem:
            return f"output {self.name!r}: {self.problem}"
        parts = []
        if self.top1_agreement is not None and self.min_top1_agreement is not None \
                and self.top1_agreement < self.min_top1_agreement:
            parts.append(f"top-1 agreement {self.top1_agreement:.3f} below {self.min_top1_agreement:.3f}")
        if not self.mean_abs_error <= self.max_mean_abs_error:
            parts.append(f"mean abs error {self.mean_abs_error:.5g} above {self.max_mean_abs_error:.5g}")
        return f"output {self.name!r}: {'; '.join(parts)}" if parts else None

    def as_dict(self) -> dict[str, Any]:
        return {"mean_abs_error": _finite(self.mean_abs_error), "max_mean_abs_error": self.max_mean_abs_error,
                "top1_agreement": self.top1_agreement, "passed": self.passed, "problem": self.problem}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


# --- inputs: stored compactly, restored exactly ----------------------------------------------

def image_like(shape: tuple[int, ...]) -> bool:
    """(N, H, W, C) with a few channels: an input that pixel repetition can restore."""
    return len(shape) == 4 and shape[3] <= 4 and shape[1] >= 8 and shape[2] >= 8


def shrink(x: np.ndarray, factor: int) -> np.ndarray:
    """Real-valued images (N, H, W, C) at 1/FACTOR of their size: each block's mean."""
    if factor == 1:
        return x
    n, h, w, c = x.shape
    if h % factor or w % factor:
        raise GoldenError(f"{h}x{w} is not divisible by {factor}")
    blocks = np.asarray(x, np.float64).reshape(n, h // factor, factor, w // factor, factor, c)
    return blocks.mean(axis=(2, 4)).astype(np.float32)


def restore(stored: np.ndarray, factor: int) -> np.ndarray:
    """The model's input from a stored one: float16 becomes float32 (exact), integers stay
    the tensor as it is; a shrunk image gets each pixel repeated FACTOR x FACTOR times."""
    x = stored.astype(np.float32) if stored.dtype == np.float16 else stored
    if factor > 1:
        x = np.repeat(np.repeat(x, factor, axis=1), factor, axis=2)
    return x


# --- references ----------------------------------------------------------------------------

def sample_positions(per_sample: int, last_dim: int, count: int = SAMPLED_ELEMENTS) -> np.ndarray | None:
    """COUNT flat positions spread over an output of PER_SAMPLE elements, with a stride
    that does not line up with the last axis (every box's every coordinate gets its
    turn); None when the output is small enough to compare whole."""
    if per_sample <= count:
        return None
    stride = per_sample // count
    while math.gcd(stride, max(last_dim, 1)) != 1 and stride > 1:
        stride -= 1
    return (np.arange(count, dtype=np.int64) * stride % per_sample).astype(np.uint32)


def encode(stored_inputs: dict[str, np.ndarray], upsample: dict[str, int], outputs: dict[str, np.ndarray],
           checks: dict[str, OutputCheck]) -> tuple[bytes, dict[str, Any]]:
    """golden.npz and the manifest's `selftest` section. STORED_INPUTS: as `restore` reads
    them; OUTPUTS: the model's real-valued outputs on the restored inputs."""
    arrays: dict[str, np.ndarray] = {}
    samples = len(next(iter(stored_inputs.values())))
    section: dict[str, Any] = {"file": "golden.npz", "format": FORMAT, "samples": samples,
                               "inputs": {}, "outputs": {}}
    for name, stored in stored_inputs.items():
        arrays[f"input:{name}"] = stored
        section["inputs"][name] = {"stored_dtype": stored.dtype.name, "upsample": int(upsample.get(name, 1))}
    for name, values in outputs.items():
        check = checks[name]
        flat = np.asarray(values).reshape(len(values), -1)
        positions = None if check.class_scores else sample_positions(flat.shape[1], np.shape(values)[-1])
        compared = flat if positions is None else flat[:, positions]
        if check.scale > 0:  # the integers the model wrote: exact and a quarter of the size
            raw = np.round(compared / check.scale + check.zero_point)
            compared = raw.astype(np.int8 if raw.min() >= -128 and raw.max() <= 127 else np.int32)
        arrays[f"reference:{name}"] = compared if check.scale > 0 else compared.astype(np.float32)
        if positions is not None:
            arrays[f"positions:{name}"] = positions
        compared_count = "all" if positions is None else len(positions)
        section["outputs"][name] = {**check.as_dict(), "compared": compared_count}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue(), section


def decode(data: bytes, section: dict[str, Any]) -> GoldenSet:
    """Read golden.npz as its manifest section describes it (format 1 or 2)."""
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
        if section.get("format") != FORMAT:
            return _decode_v1(npz, section)
        inputs = {name: restore(npz[f"input:{name}"], int(spec.get("upsample", 1)))
                  for name, spec in section["inputs"].items()}
        references, positions, checks = {}, {}, {}
        for name, spec in section["outputs"].items():
            check = OutputCheck(float(spec["max_mean_abs_error"]), bool(spec.get("class_scores", False)),
                                float(spec.get("min_top1_agreement", 1.0)), float(spec.get("scale", 0.0)),
                                int(spec.get("zero_point", 0)))
            ref = npz[f"reference:{name}"]
            if check.scale > 0:
                ref = (ref.astype(np.float64) - check.zero_point) * check.scale
            references[name] = np.asarray(ref, np.float32)
            key = f"positions:{name}"
            positions[name] = npz[key].astype(np.int64) if key in npz.files else None
            checks[name] = check
    except GoldenError:
        raise
    except Exception as exc:  # a damaged zip raises from deep in zipfile or zlib (BadZipFile, EOFError)
        raise GoldenError(f"golden set unreadable: {type(exc).__name__}: {exc}") from None
    if not inputs or not checks:
        raise GoldenError("golden set holds no inputs or no outputs")
    counts = {len(a) for a in inputs.values()} | {len(r) for r in references.values()}
    if len(counts) != 1:
        raise GoldenError(f"golden set arrays hold different numbers of samples: {sorted(counts)}")
    return GoldenSet(inputs, references, positions, checks)


def _decode_v1(npz: Any, section: dict[str, Any]) -> GoldenSet:
    """Format 1: float32 `inputs` and the first output's `reference_outputs`; the model's
    first input and output (their names are filled in by `bind_v1`)."""
    check = OutputCheck(float(section.get("max_mean_abs_error", 0.0)), class_scores=True,
                        min_top1_agreement=float(section.get("min_top1_agreement", 1.0)))
    ref = np.asarray(npz["reference_outputs"], np.float32)
    return GoldenSet({"": np.asarray(npz["inputs"], np.float32)}, {"": ref.reshape(len(ref), -1)},
                     {"": None}, {"": check})


def bind_v1(golden: GoldenSet, input_name: str, output_name: str) -> GoldenSet:
    """A format-1 set speaks of the first input and output: give them the model's names."""
    if set(golden.inputs) != {""}:
        return golden
    return GoldenSet({input_name: golden.inputs[""]}, {output_name: golden.references[""]},
                     {output_name: None}, {output_name: golden.checks[""]})


def compare(golden: GoldenSet, outputs: dict[str, np.ndarray]) -> list[OutputResult]:
    """Each golden output against what the model answered now."""
    results = []
    for name, check in golden.checks.items():
        agreement_bar = check.min_top1_agreement if check.class_scores else None
        if name not in outputs:
            results.append(OutputResult(name, math.inf, check.max_mean_abs_error, None, agreement_bar,
                                        f"the model has no such output (it has {sorted(outputs)})"))
            continue
        got = np.asarray(outputs[name], np.float32)
        flat = got.reshape(len(got), -1)
        positions = golden.positions[name]
        ref = golden.references[name]
        if positions is None:
            compared = flat
        else:
            compared = flat[:, positions] if flat.shape[1] > positions.max() else None
        if compared is None or compared.shape != ref.shape:
            results.append(OutputResult(name, math.inf, check.max_mean_abs_error, None, agreement_bar,
                                        f"shape {tuple(got.shape)} does not fit the reference {ref.shape}"))
            continue
        error = float(np.mean(np.abs(compared.astype(np.float64) - ref)))
        agreement = None
        if check.class_scores:
            agreement = float(np.mean(compared.argmax(axis=1) == ref.argmax(axis=1)))
        results.append(OutputResult(name, error, check.max_mean_abs_error, agreement, agreement_bar))
    return results
