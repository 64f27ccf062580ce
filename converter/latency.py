"""Latency of a TFLite model on this machine, with the runtime the boards use (LiteRT)."""

from __future__ import annotations

import os
import time

import numpy as np

from edgefleet.runtime import TFLiteModel
from edgefleet.tensors import Inputs, named_inputs


def all_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def latency_p50_ms(model_bytes: bytes, sample: Inputs, threads: int, runs: int = 50,
                   warmup: int = 5) -> float:
    """Median wall time of one `invoke()` over RUNS runs after WARMUP, in milliseconds.

    SAMPLE is one sample: an array (a one-input model, without or with its batch axis) or
    arrays by input name. Timed by TFLiteModel itself around invoke() only, as the agent
    times it, so the figure is comparable with the agent's telemetry.
    """
    model = TFLiteModel(model_bytes, num_threads=threads)
    x = named_inputs(model.inputs, sample)  # a batch of one per input
    x = {name: a[:1] for name, a in x.items()}
    for _ in range(warmup):
        model.run(x)
    latencies = []
    deadline = time.monotonic() + 30  # a slow model on a busy machine still finishes
    for _ in range(runs):
        latencies.extend(model.run(x)[1])
        if time.monotonic() > deadline:
            break
    return round(float(np.median(latencies)) * 1000, 4)
