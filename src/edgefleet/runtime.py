"""One interface over the TFLite runtimes a board may have.

Order of preference: ai-edge-litert (LiteRT), tflite-runtime 2.14 (32-bit Pi OS,
needs numpy<2), tf.lite (workstations only). The agent never imports TensorFlow
unless it is asked for `runtime = "tensorflow"` explicitly.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RUNTIMES = ("ai-edge-litert", "tflite-runtime", "tensorflow")
# runtime name -> (module holding Interpreter and load_delegate, distribution for the version)
_MODULES = {
    "ai-edge-litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
    "tflite-runtime": ("tflite_runtime.interpreter", "tflite-runtime"),
    "tensorflow": ("tensorflow.lite", "tensorflow"),
}
DELEGATES = ("cpu", "edgetpu")
EDGETPU_LIBRARY = "libedgetpu.so.1"


class RuntimeLoadError(Exception):
    """No runtime, a delegate that will not load, or a model the runtime refuses."""


class InputError(ValueError):
    """Inference input of the wrong shape or type; the message names what was expected."""


@dataclass(frozen=True)
class Runtime:
    name: str
    version: str
    interpreter: Callable[..., Any]
    load_delegate: Callable[..., Any]


def _import_runtime(name: str) -> Runtime:
    module_name, dist = _MODULES[name]
    module = importlib.import_module(module_name)
    if name == "tensorflow":
        interpreter, load_delegate = module.Interpreter, module.experimental.load_delegate
    else:
        interpreter, load_delegate = module.Interpreter, module.load_delegate
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return Runtime(name, version, interpreter, load_delegate)


def find_runtime(preference: str = "auto") -> Runtime:
    """The requested runtime, or under "auto" the first of LiteRT and tflite-runtime present.

    "auto" never falls through to TensorFlow: a device without a runtime gets told what
    to install instead of silently pulling in a 500 MB dependency.
    """
    if preference != "auto" and preference not in RUNTIMES:
        raise RuntimeLoadError(f"unknown runtime {preference!r}; choose auto or one of {RUNTIMES}")
    candidates = RUNTIMES[:2] if preference == "auto" else (preference,)
    errors = []
    for name in candidates:
        try:
            return _import_runtime(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise RuntimeLoadError(
        "no TFLite runtime could be imported (" + "; ".join(errors) + "). "
        "Install one: pip install 'edgefleet[device]' (ai-edge-litert), or on 32-bit Raspberry Pi OS "
        "pip install tflite-runtime==2.14.0 'numpy<2'"
    )


@dataclass(frozen=True)
class TensorSpec:
    name: str
    index: int
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.dtype in ("int8", "uint8", "int16") and self.scale > 0

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "scale": self.scale, "zero_point": self.zero_point}


def _spec(detail: dict[str, Any]) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorSpec(
        name=str(detail["name"]), index=int(detail["index"]),
        shape=tuple(int(d) for d in detail["shape"]), dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale), zero_point=int(zero_point),
    )


@dataclass
class DelegateReport:
    """Which delegate was asked for, which one runs, and why they differ."""

    requested: str
    active: str
    fallback_reason: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "active": self.active,
                "fallback_reason": self.fallback_reason, "notes": self.notes}


class TFLiteModel:
    """A loaded model that takes and returns float arrays, quantising at the edges.

    Thread-safe: one interpreter serves one inference at a time (a lock), so callers
    on several threads never corrupt each other's tensors.
    """

    def __init__(
        self,
        model_bytes: bytes,
        runtime: str = "auto",
        delegate: str = "cpu",
        num_threads: int | None = None,
        delegate_options: dict[str, str] | None = None,
        allow_cpu_fallback: bool = False,
    ):
        if delegate not in DELEGATES:
            raise RuntimeLoadError(f"unknown delegate {delegate!r}; choose one of {DELEGATES}")
        self.runtime = find_runtime(runtime)
        self.delegate = DelegateReport(requested=delegate, active="cpu")
        delegates = []
        if delegate == "edgetpu":
            try:
                delegates.append(self.runtime.load_delegate(EDGETPU_LIBRARY, delegate_options or {}))
                self.delegate.active = "edgetpu"
            except (ValueError, RuntimeError, OSError) as exc:
                reason = f"Edge TPU delegate did not load ({EDGETPU_LIBRARY}: {exc})"
                if not allow_cpu_fallback:
                    raise RuntimeLoadError(
                        reason + ". Check that the Coral is plugged in and libedgetpu1-std is "
                        "installed, or set delegate = \"cpu\" (or allow_cpu_fallback = true)"
                    ) from None
                self.delegate.fallback_reason = reason
        if self.delegate.active == "cpu":
            self.delegate.notes.append("LiteRT applies its XNNPACK delegate on the CPU by default")
        try:
            self._interpreter = self.runtime.interpreter(
                model_content=model_bytes, experimental_delegates=delegates or None,
                num_threads=num_threads,
            )
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise RuntimeLoadError(f"{self.runtime.name} could not load the model: {exc}") from None
        self.inputs = [_spec(d) for d in self._interpreter.get_input_details()]
        self.outputs = [_spec(d) for d in self._interpreter.get_output_details()]
        if len(self.inputs) != 1:
            raise RuntimeLoadError(f"models with {len(self.inputs)} inputs are not supported yet; use one")
        self._lock = threading.Lock()
        self.cold_start_seconds: float | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample (without the batch dimension)."""
        return self.inputs[0].shape[1:]

    def _batch(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.shape == self.input_shape:
            x = x[None, ...]
        if x.ndim != len(self.input_shape) + 1 or x.shape[1:] != self.input_shape:
            raise InputError(
                f"input shape {tuple(x.shape)} does not fit the model: expected {self.input_shape} "
                f"for one sample or (N, {', '.join(map(str, self.input_shape))}) for a batch"
            )
        if x.shape[0] == 0:
            raise InputError("the batch holds no samples")
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise InputError(f"input dtype {x.dtype} is not a real number type")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise InputError("inputs contain NaN or infinity; a model given them answers nonsense")
        return x

    def _quantize(self, sample: np.ndarray) -> np.ndarray:
        """An array of the input tensor's own type is the tensor as it is (already quantised);
        any other array holds real values, quantised here when the tensor is."""
        spec = self.inputs[0]
        if sample.dtype == np.dtype(spec.dtype):
            return sample
        if spec.quantized:
            info = np.iinfo(spec.dtype)
            q = np.round(sample.astype(np.float64) / spec.scale + spec.zero_point)
            return np.clip(q, info.min, info.max).astype(spec.dtype)
        return sample.astype(spec.dtype)

    def _dequantize(self, spec: TensorSpec, value: np.ndarray) -> np.ndarray:
        if spec.quantized:
            return (value.astype(np.float32) - spec.zero_point) * spec.scale
        return value.astype(np.float32)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, list[float]]:
        """Float outputs of the first output tensor for a batch, and each sample's latency."""
        batch = self._batch(x)
        outputs, latencies = [], []
        out_spec = self.outputs[0]
        with self._lock:
            for sample in batch:
                self._interpreter.set_tensor(self.inputs[0].index, self._quantize(sample[None, ...]))
                start = time.perf_counter()
                self._interpreter.invoke()
                elapsed = time.perf_counter() - start
                if self.cold_start_seconds is None:
                    self.cold_start_seconds = elapsed
                latencies.append(elapsed)
                outputs.append(self._dequantize(out_spec, self._interpreter.get_tensor(out_spec.index))[0])
        return np.stack(outputs), latencies
