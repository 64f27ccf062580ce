"""One interface over the TFLite runtimes a board may have (found by edgefleet.runtimes):
a model loaded on the accelerator chain, its inputs and outputs by name, and inference.

Order of preference: ai-edge-litert (LiteRT), tflite-runtime 2.14 (32-bit Pi OS,
needs numpy<2), tf.lite (workstations only). The agent never imports TensorFlow
unless it is asked for `runtime = "tensorflow"` explicitly.
"""

from __future__ import annotations

import ctypes
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgefleet.accelerators import CPU, DELEGATE, LITERT, Accelerator, ChainError, configured_chain, make
from edgefleet.api_probe import probe
from edgefleet.engines import (
    APIS,
    COMPILED,
    INTERPRETER,
    MARGIN,
    CompiledEngine,
    Engine,
    InterpreterEngine,
    preferred,
)
from edgefleet.runtimes import RUNTIMES, Runtime, RuntimeLoadError, find_runtime
from edgefleet.tensors import Arrays, InputError, Inputs, TensorSpec, named_inputs, spec_from_detail

__all__ = ["RUNTIMES", "DelegateReport", "InputError", "Runtime", "RuntimeLoadError",
           "TFLiteModel", "TensorSpec", "find_runtime"]


@dataclass
class DelegateReport:
    """Which accelerator was asked for, which one runs, and why they differ: every
    accelerator tried before it, with the loader's own message."""

    requested: str
    active: str
    notes: list[str] = field(default_factory=list)
    share: dict[str, Any] | None = None  # what the delegate really took (edgefleet.delegation)
    chain: list[str] = field(default_factory=list)  # the accelerators in the order they were tried
    fallbacks: list[dict[str, str]] = field(default_factory=list)  # {"delegate", "reason"}
    skipped: list[dict[str, str]] = field(default_factory=list)  # left out before trying, and why

    @property
    def fallback_reason(self) -> str | None:
        """The reasons of `fallbacks`, joined (None: the first accelerator took the model)."""
        return "; ".join(f"{f['delegate']}: {f['reason']}" for f in self.fallbacks) or None

    @property
    def on_cpu(self) -> bool:
        """The model runs on the CPU: no accelerator, or one that took none of its ops."""
        if self.active == "cpu":
            return True
        return self.share is not None and self.share.get("ops_delegated") == 0

    def as_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "active": self.active, "on_cpu": self.on_cpu,
                "fallback_reason": self.fallback_reason, "fallbacks": self.fallbacks,
                "skipped": self.skipped, "chain": self.chain, "notes": self.notes, "delegated": self.share}


class _Failed(Exception):
    """One accelerator of the chain did not take the model (the message is the loader's)."""


class TFLiteModel:
    """A loaded model that takes and returns float arrays, quantising at the edges.

    It is loaded on the first accelerator of CHAIN that takes it (edgefleet.accelerators);
    without a chain, DELEGATE names one (and the CPU after it under ALLOW_CPU_FALLBACK).
    API: "interpreter", "compiled" (LiteRT's CompiledModel) or "auto", which times both on
    the CPU where both apply and keeps the faster (edgefleet.engines).

    Thread-safe: one engine serves one inference at a time (a lock), so callers on
    several threads never corrupt each other's tensors.
    """

    def __init__(
        self,
        model_bytes: bytes,
        runtime: str = "auto",
        delegate: str = "cpu",
        num_threads: int | None = None,
        delegate_options: dict[str, str] | None = None,
        allow_cpu_fallback: bool = False,
        chain: Sequence[Accelerator] | None = None,
        api: str = "interpreter",
        skipped: Sequence[tuple[str, str]] = (),
        delegate_library: str = "",
    ):
        if api not in APIS:
            raise RuntimeLoadError(f"unknown api {api!r}; choose one of {APIS}")
        if chain is None:
            try:
                chain = configured_chain([make("cpu")], delegate, delegate_library, delegate_options,
                                         allow_cpu_fallback)
            except ChainError as exc:
                raise RuntimeLoadError(str(exc)) from None
        if not chain:
            raise RuntimeLoadError("no accelerator left to try: " + "; ".join(
                f"{name}: {why}" for name, why in skipped) if skipped else "the accelerator chain is empty")
        self.runtime = find_runtime(runtime)
        self.num_threads, self.api_choice, self._probe_seconds = num_threads, None, 0.0
        self.delegate = DelegateReport(requested=chain[0].name, active="cpu", chain=[a.name for a in chain],
                                       skipped=[{"delegate": n, "reason": r} for n, r in skipped])
        started = time.perf_counter()
        for acc in chain:
            try:
                self._load_on(acc, model_bytes, api)
                break
            except _Failed as exc:
                self.delegate.fallbacks.append({"delegate": acc.name, "reason": str(exc)})
        else:
            raise RuntimeLoadError(_all_failed(self.delegate.fallbacks))
        # every accelerator tried, delegates, tensors; not the API probe's measuring (api_choice)
        self.load_seconds = time.perf_counter() - started - self._probe_seconds
        self.delegate.active = acc.name
        if self.delegate.active == "cpu" and self.engine.api == INTERPRETER:
            self.delegate.notes.append(self._cpu_note())
        self._lock = threading.Lock()
        self.cold_start_seconds: float | None = None

    def _load_on(self, acc: Accelerator, model_bytes: bytes, api: str) -> None:
        """Load on ACC or raise _Failed with why; sets the engine, specs and delegated share."""
        delegates = []
        if acc.kind == DELEGATE:
            try:
                # the dynamic loader's own message first: a library LiteRT fails to open leaves a
                # half-made Delegate whose __del__ prints a traceback of its own
                ctypes.CDLL(acc.library)
                delegates.append(self.runtime.load_delegate(acc.library, dict(acc.options)))
            except (ValueError, RuntimeError, OSError) as exc:
                raise _Failed(f"{acc.library} did not load: {_one_line(exc)}") from None
        try:
            interpreter = self.runtime.interpreter(model_content=model_bytes,
                                                   experimental_delegates=delegates or None,
                                                   num_threads=self.num_threads)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise _Failed(f"{self.runtime.name} could not load the model: {_one_line(exc)}") from None
        self._interpreter = interpreter
        self.signature, self.inputs, self.outputs = _io_specs(interpreter)
        self.engine: Engine = InterpreterEngine(interpreter)
        if acc.kind == LITERT:
            self._compiled_on(acc.name.removeprefix("litert-"), model_bytes)
            return
        self.delegate.share = self._delegated_share(acc.name)
        if acc.kind == CPU and api != "interpreter":
            self._maybe_compiled(model_bytes, api)

    def _compiled(self, model_bytes: bytes, accelerator: str) -> CompiledEngine:
        if self.runtime.name != "ai-edge-litert":
            raise _Failed(f"LiteRT's CompiledModel API needs ai-edge-litert, not {self.runtime.name}")
        try:
            engine = CompiledEngine(model_bytes, accelerator, self.num_threads)
        except ImportError as exc:
            raise _Failed(f"this ai-edge-litert has no CompiledModel API ({exc})") from None
        except (RuntimeError, ValueError) as exc:
            why = _one_line(exc)
            raise _Failed(f"CompiledModel on the {accelerator} did not take the model: {why}") from None
        if not engine.covers(self.inputs, self.outputs):
            raise _Failed("CompiledModel's first signature does not cover every input and output")
        return engine

    def _compiled_on(self, accelerator: str, model_bytes: bytes) -> None:
        """LiteRT's GPU or NPU accelerator, taking the whole model (see CompiledEngine)."""
        engine = self._compiled(model_bytes, accelerator)
        self.engine = engine
        self._interpreter = None  # its specs are read; CompiledModel holds the model now
        self.delegate.share = {"delegate": f"litert-{accelerator}",
                               "fully_accelerated": engine.fully_accelerated}
        self.api_choice = {"chosen": COMPILED, "reason": f"the {accelerator} accelerator is CompiledModel's"}

    def _maybe_compiled(self, model_bytes: bytes, api: str) -> None:
        """API "compiled": CompiledModel on the CPU, or a reported fallback to the Interpreter;
        "auto": CompiledModel only where a probe measured it faster (edgefleet.api_probe)."""
        if self.runtime.name != "ai-edge-litert":
            self.api_choice = {"chosen": INTERPRETER,
                               "reason": f"{self.runtime.name} has the Interpreter only"}
            return
        if api == "auto":
            probe_started = time.perf_counter()
            figures = probe(model_bytes, self.num_threads)
            self._probe_seconds = time.perf_counter() - probe_started
            if "error" in figures:
                self.api_choice = {"chosen": INTERPRETER, "reason": figures["error"]}
                return
            chosen = preferred(figures["p50_ms"])
            self.api_choice = {"chosen": chosen, "p50_ms": figures["p50_ms"],
                               "reason": f"measured at activation: CompiledModel is chosen when it is over "
                                         f"{MARGIN:.0%} faster per request"}
            if chosen == INTERPRETER:
                return
        try:
            self.engine = self._compiled(model_bytes, "cpu")
        except _Failed as exc:
            self.api_choice = {"chosen": INTERPRETER, "reason": f"CompiledModel unavailable: {exc}"}
            return
        self.api_choice = self.api_choice or {"chosen": COMPILED, "reason": "configured"}
        self._interpreter = None  # only one copy of the model's tensors stays in memory

    def _cpu_note(self) -> str:
        """What runs on the CPU, as the node list shows it (tflite-runtime 2.14 applies no
        XNNPACK to int8 models, LiteRT does)."""
        share = self.delegate.share
        if share is not None and share["delegate"] == "none":
            return f"{self.runtime.name} applied no delegate: every op runs on its builtin kernels"
        if self.runtime.name == "ai-edge-litert":
            return "LiteRT applies its XNNPACK delegate on the CPU by default"
        return f"{self.runtime.name} applies its XNNPACK delegate on the CPU by default"

    def _delegated_share(self, accelerator: str) -> dict[str, Any] | None:
        """Which ops the applied delegate took (None where the runtime does not list its nodes)."""
        from edgefleet.delegation import delegated_share

        interpreter = self._interpreter
        try:
            nodes = interpreter._get_ops_details()  # LiteRT's node list (a private method)
        except Exception:  # a runtime build without it
            return None
        applied = any(n["op_name"] == "DELEGATE" for n in nodes)
        name = ("XNNPACK" if accelerator == "cpu" else accelerator) if applied else "none"

        def shape(index: int) -> tuple[int, ...]:
            return tuple(int(d) for d in interpreter._get_tensor_details(index, 0)["shape"])

        try:
            return delegated_share(nodes, shape, name).as_dict()
        except Exception:  # a node list in another shape than LiteRT 2.x's: no share rather than no model
            return None

    @property
    def api(self) -> str:
        return self.engine.api

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
        with self._lock:
            if count == 1:  # the common request: nothing to slice or stack
                outputs, elapsed = self._invoke(batches)
                return {name: _sample(value)[None, ...] for name, value in outputs.items()}, [elapsed]
            runs = [self._invoke({name: batch[i][None, ...] for name, batch in batches.items()})
                    for i in range(count)]
        return ({spec.name: np.stack([_sample(out[spec.name]) for out, _ in runs]) for spec in self.outputs},
                [elapsed for _, elapsed in runs])

    def _invoke(self, sample: Arrays) -> tuple[Arrays, float]:
        """One sample (batch 1) through the engine, the caller holding the lock: the outputs,
        dequantised, and the invoke's own time."""
        for spec in self.inputs:
            self.engine.set_input(spec, spec.quantize(sample[spec.name]))
        start = time.perf_counter()
        self.engine.invoke()
        elapsed = time.perf_counter() - start
        if self.cold_start_seconds is None:
            self.cold_start_seconds = elapsed
        return {spec.name: spec.dequantize(self.engine.get_output(spec)) for spec in self.outputs}, elapsed

    def predict(self, x: Inputs) -> tuple[np.ndarray, list[float]]:
        """The first output only, for callers that know the model has one."""
        outputs, latencies = self.run(x)
        return outputs[self.outputs[0].name], latencies


def _sample(value: np.ndarray) -> np.ndarray:
    """An output of one sample without its batch axis (outputs without one stay as they are)."""
    return value[0] if value.ndim and value.shape[0] == 1 else value


_SOURCE_LOCATION = re.compile(r"^(ERROR|WARNING|INFO): \[[^\]]+:\d+\]$")


def _one_line(exc: BaseException) -> str:
    """A loader's message on one line (LiteRT's span several, with source locations; where
    they are all it gives, its log on stderr holds the cause)."""
    lines = [line.strip(" \u2514") for line in str(exc).splitlines()]
    text = [line for line in lines if line and not _SOURCE_LOCATION.match(line)]
    if not text and any(lines):
        return (f"LiteRT gave only source locations ({' '.join(filter(None, lines))}); "
                "the cause is in its log on the agent's stderr")
    return " ".join(text) or type(exc).__name__


def _all_failed(fallbacks: list[dict[str, str]]) -> str:
    reasons = "; ".join(f"{f['delegate']}: {f['reason']}" for f in fallbacks)
    hint = ""
    if any(f["delegate"] == "edgetpu" for f in fallbacks):
        hint = (". Check that the Coral is plugged in and libedgetpu1-std is installed, or set "
                "delegate = \"cpu\" (or allow_cpu_fallback = true)")
    if len(fallbacks) == 1 and fallbacks[0]["delegate"] == "cpu":
        return fallbacks[0]["reason"]
    return f"no accelerator took the model ({reasons}){hint}"


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
