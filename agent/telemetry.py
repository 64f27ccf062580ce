"""What the agent measures and how it says so: inference counts and latency
percentiles, process CPU and memory, temperatures from the thermal framework."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import Any

import numpy as np
import psutil

from edgefleet.devices.thermal import read_thermal_zones
from edgefleet.protocol import messages

LATENCY_WINDOW = 2048  # percentiles over the most recent inferences


class InferenceStats:
    """Thread-safe counters fed by every inference path (HTTP, MQTT, self-test excluded)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.count_total = 0
        self.errors_total = 0
        self._count_at_last_report = 0

    def record(self, latencies: list[float]) -> None:
        with self._lock:
            self._latencies.extend(latencies)
            self.count_total += len(latencies)

    def record_error(self) -> None:
        with self._lock:
            self.errors_total += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            lat = np.array(self._latencies, dtype=np.float64) * 1000.0
            count_interval = self.count_total - self._count_at_last_report
            self._count_at_last_report = self.count_total
            total, errors = self.count_total, self.errors_total
        pct = (lambda q: round(float(np.percentile(lat, q)), 4)) if lat.size else (lambda q: None)
        return {
            "count_total": total,
            "count_interval": count_interval,
            "errors_total": errors,
            "latency_samples": int(lat.size),
            "latency_p50_ms": pct(50),
            "latency_p95_ms": pct(95),
            "latency_p99_ms": pct(99),
            "latency_mean_ms": round(float(lat.mean()), 4) if lat.size else None,
        }


class SystemSampler:
    """CPU and memory of this process and the board's temperatures."""

    def __init__(self, thermal_root: str = "/sys/class/thermal"):
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)  # the first call only starts the measurement
        psutil.cpu_percent(None)
        self._thermal_root = thermal_root

    def sample(self) -> dict[str, Any]:
        temps = read_thermal_zones(self._thermal_root)
        hottest = max(temps, key=temps.__getitem__) if temps else None
        return {
            "process_cpu_percent": round(self._process.cpu_percent(None), 1),
            "system_cpu_percent": round(psutil.cpu_percent(None), 1),
            "rss_bytes": self._process.memory_info().rss,
            "temperature_c": temps[hottest] if hottest else None,
            "temperature_source": f"measured:thermal_zone:{hottest}" if hottest else None,
            "temperatures_c": temps,
        }


def telemetry_payload(device_id: str, interval_s: float, model: dict[str, Any] | None,
                      runtime: dict[str, Any] | None, delegate: dict[str, Any] | None,
                      inference: dict[str, Any], system: dict[str, Any]) -> bytes:
    return messages.dumps({
        "schema": messages.TELEMETRY, "device_id": device_id, "ts": time.time(),
        "interval_s": interval_s, "model": model, "runtime": runtime, "delegate": delegate,
        "inference": inference, "system": system,
    })
