"""The two ways LiteRT runs a model, behind one small interface: the `Interpreter` (every
runtime, every delegate) and LiteRT's `CompiledModel` (ai-edge-litert only: its CPU, GPU
and NPU accelerators). `TFLiteModel` (edgefleet.runtime) sets inputs, invokes and reads
outputs through an engine and never needs to know which one it has.

`compare` times both on the same inputs (a whole request: set, invoke, get) and
`preferred` picks one. Which is faster is a property of the model and the board (either
way here: docs/benchmarks.md), so the agent measures it per model when it activates one,
in a child process (edgefleet.api_probe).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np

from edgefleet.tensors import TensorSpec

INTERPRETER, COMPILED = "Interpreter", "CompiledModel"
APIS = ("auto", "interpreter", "compiled")


class Engine(Protocol):
    api: str

    def set_input(self, spec: TensorSpec, value: np.ndarray) -> None: ...
    def invoke(self) -> None: ...
    def get_output(self, spec: TensorSpec) -> np.ndarray: ...


class InterpreterEngine:
    api = INTERPRETER

    def __init__(self, interpreter: Any):
        self.interpreter = interpreter

    def set_input(self, spec: TensorSpec, value: np.ndarray) -> None:
        self.interpreter.set_tensor(spec.index, value)

    def invoke(self) -> None:
        self.interpreter.invoke()

    def get_output(self, spec: TensorSpec) -> np.ndarray:
        return self.interpreter.get_tensor(spec.index)


class CompiledEngine:
    """One signature of a CompiledModel, its buffers made once. Tensors are matched to the
    Interpreter's specs by tensor index, so names and quantisation come from one place
    (a model without signatures gets LiteRT's "<placeholder signature>", named by tensor)."""

    api = COMPILED

    def __init__(self, model_bytes: bytes, accelerator: str = "cpu", num_threads: int | None = None):
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.cpu_options import CpuOptions
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator as HA
        from ai_edge_litert.options import Options

        # GPU and NPU alone, without the CPU beside them: LiteRT's Python API does not say which
        # ops an accelerator took, so a model it takes only in part would be a silent CPU
        # fallback. Compiling fails instead ("Some ops are not accelerated"), and the chain
        # goes on with that message.
        accelerators = {"cpu": HA.CPU, "gpu": HA.GPU, "npu": HA.NPU}[accelerator]
        cpu = CpuOptions(num_threads=num_threads) if num_threads else None
        self.model = CompiledModel.from_buffer(model_bytes, options=Options(accelerators, cpu_options=cpu))
        self.signature = next(iter(self.model.get_signature_list()))
        inputs = self.model.get_input_tensor_details(self.signature)
        outputs = self.model.get_output_tensor_details(self.signature)
        self._in = {int(d["index"]): self.model.create_input_buffer_by_name(self.signature, n)
                    for n, d in inputs.items()}
        self._out = {int(d["index"]): self.model.create_output_buffer_by_name(self.signature, n)
                     for n, d in outputs.items()}
        self._in_by_name = {n: self._in[int(d["index"])] for n, d in inputs.items()}
        self._out_by_name = {n: self._out[int(d["index"])] for n, d in outputs.items()}
        self.fully_accelerated = bool(self.model.is_fully_accelerated())

    def covers(self, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> bool:
        return set(self._in) == {s.index for s in inputs} and set(self._out) == {s.index for s in outputs}

    def set_input(self, spec: TensorSpec, value: np.ndarray) -> None:
        self._in[spec.index].write(np.ascontiguousarray(value))

    def invoke(self) -> None:
        self.model.run_by_name(self.signature, self._in_by_name, self._out_by_name)

    def get_output(self, spec: TensorSpec) -> np.ndarray:
        count = int(np.prod(spec.shape)) if spec.shape else 1
        return self._out[spec.index].read(count, np.dtype(spec.dtype)).reshape(spec.shape)


# CompiledModel must beat the Interpreter by this much to be chosen: loading it maps
# LiteRT's accelerator registry and its own copy of the model (docs/runtime.md: 19.7 against
# 8.1 MiB for the tiny digits model, `edgefleet agent bench`), and within this margin one measurement
# cannot tell the two apart on a shared machine.
MARGIN = 0.05


def _cycle_p50_ms(engine: Engine, inputs: list[tuple[TensorSpec, np.ndarray]], outputs: list[TensorSpec],
                  runs: int, budget_s: float) -> float:
    """The median time of what a request costs: set every input, invoke, read every output."""
    times = []
    deadline = time.perf_counter() + budget_s
    while len(times) < runs and (len(times) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        for spec, value in inputs:
            engine.set_input(spec, value)
        engine.invoke()
        for spec in outputs:
            engine.get_output(spec)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000.0


def compare(engines: list[Engine], inputs: list[TensorSpec], outputs: list[TensorSpec], rounds: int = 3,
            runs: int = 30, budget_s: float = 1.0) -> dict[str, float]:
    """Each engine's median request time (ms) on the same random inputs, the rounds
    alternating so that a noisy neighbour slows both alike."""
    rng = np.random.default_rng(0)
    values = [(spec, random_input(rng, spec.shape, spec.dtype)) for spec in inputs]
    for engine in engines:
        engine.invoke()  # warm-up: the first invoke allocates and packs weights
    medians: dict[str, list[float]] = {e.api: [] for e in engines}
    for _ in range(rounds):
        for engine in engines:
            medians[engine.api].append(
                _cycle_p50_ms(engine, values, outputs, runs, budget_s / (rounds * len(engines))))
    return {api: round(float(np.median(v)), 4) for api, v in medians.items()}


def preferred(p50_ms: dict[str, float]) -> str:
    """CompiledModel where it is faster by more than MARGIN, else the Interpreter."""
    if COMPILED in p50_ms and p50_ms[COMPILED] < (1 - MARGIN) * p50_ms[INTERPRETER]:
        return COMPILED
    return INTERPRETER


def random_input(rng: np.random.Generator, shape: Any, dtype: Any) -> np.ndarray:
    """Input values as litert-benchmark makes them: integers within -128..127 (and the type's
    range), floats in 0..1."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = max(info.min, -128), min(info.max, 127)
        return rng.integers(low, high, size=shape, endpoint=True).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dtype)
    return rng.random(shape).astype(dtype)
