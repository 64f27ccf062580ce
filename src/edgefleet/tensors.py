"""A model's inputs and outputs by name: their specs, and the conversions at the edges
(real values in, quantised tensors to the interpreter, real values out).

Names are the signature's keys where the model has a signature (what Keras and the
TFLite converter write), else the tensor names (most published .tflite files have no
signature); the order is the model's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
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

    # cached: read on every request (frozen dataclasses keep cached_property's value)
    @cached_property
    def quantized(self) -> bool:
        return self.dtype in ("int8", "uint8", "int16") and self.scale > 0

    @cached_property
    def sample_shape(self) -> tuple[int, ...]:
        """One sample: the shape without its batch dimension."""
        return self.shape[1:]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tensor": self.tensor or self.name, "shape": list(self.shape),
                "dtype": self.dtype, "scale": self.scale, "zero_point": self.zero_point}

    def quantize(self, sample: np.ndarray) -> np.ndarray:
        """An array of this tensor's own type is the tensor as it is (already quantised);
        any other array holds real values, quantised here when the tensor is. Floating-point
        values must be finite (InputError): checked here rather than with the shape, on the
        values in the cache (the last invoke has pushed the request's own array out of it)."""
        floating = sample.dtype.kind == "f"
        if self.quantized and sample.dtype != self.np_dtype:  # in float32 and in place, as
            q = np.divide(sample, self.scale, dtype=np.float32)  # LiteRT's QUANTIZE: x / scale, rounded
            if floating:
                self._check_finite(q)
            np.rint(q, out=q)
            q += self.zero_point
            low, high = self._limits
            np.maximum(q, low, out=q)  # np.clip: the same two ufuncs behind Python-level checks
            np.minimum(q, high, out=q)
            return q.astype(self.np_dtype)
        if floating:
            self._check_finite(sample)
        if sample.dtype == self.np_dtype:
            return sample
        if self.np_dtype.kind in "iu":  # an integer tensor taken as it is: values must fit, whole
            self._check_fits(sample, floating)
        return sample.astype(self.np_dtype)

    def _check_fits(self, sample: np.ndarray, floating: bool) -> None:
        low, high = self._limits
        smallest, largest = (sample.min(), sample.max()) if sample.size else (low, high)
        if smallest < low or largest > high:
            raise InputError(f"input {self.name!r}: values from {smallest} to {largest} do not fit "
                             f"{self.dtype} ({low} to {high}); the model takes them as they are, unscaled")
        if floating and not np.array_equal(sample, np.trunc(sample)):
            raise InputError(f"input {self.name!r}: the model takes whole numbers ({self.dtype}), "
                             "not fractions")

    def _check_finite(self, values: np.ndarray) -> None:
        if not np.isfinite(values).all():
            raise InputError(f"input {self.name!r}: inputs contain NaN or infinity (or values beyond "
                             "float32's range once scaled); a model given them answers nonsense")

    @cached_property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @cached_property
    def _limits(self) -> tuple[int, int]:
        info = np.iinfo(self.dtype)
        return int(info.min), int(info.max)

    def dequantize(self, value: np.ndarray) -> np.ndarray:
        real = value.astype(np.float32)  # a new array: the conversions below work in place
        if self.quantized:
            real -= self.zero_point
            real *= np.float32(self.scale)
        return real


def spec_from_detail(detail: dict[str, Any], name: str | None = None) -> TensorSpec:
    """A TensorSpec from an interpreter's tensor details (per-tensor quantisation)."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorSpec(
        name=name or str(detail["name"]), index=int(detail["index"]),
        shape=tuple(int(d) for d in detail["shape"]), dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale), zero_point=int(zero_point), tensor=str(detail["name"]))


def named_inputs(specs: Sequence[TensorSpec], inputs: Inputs) -> Arrays:
    """INPUTS as arrays by input name, each a batch (a single sample gains its batch axis)."""
    if len(specs) == 1 and type(inputs) is np.ndarray:  # most requests: no ABC isinstance checks
        return {specs[0].name: _batch(specs[0], inputs)}
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
    if x.dtype.kind not in "iuf":  # i, u: integers; f: floating point (finite: TensorSpec.quantize)
        raise InputError(f"{what}: dtype {x.dtype} is not a real number type")
    return x


def has_scores_shape(spec: TensorSpec) -> bool:
    """One row of two or more numbers per sample: the shape class scores have (landmarks
    and embeddings have it too, so the shape alone never decides)."""
    return len(spec.sample_shape) == 1 and spec.sample_shape[0] >= 2


def are_probabilities(values: np.ndarray) -> bool:
    """Rows that are non-negative and sum to one: a softmax's output."""
    v = np.asarray(values, np.float64).reshape(len(values), -1)
    return bool(v.size and (v >= -1e-3).all() and np.allclose(v.sum(axis=1), 1.0, atol=2e-2))
