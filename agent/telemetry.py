"""What the agent measures and how it says so (telemetry v2, docs/protocol.md): per serving
model, inference counts, errors by kind, throughput and latency (exact recent percentiles
and a mergeable histogram since activation); process CPU and memory; temperatures from
the thermal framework."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from edgefleet.agent.procstat import ProcStat
from edgefleet.devices.thermal import read_thermal_zones
from edgefleet.protocol import messages
from edgefleet.protocol.histogram import Histogram

LATENCY_WINDOW = 2048  # exact percentiles over the most recent inferences
PENDING_MAX = 4096  # latencies recorded between two snapshots before they are taken in anyway
ERROR_KINDS = ("input", "runtime", "busy")  # a request that did not fit, an invoke that failed, no room


class ModelStats:
    """What one serving model did since it was activated, fed by every inference path (HTTP,
    MQTT; the self-test excluded). Each activation gets its own, so after a swap the new
    model's figures start from zero and a request still finishing on the old model counts
    for the old one. Thread-safe."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._monotonic = monotonic
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._pending: deque[float] = deque()  # recorded, not yet in the figures
        self._histogram = Histogram()
        self.count_total = 0
        self.errors: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)
        self._count_at_last_report = 0
        self._last_report_at = monotonic()
        self._invoke_s_at_last_report = 0.0
        self.interval_invoke_s = 0.0  # invoke time in the last snapshot's interval (busy time)

    def record(self, latencies: list[float]) -> None:
        # One append on the request's path (a deque's are thread-safe); the figures take
        # them in when asked for: right after an invoke has emptied the caches, every line
        # of Python on the path costs (benchmarks/agent_overhead_bench.py)
        self._pending.extend(latencies)
        if len(self._pending) > PENDING_MAX:
            self._take_pending()

    def _take_pending(self) -> None:
        with self._lock:
            while self._pending:
                seconds = self._pending.popleft()
                self._latencies.append(seconds)
                self._histogram.add(seconds)
                self.count_total += 1

    def record_error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """The figures for one telemetry message; the interval is the time since the last one."""
        now = self._monotonic()
        self._take_pending()
        with self._lock:
            lat = np.array(self._latencies, dtype=np.float64) * 1000.0
            count_interval = self.count_total - self._count_at_last_report
            elapsed = now - self._last_report_at
            self._count_at_last_report, self._last_report_at = self.count_total, now
            self.interval_invoke_s = self._histogram.sum_s - self._invoke_s_at_last_report
            self._invoke_s_at_last_report = self._histogram.sum_s
            total, errors, histogram = self.count_total, dict(self.errors), self._histogram.as_dict()
        pct = (lambda q: round(float(np.percentile(lat, q)), 4)) if lat.size else (lambda q: None)
        return {
            "count_total": total,
            "count_interval": count_interval,
            "throughput_per_s": round(count_interval / elapsed, 3) if elapsed > 0 else None,
            "errors_total": sum(errors.values()),
            "errors_by_kind": errors,
            "latency_samples": int(lat.size),
            "latency_p50_ms": pct(50),
            "latency_p95_ms": pct(95),
            "latency_p99_ms": pct(99),
            "latency_max_ms": round(float(lat.max()), 4) if lat.size else None,
            "latency_mean_ms": round(float(lat.mean()), 4) if lat.size else None,
            "latency_histogram": histogram,
        }


class SystemSampler:
    """CPU and memory of this process and of the board, and the board's temperatures."""

    def __init__(self, thermal_root: str = "/sys/class/thermal", proc_root: str = "/proc"):
        self._proc = ProcStat(proc_root)
        self._thermal_root = thermal_root

    def sample(self) -> dict[str, Any]:
        temps = read_thermal_zones(self._thermal_root)
        hottest = max(temps, key=temps.__getitem__) if temps else None
        process_cpu, board_cpu = self._proc.sample()
        return {
            "process_cpu_percent": None if process_cpu is None else round(process_cpu, 1),
            "system_cpu_percent": None if board_cpu is None else round(board_cpu, 1),
            "rss_bytes": self._proc.rss_bytes(),
            "temperature_c": temps[hottest] if hottest else None,
            "temperature_source": f"measured:thermal_zone:{hottest}" if hottest else None,
            "temperatures_c": temps or None,  # null, as temperature_c, where there is no zone
        }


def telemetry_payload(device_id: str, interval_s: float, model: dict[str, Any] | None,
                      runtime: dict[str, Any] | None, delegate: dict[str, Any] | None,
                      inference: dict[str, Any], system: dict[str, Any],
                      power: dict[str, Any] | None = None, agent: dict[str, Any] | None = None) -> bytes:
    """AGENT: the agent's own state that every message carries (`trust`, `spool`)."""
    return messages.dumps({
        "schema": messages.TELEMETRY, "device_id": device_id, "ts": time.time(),
        "interval_s": interval_s, "model": model, "runtime": runtime, "delegate": delegate,
        "inference": inference, "system": system, "power": power, **(agent or {}),
    })
