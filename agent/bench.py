"""`edgefleet agent bench`: a model's speed, memory and energy on this board, measured the way
LiteRT's `benchmark_model` and `litert-benchmark` do (initialisation, the first inference,
warm-up runs, then timed runs: min, average, median, p5/p95, max, standard deviation) and
printed in `litert-benchmark`'s layout so that the two can be read side by side, plus the
memory the model adds and the power and energy per inference from the board's sensor or
its profile's estimate (labelled as such).

Only the interpreter's `invoke()` is timed, as in those tools: inputs are set beforehand
(random values in each input's range), outputs are not read.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from edgefleet.agent.config import BoardSettings
from edgefleet.agent.power import PowerTelemetry, board_setup
from edgefleet.engines import random_input
from edgefleet.protocol.bundle import check_contents
from edgefleet.runtime import TFLiteModel, find_runtime


@dataclass
class BenchOptions:
    runs: int = 100
    warmup: int = 10
    threads: int = 1
    delegate: str = "cpu"
    board: BoardSettings | None = None
    api: str = "interpreter"  # interpreter | compiled (LiteRT's CompiledModel, as litert-benchmark)
    delegate_library: str = ""  # instead of the delegate's known library (edgefleet.accelerators)


def model_bytes(path: Path) -> bytes:
    """A .tflite file's bytes, or the model inside a bundle (its hashes checked, not its signature)."""
    data = path.read_bytes()
    return check_contents(data).model_bytes if data[:2] == b"PK" else data


def _inputs(model: TFLiteModel, seed: int = 0) -> None:
    """Set every input once to random values that fit its type."""
    rng = np.random.default_rng(seed)
    for spec in model.inputs:  # set once: the benchmark times invoke() alone, as LiteRT's tools do
        model.engine.set_input(spec, random_input(rng, (1, *spec.sample_shape), spec.dtype))


def _stats(times: list[float]) -> dict[str, float]:
    ms = np.array(times) * 1000.0
    return {"avg_ms": float(ms.mean()), "min_ms": float(ms.min()), "max_ms": float(ms.max()),
            "median_ms": float(np.median(ms)), "std_ms": float(ms.std()),
            "p5_ms": float(np.percentile(ms, 5)), "p95_ms": float(np.percentile(ms, 95)), "num_runs": len(ms)}


def _time(run: Callable[[], Any], options: BenchOptions,
          power: PowerTelemetry) -> tuple[float, list[float], list[float]]:
    """The first run, the warm-up runs and the timed runs of RUN, in seconds."""
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    warm = []
    for _ in range(options.warmup):
        start = time.perf_counter()
        run()
        warm.append(time.perf_counter() - start)
    power.window(0, 0.0)  # the energy window starts with the timed runs
    times = []
    for _ in range(options.runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
        power.sample()
    return first, warm, times


def _interpreter(data: bytes, options: BenchOptions) -> tuple[float, Callable[[], Any], dict[str, Any]]:
    model = TFLiteModel(data, delegate=options.delegate, num_threads=options.threads,
                        delegate_library=options.delegate_library)
    _inputs(model)
    return model.load_seconds, model.engine.invoke, model.delegate.as_dict()


def _compiled(data: bytes, options: BenchOptions) -> tuple[float, Callable[[], Any], dict[str, Any]]:
    """LiteRT's CompiledModel API on its CPU accelerator, run as litert-benchmark runs it."""
    if options.delegate != "cpu":
        raise ValueError("--api compiled runs on LiteRT's CPU accelerator only (--delegate cpu)")
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.cpu_options import CpuOptions
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import Options

    start = time.perf_counter()
    model = CompiledModel.from_buffer(data, options=Options(HardwareAccelerator.CPU,
                                                            cpu_options=CpuOptions(num_threads=options.threads)))
    init = time.perf_counter() - start
    signature = next(iter(model.get_signature_list()), "serving_default")
    rng = np.random.default_rng(0)
    inputs = {}
    for name, detail in model.get_input_tensor_details(signature).items():
        buffer = model.create_input_buffer_by_name(signature, name)
        buffer.write(random_input(rng, detail.get("shape", [1]), detail.get("dtype", "float32")))
        inputs[name] = buffer
    outputs = {name: model.create_output_buffer_by_name(signature, name)
               for name in model.get_output_tensor_details(signature)}
    return init, lambda: model.run_by_name(signature, inputs, outputs), {
        "requested": "cpu", "active": "LiteRT CPU accelerator (XNNPACK)",
        "fully_accelerated": model.is_fully_accelerated()}


def bench(path: Path, options: BenchOptions) -> dict[str, Any]:
    """Every figure of one benchmark of the model at PATH (see the module's docstring)."""
    data = model_bytes(path)
    runtime = find_runtime("auto")  # its libraries load first: the model's memory is what follows
    if options.api == "compiled" and runtime.name != "ai-edge-litert":
        raise ValueError(f"--api compiled needs ai-edge-litert; this board has {runtime.name}")
    process = psutil.Process()
    rss_before = process.memory_info().rss
    init, run, delegate = (_compiled if options.api == "compiled" else _interpreter)(data, options)
    _, power = board_setup(options.board or BoardSettings())
    first, warm, times = _time(run, options, power)
    busy = sum(times) if delegate["active"] != "cpu" and options.api != "compiled" else 0.0
    return {
        "model": str(path), "model_size_bytes": len(data), "num_threads": options.threads,
        "runtime": {"name": runtime.name, "version": runtime.version,
                    "api": "CompiledModel" if options.api == "compiled" else "Interpreter"},
        "delegate": delegate,
        "latency": {"init_ms": init * 1000.0, "warmup_first_ms": first * 1000.0,
                    "warmup_avg_ms": statistics.fmean(warm) * 1000.0 if warm else None,
                    "num_warmup_runs": options.warmup, **_stats(times)},
        "memory": {"rss_added_bytes": process.memory_info().rss - rss_before,
                   "rss_bytes": process.memory_info().rss},
        "power": power.window(options.runs, busy),
    }


def _ms(value: float | None) -> str:
    return f"{value:.3f} ms" if value is not None else "n/a"


def bench_text(r: dict[str, Any]) -> list[str]:
    """The figures in litert-benchmark's layout, then memory, power and what the delegate took."""
    lat, power, share = r["latency"], r["power"], r["delegate"].get("delegated") or {}
    full = r["delegate"].get("fully_accelerated", share.get("ops_share") == 1.0)
    lines = ["=" * 40, " BENCHMARK RESULTS (edgefleet agent bench)", "=" * 40,
             f"Model initialization:  {_ms(lat['init_ms'])}",
             f"Warmup (first):        {_ms(lat['warmup_first_ms'])}",
             f"Warmup (avg):          {_ms(lat['warmup_avg_ms'])} ({lat['num_warmup_runs']} runs)",
             f"Inference (avg):       {_ms(lat['avg_ms'])} ({lat['num_runs']} runs)",
             f"Inference (min):       {_ms(lat['min_ms'])}",
             f"Inference (max):       {_ms(lat['max_ms'])}",
             f"Inference (median):    {_ms(lat['median_ms'])}",
             f"Inference (std):       {_ms(lat['std_ms'])}",
             f"Inference (p5):        {_ms(lat['p5_ms'])}",
             f"Inference (p95):       {_ms(lat['p95_ms'])}",
             f"Fully accelerated:     {full}",
             "=" * 40,
             f"runtime {r['runtime']['name']} {r['runtime']['version']} ({r['runtime']['api']}), "
             f"{r['num_threads']} thread(s), delegate {r['delegate']['active']}",
             f"memory: the model adds {r['memory']['rss_added_bytes'] / 2**20:.1f} MiB "
             f"(process {r['memory']['rss_bytes'] / 2**20:.1f} MiB RSS)"]
    if power.get("power_source"):
        lines.append(f"power: {power['power_avg_w']:.2f} W, {power['energy_per_inference_mj']:.3f} mJ "
                     f"per inference ({power['power_source']})")
    else:
        lines.append(f"power: not measured ({power.get('reason')})")
    if share:
        lines.append(f"delegated: {share['delegate']} runs {share['ops_delegated']}/{share['ops_total']} ops")
    return lines
