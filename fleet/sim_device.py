"""One simulated device: the state an agent would hold and the messages it would send
(status, reported, telemetry v2, inference answers), with figures shaped by a board profile.

Nothing here runs a model or reads a sensor. Power comes from the profile's cited constants
(idle, full load, the accelerator's draw), scaled by a made-up load; latencies are drawn
around `latency_ms` times the board factor below. Every message says `"simulated": true`.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from edgefleet.devices.profiles import Profile
from edgefleet.protocol import messages
from edgefleet.protocol.desired import BundleRef
from edgefleet.protocol.histogram import Histogram, bucket_index

# How much faster than a Raspberry Pi 4's CPU each board runs a small model: illustrative
# factors for the simulation only, not measurements (no board here to measure).
SPEED = {"rpi4": 1.0, "rpi5": 0.45, "generic-aarch64": 1.0, "generic-x86_64": 0.3, "coral-usb": 0.15,
         "coral-pcie": 0.1, "coral-devboard": 0.12, "imx8mp-npu": 0.3, "jetson-orin-nano": 0.2}
INSTALL_STAGES = ("downloading", "verifying", "self-testing")
CHUNKS = 10  # what a simulated install reports as its chunk count
RUNTIME = {"name": "simulated", "version": "0", "api": "simulated", "api_choice": None}
COLD_START = {"load_ms": 12.0, "first_inference_ms": 6.0}
CONSTANT = {"trust": {"allow_unsigned": False},
            "spool": {"queued": 0, "dropped_total": 0, "replayed_total": 0}, "simulated": True}


@dataclass
class Behaviour:
    """How simulated installs go, by bundle version: FAIL's self-tests fail; SLOWER's and
    HUNGRIER's latency and energy per inference are multiplied by the factor given."""

    fail: frozenset[str] = frozenset()
    slower: dict[str, float] = field(default_factory=dict)
    hungrier: dict[str, float] = field(default_factory=dict)
    install_s: float = 2.0  # from the desired state to active (or failed)


class SimDevice:
    def __init__(self, device_id: str, profile: Profile, groups: list[str], model: BundleRef | None,
                 behaviour: Behaviour, latency_ms: float = 4.0, rate_per_s: float = 5.0,
                 interval_s: float = 1.0, seed: int = 0):
        self.device_id, self.profile, self.groups = device_id, profile, groups
        self.behaviour, self.interval_s, self.rate_per_s = behaviour, interval_s, rate_per_s
        self.rng = random.Random(seed)
        # each device a little apart from the others of its board
        self.base_s = latency_ms / 1000 * SPEED.get(profile.name, 1.0) * self.rng.lognormvariate(0, 0.08)
        self.instance = f"{self.rng.getrandbits(48):012x}"
        self.active: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []  # bundles run before, newest first
        self.install: dict[str, Any] | None = None
        self.last_error: dict[str, Any] | None = None
        self.desired: dict[str, BundleRef | str | None] = {}  # by source: "device", "group:<g>"
        self.desired_signed_by: str | None = None
        self._installing: tuple[BundleRef, float] | None = None  # what, since when
        self._last_telemetry = time.time()
        self.reported_due = True
        self._delegation = self._delegate()
        if model is not None:
            self._activate(model, time.time())

    # --- what the device runs
    def _activate(self, bundle: BundleRef, now: float) -> None:
        if self.active is not None:
            self.history.insert(0, self.active)
        self.active = {"bundle_id": bundle.bundle_id, "name": bundle.name, "version": bundle.version,
                       "activated_at": now, "signed_by": "simulated", "revoked": None}
        self.hist, self.count, self.errors = Histogram(), 0, 0

    def _factor(self, table: dict[str, float]) -> float:
        return table.get(self.active["version"], 1.0) if self.active else 1.0

    def want(self, source: str, bundle: BundleRef | str | None, signed_by: str | None,
             now: float | None = None) -> None:
        """A desired state arrived from SOURCE ("device" or "group:<g>"); the device's own
        wins, then the groups in the order of its config, as an agent's."""
        self.desired[source] = bundle
        self.desired_signed_by = signed_by
        wanted = self.effective()
        if wanted == "previous":
            if self.history and self.active:
                back = self.history.pop(0)
                self.history.insert(0, self.active)
                self.active = back
                self.hist, self.count, self.errors = Histogram(), 0, 0
            self.reported_due = True
            return
        if isinstance(wanted, BundleRef) and (self.active or {}).get("bundle_id") != wanted.bundle_id \
                and not (self._installing and self._installing[0] == wanted):
            self._installing = (wanted, time.time() if now is None else now)
            self.reported_due = True

    def effective(self) -> BundleRef | str | None:
        for source in ["device", *(f"group:{g}" for g in self.groups)]:
            if self.desired.get(source) is not None:
                return self.desired[source]
        return None

    def advance(self, now: float) -> None:
        """Move an install along its stages; it ends active, or failed at the self-test."""
        if self._installing is None:
            return
        bundle, since = self._installing
        share = max(0.0, (now - since) / max(self.behaviour.install_s, 1e-6))  # a clock set back: not begun
        if share < 1.0:
            stage = INSTALL_STAGES[min(int(share * 3), 2)]
            if not self.install or self.install.get("state") != stage:
                self.reported_due = True
            progress = min(share * 3, 1.0)
            self._install(bundle, stage, progress=round(progress, 2), chunks_have=round(progress * CHUNKS))
            return
        self._installing = None
        self.reported_due = True
        if bundle.version in self.behaviour.fail:
            reason = f"simulated: version {bundle.version}'s self-test was told to fail"
            self._install(bundle, "failed", stage="self-test", reason=reason)
            self.last_error = {"bundle_id": bundle.bundle_id, "stage": "self-test", "reason": reason,
                               "at": now}
        else:
            self._activate(bundle, now)
            self._install(bundle, "active", progress=1.0)

    def _install(self, bundle: BundleRef, state: str, **extra: Any) -> None:
        """The same fields at every stage, as an agent's (docs/protocol.md, reported state)."""
        known = self.install if self.install and self.install["bundle_id"] == bundle.bundle_id else {}
        self.install = {"bundle_id": bundle.bundle_id, "state": state, "progress": known.get("progress", 0.0),
                        "chunks_have": known.get("chunks_have", 0), "chunks_total": CHUNKS,
                        "chunks_resumed": 0, "chunks_refetched": 0, "updated_at": time.time(), **extra}

    # --- messages
    def status(self, state: str = "online") -> bytes:
        return messages.status_payload(state, instance=self.instance)

    def will(self) -> bytes:
        return messages.status_payload("offline", stamped=False, instance=self.instance, since=time.time())

    def _delegate(self) -> dict[str, Any]:
        wanted = self.profile.accelerator.delegate
        return {"requested": wanted, "active": wanted, "on_cpu": wanted == "cpu", "chain": [wanted],
                "fallbacks": [], "skipped": [], "fallback_reason": None, "notes": ["simulated"],
                "delegated": None if wanted == "cpu" else {"delegate": wanted, "ops_total": 40,
                                                           "ops_delegated": 38, "ops_share": 0.95,
                                                           "work_share": 0.99}}

    def reported(self) -> bytes:
        self.reported_due = False
        state = (self.install or {}).get("state") or ("active" if self.active else "idle")
        if state == "active" and not self.active:
            state = "idle"
        active = None
        if self.active:
            active = {**self.active, "selftest": {"passed": True, "samples": 16, "reason": None},
                      "runtime": RUNTIME, "delegate": self._delegation}
        desired = self.effective()
        return messages.dumps({
            "schema": messages.REPORTED, "device_id": self.device_id, "ts": time.time(), "state": state,
            "active": active, "install": self.install,
            "desired": {"bundle_id": desired.bundle_id if isinstance(desired, BundleRef) else None,
                        "source": next((s for s, b in self.desired.items() if b is not None), None),
                        "signed_by": self.desired_signed_by},
            "previous": self.history[0]["bundle_id"] if self.history else None, "last_error": self.last_error,
            "agent": {"version": "simulated", "board": self.profile.description, "profile": self.profile.name,
                      "detected": {"profile": self.profile.name, "evidence": [], "simulated": True},
                      "groups": self.groups, "power_source": f"estimated:{self.profile.name}",
                      "local_api": None, "allow_unsigned": False, "spool": CONSTANT["spool"]},
            "simulated": True,
        })

    def answer(self, transaction: messages.Transaction | None) -> bytes:
        """An inference answer: made-up class scores, counted like a real inference."""
        if not self.active:
            return messages.response_payload(transaction, error="no model is active yet")
        latency = self._latency()
        self.hist.add(latency)
        self.count += 1
        scores = [round(self.rng.random(), 3) for _ in range(10)]
        return messages.response_payload(transaction, {
            "bundle_id": self.active["bundle_id"], "outputs": {"scores": [scores]},
            "top1": {"scores": [scores.index(max(scores))]}, "latency_ms": [round(latency * 1000, 4)]})

    def _latency(self) -> float:
        return self.base_s * self._factor(self.behaviour.slower) * self.rng.lognormvariate(0, 0.15)

    def _add(self, n: int) -> None:
        """N inferences into the histogram: at most two drawn, each standing for half (one
        simulated process keeps thousands of devices; each draw costs as much as a message)."""
        h = self.hist
        for k in range(min(n, 2)):
            weight = n // 2 + (n % 2 if k == 0 else 0) if n > 1 else n
            value = self._latency()
            i = bucket_index(value, h.schema)
            h.buckets[i] = h.buckets.get(i, 0) + weight
            h.count += weight
            h.sum_s += value * weight
            h.max_s = max(h.max_s, value)

    def telemetry(self, now: float) -> bytes:
        window = max(now - self._last_telemetry, 1e-3)
        self._last_telemetry = now
        n = 0
        if self.active:
            mean = self.rate_per_s * window
            n = max(0, round(self.rng.gauss(mean, math.sqrt(mean))))
            self._add(n)
            self.count += n
            h = self.hist
            p50, p95, p99 = (None if v is None else round(v * 1000, 4)
                             for v in h.quantiles((0.5, 0.95, 0.99)))
            inference = {
                "count_total": self.count, "count_interval": n, "throughput_per_s": round(n / window, 3),
                "errors_total": self.errors, "errors_by_kind": {"input": 0, "runtime": 0, "busy": 0},
                "latency_samples": h.count, "latency_p50_ms": p50, "latency_p95_ms": p95,
                "latency_p99_ms": p99,
                "latency_max_ms": round(h.max_s * 1000, 4),
                "latency_mean_ms": round(h.sum_s / h.count * 1000, 4) if h.count else None,
                "latency_histogram": h.as_dict(), "cold_start": COLD_START}
        else:
            inference = {"count_total": 0, "count_interval": 0, "throughput_per_s": 0.0, "errors_total": 0}
        busy = min(1.0, n * self.base_s / window)  # the share of the window spent computing
        temperature = round(40 + 25 * busy + self.rng.gauss(0, 0.3), 1)
        return messages.dumps({
            "schema": messages.TELEMETRY, "device_id": self.device_id, "ts": now,
            "interval_s": self.interval_s, "model": self.active, "runtime": RUNTIME if self.active else None,
            "delegate": self._delegation if self.active else None, "inference": inference,
            "system": {"process_cpu_percent": round(100 * busy, 1),
                       "system_cpu_percent": round(100 * busy + 3, 1),
                       "rss_bytes": 60_000_000, "temperature_c": temperature,
                       "temperature_source": "simulated", "temperatures_c": {"cpu-thermal": temperature}},
            "power": self._power(window, n, busy), **CONSTANT,
        })

    def _power(self, window: float, n: int, busy: float) -> dict[str, Any]:
        watts = self.profile.power
        if "idle_w" not in watts:
            return {"power_source": None, "reason": f"the {self.profile.name} profile has no power figures"}
        on_accelerator = self.profile.accelerator.kind != "none"
        full = watts.get("cpu_full_w", watts["idle_w"])
        load = busy * (0.1 if on_accelerator else 1.0)  # an accelerator leaves the CPU nearly idle
        avg = watts["idle_w"] + (full - watts["idle_w"]) * load
        if on_accelerator:
            avg += watts.get("accelerator_active_w", 0.0) * busy
        avg *= self._factor(self.behaviour.hungrier) if n else 1.0
        energy = avg * window
        return {"power_source": f"estimated:{self.profile.name}", "window_s": round(window, 3),
                "energy_j": round(energy, 4), "power_avg_w": round(avg, 3), "inferences": n,
                "energy_per_inference_mj": round(energy / n * 1000, 3) if n else None,
                "energy_above_idle_per_inference_mj":
                    round((avg - watts["idle_w"]) * window / n * 1000, 3) if n else None,
                "idle_power_w": watts["idle_w"], "idle_power_source": f"estimated:{self.profile.name}"}
