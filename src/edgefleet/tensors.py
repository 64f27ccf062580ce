"""A model's inputs and outputs by name: their specs, and the conversions at the edges
(real values in, quantised tensors to the interpreter, real values out).

Names are the signature's keys where the model has a signature (what Keras and the
TFLite converter write), else the tensor names (most published .tflite files have no
signature); the order is the model's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray]
# What callers may pass as inputs: one array (one-input models), arrays in input order, or by name
Inputs = np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray]


class InputError(ValueError):
    """Inference input of the wrong shape or type; the message names what was expected."""


@dataclass(frozen=True)
class TensorSpec:
    name: str  # the public name (signature key, else tensor name)
    index: int  # the interpreter's tensor index
    shape: tuple[int, ...]  # with the batch dimension, as allocated (batch 1)
    dtype: str
    scale: float
    zero_point: int
    tensor: str = ""  # the tensor's own name in the flatbuffer

    @property
    def quantized(self) -> bool:
        return self.dtype in ("int8", "uint8", "int16") and self.scale > 0

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One sample: the shape without its batch dimension."""
        return self.shape[1:]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tensor": self.tensor or self.name, "shape": list(self.shape),
                "dtype": self.dtype, "scale": self.scale, "zero_point": self.zero_point}

    def quantize(self, sample: np.ndarray) -> np.ndarray:
        """An array of this tensor's own type is the tensor as it is (already quantised);
        any other array holds real values, quantised here when the tensor is."""
        if sample.dtype == np.dtype(self.dtype):
            return sample
        if self.quantized:
            info = np.iinfo(self.dtype)
            q = np.round(sample.astype(np.float64) / self.scale + self.zero_point)
            return np.clip(q, info.min, info.max).astype(self.dtype)
        return sample.astype(self.dtype)

    def dequantize(self, value: np.ndarray) -> np.ndarray:
        if self.quantized:
            return ((value.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)
        return value.astype(np.float32)


def spec_from_detail(detail: dict[str, Any], name: str | None = None) -> TensorSpec:
    """A TensorSpec from an interpreter's tensor details (per-tensor quantisation)."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorSpec(
        name=name or str(detail["name"]), index=int(detail["index"]),
        shape=tuple(int(d) for d in detail["shape"]), dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale), zero_point=int(zero_point), tensor=str(detail["name"]))


def named_inputs(specs: Sequence[TensorSpec], inputs: Inputs) -> Arrays:
    """INPUTS as arrays by input name, each a batch (a single sample gains its batch axis)."""
    if isinstance(inputs, Mapping):
        unknown = sorted(set(inputs) - {s.name for s in specs})
        missing = [s.name for s in specs if s.name not in inputs]
        if unknown or missing:
            raise InputError(f"inputs by name must be exactly {[s.name for s in specs]}"
                             + (f"; unknown {unknown}" if unknown else "")
                             + (f"; missing {missing}" if missing else ""))
        arrays = {s.name: np.asarray(inputs[s.name]) for s in specs}
    elif isinstance(inputs, np.ndarray) or not isinstance(inputs, Sequence):
        if len(specs) != 1:
            raise InputError(f"the model has {len(specs)} inputs ({', '.join(s.name for s in specs)}); "
                             "give one array per input, by name")
        arrays = {specs[0].name: np.asarray(inputs)}
    else:
        if len(inputs) != len(specs):
            raise InputError(f"{len(inputs)} arrays given; the model has {len(specs)} inputs "
                             f"({', '.join(s.name for s in specs)})")
        arrays = {s.name: np.asarray(a) for s, a in zip(specs, inputs, strict=True)}
    batches = {s.name: _batch(s, arrays[s.name]) for s in specs}
    counts = {len(b) for b in batches.values()}
    if len(counts) > 1:
        raise InputError("the inputs hold different numbers of samples: "
                         + ", ".join(f"{n} {len(b)}" for n, b in batches.items()))
    return batches


def _batch(spec: TensorSpec, x: np.ndarray) -> np.ndarray:
    sample = spec.sample_shape
    what = f"input {spec.name!r}"
    if x.shape == sample:
        x = x[None, ...]
    if x.ndim != len(sample) + 1 or x.shape[1:] != sample:
        raise InputError(
            f"input shape {tuple(x.shape)} does not fit {what}: expected {sample} for one "
            f"sample or (N, {', '.join(map(str, sample))}) for a batch")
    if x.shape[0] == 0:
        raise InputError(f"{what}: the batch holds no samples")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise InputError(f"{what}: dtype {x.dtype} is not a real number type")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise InputError(f"{what}: inputs contain NaN or infinity; a model given them answers nonsense")
    return x


def has_scores_shape(spec: TensorSpec) -> bool:
    """One row of two or more numbers per sample: the shape class scores have (landmarks
    and embeddings have it too, so the shape alone never decides)."""
    return len(spec.sample_shape) == 1 and spec.sample_shape[0] >= 2


def are_probabilities(values: np.ndarray) -> bool:
    """Rows that are non-negative and sum to one: a softmax's output."""
    v = np.asarray(values, np.float64).reshape(len(values), -1)
    return bool(v.size and (v >= -1e-3).all() and np.allclose(v.sum(axis=1), 1.0, atol=2e-2))
