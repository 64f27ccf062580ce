"""Latency of a TFLite model on this machine, with the runtime the boards use (LiteRT)."""

from __future__ import annotations

import os
import time

import numpy as np

from edgefleet.runtime import TFLiteModel


def all_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def latency_p50_ms(model_bytes: bytes, sample: np.ndarray, threads: int, runs: int = 50,
                   warmup: int = 5) -> float:
    """Median wall time of one `invoke()` over RUNS runs after WARMUP, in milliseconds.

    Timed by TFLiteModel itself around invoke() only, as the agent times it, so the
    figure is comparable with the agent's telemetry.
    """
    model = TFLiteModel(model_bytes, num_threads=threads)
    x = np.asarray(sample, np.float32)[None, ...]
    for _ in range(warmup):
        model.predict(x)
    latencies = []
    deadline = time.monotonic() + 30  # a slow model on a busy machine still finishes
    for _ in range(runs):
        latencies.extend(model.predict(x)[1])
        if time.monotonic() > deadline:
            break
    return round(float(np.median(latencies)) * 1000, 4)
