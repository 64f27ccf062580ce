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

from edgefleet.tensors import Arrays, InputError, Inputs, TensorSpec, named_inputs, spec_from_detail

__all__ = ["DELEGATES", "RUNTIMES", "DelegateReport", "InputError", "Runtime", "RuntimeLoadError",
           "TFLiteModel", "TensorSpec", "find_runtime"]

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


@dataclass
class DelegateReport:
    """Which delegate was asked for, which one runs, and why they differ."""

    requested: str
    active: str
    fallback_reason: str | None = None
    notes: list[str] = field(default_factory=list)
    share: dict[str, Any] | None = None  # what the delegate really took (edgefleet.delegation)

    def as_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "active": self.active,
                "fallback_reason": self.fallback_reason, "notes": self.notes, "delegated": self.share}


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
        started = time.perf_counter()
        try:
            self._interpreter = self.runtime.interpreter(
                model_content=model_bytes, experimental_delegates=delegates or None,
                num_threads=num_threads,
            )
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise RuntimeLoadError(f"{self.runtime.name} could not load the model: {exc}") from None
        self.load_seconds = time.perf_counter() - started  # interpreter, delegates, tensors
        self.delegate.share = self._delegated_share()
        if self.delegate.active == "cpu":
            self.delegate.notes.append(self._cpu_note())
        self.signature, self.inputs, self.outputs = _io_specs(self._interpreter)
        self._lock = threading.Lock()
        self.cold_start_seconds: float | None = None

    def _cpu_note(self) -> str:
        """What runs on the CPU, as the node list shows it (tflite-runtime 2.14 applies no
        XNNPACK to int8 models, LiteRT does)."""
        share = self.delegate.share
        if share is not None and share["delegate"] == "none":
            return f"{self.runtime.name} applied no delegate: every op runs on its builtin kernels"
        if self.runtime.name == "ai-edge-litert":
            return "LiteRT applies its XNNPACK delegate on the CPU by default"
        return f"{self.runtime.name} applies its XNNPACK delegate on the CPU by default"

    def _delegated_share(self) -> dict[str, Any] | None:
        """Which ops the applied delegate took (None where the runtime does not list its nodes)."""
        from edgefleet.delegation import delegated_share

        interpreter = self._interpreter
        try:
            nodes = interpreter._get_ops_details()  # LiteRT's node list (a private method)
        except Exception:  # a runtime build without it
            return None
        applied = any(n["op_name"] == "DELEGATE" for n in nodes)
        name = ("XNNPACK" if self.delegate.active == "cpu" else self.delegate.active) if applied else "none"
        def shape(index: int) -> tuple[int, ...]:
            return tuple(int(d) for d in interpreter._get_tensor_details(index, 0)["shape"])

        try:
            return delegated_share(nodes, shape, name).as_dict()
        except Exception:  # a node list in another shape than LiteRT 2.x's: no share rather than no model
            return None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample of the first input (without the batch dimension)."""
        return self.inputs[0].sample_shape

    def run(self, inputs: Inputs) -> tuple[Arrays, list[float]]:
        """Real-valued outputs by output name for a batch of INPUTS (one array for a
        one-input model, arrays in input order, or arrays by input name), and each
        sample's invoke latency. Raises InputError for inputs that do not fit."""
        batches = named_inputs(self.inputs, inputs)
        count = len(next(iter(batches.values())))
        outputs: dict[str, list[np.ndarray]] = {s.name: [] for s in self.outputs}
        latencies = []
        with self._lock:
            for i in range(count):
                for spec in self.inputs:
                    self._interpreter.set_tensor(spec.index, spec.quantize(batches[spec.name][i][None, ...]))
                start = time.perf_counter()
                self._interpreter.invoke()
                elapsed = time.perf_counter() - start
                if self.cold_start_seconds is None:
                    self.cold_start_seconds = elapsed
                latencies.append(elapsed)
                for spec in self.outputs:
                    value = spec.dequantize(self._interpreter.get_tensor(spec.index))
                    outputs[spec.name].append(value[0] if value.ndim and value.shape[0] == 1 else value)
        return {name: np.stack(values) for name, values in outputs.items()}, latencies

    def predict(self, x: Inputs) -> tuple[np.ndarray, list[float]]:
        """The first output only, for callers that know the model has one."""
        outputs, latencies = self.run(x)
        return outputs[self.outputs[0].name], latencies


def _io_specs(interpreter: Any) -> tuple[str | None, list[TensorSpec], list[TensorSpec]]:
    """The signature that names the tensors (serving_default, else the first) and the
    input and output specs in the model's own order, named by it where there is one."""
    inputs = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    try:
        signatures = interpreter.get_signature_list() or {}
    except (AttributeError, RuntimeError, ValueError):  # old runtimes, odd models
        signatures = {}
    key = "serving_default" if "serving_default" in signatures else next(iter(signatures), None)
    names_in: dict[int, str] = {}
    names_out: dict[int, str] = {}
    if key is not None:
        try:
            runner = interpreter.get_signature_runner(key)
            names_in = {int(d["index"]): n for n, d in runner.get_input_details().items()}
            names_out = {int(d["index"]): n for n, d in runner.get_output_details().items()}
        except (AttributeError, RuntimeError, ValueError, KeyError):
            names_in, names_out = {}, {}
        # a signature that does not cover every tensor cannot name them: tensor names then
        if set(names_in) != {int(d["index"]) for d in inputs} or \
                set(names_out) != {int(d["index"]) for d in outputs}:
            key, names_in, names_out = None, {}, {}
    return (key, [spec_from_detail(d, names_in.get(int(d["index"]))) for d in inputs],
            [spec_from_detail(d, names_out.get(int(d["index"]))) for d in outputs])
