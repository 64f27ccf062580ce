"""What the monitor knows of the fleet: each device's latest status, reported state, telemetry
and desired state, taken in on paho's thread at the rate they arrive, and read by the live
view, `--json` and the aggregates at their own pace.

Taking a message in only parses its JSON and stores it (and, for telemetry, how late it
came): everything derived is computed when it is read, so that drawing the view never
holds up ingest.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from edgefleet.protocol.histogram import Histogram, HistogramError
from edgefleet.protocol.topics import Topics

LEAVES = ("status", "reported", "telemetry", "desired")
STALE_AFTER_INTERVALS = 3  # a device that missed this many telemetry intervals is shown stale
STALE_MIN_S = 5.0
LAG_SAMPLES = 20_000  # recent publish-to-ingest delays kept for the percentiles
# fewer than these and a device's figure is noise, not a regression: a p95 of a handful of
# inferences, or a window's energy over two inferences instead of twenty
MIN_LATENCY_SAMPLES = 50
MIN_WINDOW_INFERENCES = 10


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def desired_bundle(message: dict[str, Any] | None) -> dict[str, Any] | None:
    """The bundle a desired-state message names, for display only: the devices check the
    signature; the monitor shows what was asked for (`previous` for a rollback)."""
    body = _dict(_dict(message).get("body"))
    bundle = body.get("bundle")
    if bundle == "previous":
        return {"id": None, "name": None, "version": "previous"}
    return bundle if isinstance(bundle, dict) else None


@dataclass
class DeviceView:
    device_id: str
    status: dict[str, Any] | None = None
    reported: dict[str, Any] | None = None
    telemetry: dict[str, Any] | None = None
    desired: dict[str, Any] | None = None  # the device's own desired-state message
    telemetry_received_at: float | None = None

    def last_seen_at(self) -> float | None:
        """The newest time the device itself stamped on a message (its clock). The `offline`
        last will carries no time: the broker sends it when it notices the device is gone."""
        stamps = [_number(m.get("ts")) for m in (self.status, self.reported, self.telemetry) if m]
        numbers = [s for s in stamps if s is not None]
        return max(numbers) if numbers else None

    def groups(self) -> list[str]:
        groups = _dict(_dict(self.reported).get("agent")).get("groups")
        return [g for g in groups if isinstance(g, str)] if isinstance(groups, list) else []

    def status_now(self, now: float) -> str:
        """online, stale (online but silent for a few telemetry intervals), offline, stopped,
        or unknown (no status seen)."""
        state = _dict(self.status).get("state")
        if not isinstance(state, str):
            return "unknown"
        if state == "online":
            interval = _number(_dict(self.telemetry).get("interval_s")) or 10.0
            seen = self.last_seen_at()
            if seen is not None and now - seen > max(STALE_AFTER_INTERVALS * interval, STALE_MIN_S):
                return "stale"
        return state

    def summary(self, now: float | None = None,
                group_desired: dict[str, Any] | None = None) -> dict[str, Any]:
        """One flat row. GROUP_DESIRED: the group desired-state messages by group, for the
        bundle a device without its own desired state follows."""
        now = time.time() if now is None else now
        tel, rep = _dict(self.telemetry), _dict(self.reported)
        inf, sysm, power = _dict(tel.get("inference")), _dict(tel.get("system")), _dict(tel.get("power"))
        active = _dict(rep.get("active"))
        delegate = _dict(tel.get("delegate")) or _dict(active.get("delegate"))
        delegated = _dict(delegate.get("delegated"))
        install = _dict(rep.get("install"))
        want = desired_bundle(self.desired)
        for g in self.groups():
            if want is None:
                want = desired_bundle((group_desired or {}).get(g))
        asked = _dict(rep.get("desired")).get("bundle_id")
        if want is None and asked and asked != active.get("bundle_id"):
            want = {"id": asked, "version": "?"}  # its desired-state message not seen (yet)
        seen = self.last_seen_at()
        return {
            "device_id": self.device_id,
            "status": self.status_now(now),
            "state": rep.get("state"),
            "groups": self.groups(),
            "bundle_id": active.get("bundle_id"),
            "model_name": active.get("name"),
            "model_version": active.get("version"),
            "desired_bundle_id": want.get("id") if want else None,
            "desired_version": want.get("version") if want else None,
            "install": install.get("state"),
            "install_progress": install.get("progress"),
            "last_error": _dict(rep.get("last_error")).get("reason"),
            "runtime": _dict(tel.get("runtime") or active.get("runtime")).get("name"),
            "delegate": delegate.get("active"),
            "delegated_share": _number(delegated.get("work_share")),
            "inference_count": inf.get("count_total"),
            "throughput_per_s": _number(inf.get("throughput_per_s")),
            "errors": inf.get("errors_total"),
            "latency_p50_ms": _number(inf.get("latency_p50_ms")),
            "latency_p95_ms": _number(inf.get("latency_p95_ms")),
            "latency_p99_ms": _number(inf.get("latency_p99_ms")),
            "power_w": _number(power.get("power_avg_w")),
            "energy_per_inference_mj": _number(power.get("energy_per_inference_mj")),
            "power_source": power.get("power_source"),
            "window_inferences": _number(power.get("inferences")),
            "latency_samples": _number(inf.get("latency_samples")),
            "process_cpu_percent": _number(sysm.get("process_cpu_percent")),
            "rss_bytes": sysm.get("rss_bytes"),
            "temperature_c": _number(sysm.get("temperature_c")),
            "throttled": _throttled(sysm.get("throttling")),
            "telemetry_age_s":
                round(now - self.telemetry_received_at, 1) if self.telemetry_received_at else None,
            "last_seen_at": seen,
            "last_seen_age_s": round(now - seen, 1) if seen is not None else None,
            "simulated": bool(tel.get("simulated") or rep.get("simulated")),
        }


def _throttled(throttling: Any) -> bool | None:
    """Throttled or frequency-capped now (vcgencmd's flags), None where the board says nothing."""
    t = _dict(throttling)
    if not t:
        return None
    flags = ("throttled", "arm_frequency_capped", "soft_temperature_limit")
    return any(t.get(flag) is True for flag in flags)


@dataclass
class IngestStats:
    """How the monitor keeps up: messages taken in, unreadable ones, and how late telemetry came
    (its receipt minus the device's `ts`: both clocks must agree for this to mean anything)."""

    messages: int = 0
    telemetry: int = 0
    unreadable: int = 0
    started_at: float = field(default_factory=time.time)
    lags: deque[float] = field(default_factory=lambda: deque(maxlen=LAG_SAMPLES))
    every_lag: list[float] | None = None  # a list here keeps them all (benchmarks/monitor_load_bench.py)

    def as_dict(self) -> dict[str, Any]:
        lags = sorted(self.lags)
        def pick(q: float) -> float | None:
            return round(lags[min(len(lags) - 1, int(q * len(lags)))], 4) if lags else None
        seconds = max(time.time() - self.started_at, 1e-9)
        return {"messages": self.messages, "telemetry": self.telemetry, "unreadable": self.unreadable,
                "messages_per_s": round(self.messages / seconds, 1), "lag_p50_s": pick(0.5),
                "lag_p99_s": pick(0.99), "lag_max_s": round(lags[-1], 4) if lags else None}


@dataclass
class FleetView:
    topics: Topics
    devices: dict[str, DeviceView] = field(default_factory=dict)
    group_desired: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    connected: bool = True
    stats: IngestStats = field(default_factory=IngestStats)
    # called after each device message is taken in, with (device_id, leaf, body, the body before):
    # the history recorder (history.py) listens here
    listeners: list[Callable[[str, str, dict[str, Any] | None, dict[str, Any] | None], None]] = field(
        default_factory=list)

    def subscriptions(self) -> list[str]:
        return [*(self.topics.all_devices(leaf) for leaf in LEAVES), f"{self.topics.prefix}/groups/+/desired"]

    def handle(self, topic: str, payload: bytes, received_at: float | None = None) -> None:
        """Take one message in (paho's thread): a monitor shows what it can read and never
        crashes on a bad message. An empty retained status and reported state mean the device
        was forgotten (`edgefleet devices forget`)."""
        received_at = time.time() if received_at is None else received_at
        self.stats.messages += 1
        leaf = topic.rsplit("/", 1)[-1]
        group = self.topics.group_of(topic) if leaf == "desired" else None
        device_id = None if group else self.topics.device_of(topic)
        if (device_id is None and group is None) or leaf not in LEAVES:
            return
        try:
            body = orjson.loads(payload) if payload else None
        except orjson.JSONDecodeError:
            self.stats.unreadable += 1
            return
        if body is not None and not isinstance(body, dict):
            self.stats.unreadable += 1
            return
        with self.lock:
            if group is not None:
                if body is None:
                    self.group_desired.pop(group, None)
                else:
                    self.group_desired[group] = body
                return
            assert device_id is not None
            view = self.devices.get(device_id)
            if body is None and leaf in ("status", "reported"):
                if view is not None:
                    setattr(view, leaf, None)
                    if view.status is None and view.reported is None:
                        del self.devices[device_id]  # forgotten: nothing retained says it exists
                return
            if view is None:
                view = self.devices[device_id] = DeviceView(device_id)
            before = getattr(view, leaf)
            setattr(view, leaf, body)
            if leaf == "telemetry" and body is not None:
                view.telemetry_received_at = received_at
                self.stats.telemetry += 1
                ts = _number(body.get("ts"))
                if ts is not None and not body.get("replayed"):  # a replayed one is late by design
                    self.stats.lags.append(received_at - ts)
                    if self.stats.every_lag is not None:
                        self.stats.every_lag.append(received_at - ts)
        for listener in self.listeners:
            listener(device_id, leaf, body, before)

    def forget(self, device_id: str) -> bool:
        with self.lock:
            return self.devices.pop(device_id, None) is not None

    def rows(self, now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        with self.lock:
            views = [self.devices[d] for d in sorted(self.devices)]
            groups = dict(self.group_desired)
        return [v.summary(now, groups) for v in views]

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        rows = self.rows(now)
        with self.lock:
            raw = {d: {"status": v.status, "reported": v.reported, "telemetry": v.telemetry,
                       "desired": v.desired} for d, v in sorted(self.devices.items())}
        return {"ts": now, "devices": rows, "versions": versions(self), "monitor": self.stats.as_dict(),
                "raw": raw}

    def complete(self) -> bool:
        """Every device that says it is online has sent telemetry."""
        with self.lock:
            online = [v for v in self.devices.values() if (v.status or {}).get("state") == "online"]
            return bool(online) and all(v.telemetry for v in online)


def versions(view: FleetView) -> list[dict[str, Any]]:
    """Per model version across the fleet: devices, throughput, latency from the merged
    histograms (every inference since each device activated it), energy per inference over
    the latest telemetry windows (their energy over their inferences), errors."""
    with view.lock:
        telemetry = [v.telemetry for v in view.devices.values() if v.telemetry]
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for tel in telemetry:
        model = _dict(tel.get("model"))
        name, version = model.get("name"), model.get("version")
        if not isinstance(name, str) or not isinstance(version, str):
            continue
        g = groups.setdefault((name, version), {"devices": 0, "throughput": 0.0, "energy_j": 0.0,
                                                "energy_inferences": 0, "errors": 0, "hist": None,
                                                "p95s": [], "mjs": []})
        inf, power = _dict(tel.get("inference")), _dict(tel.get("power"))
        g["devices"] += 1
        # the medians take the devices whose figure rests on enough inferences (so does alerts.py)
        p95, mj = _number(inf.get("latency_p95_ms")), _number(power.get("energy_per_inference_mj"))
        if p95 is not None and (_number(inf.get("latency_samples")) or 0) >= MIN_LATENCY_SAMPLES:
            g["p95s"].append(p95)
        if mj is not None and (_number(power.get("inferences")) or 0) >= MIN_WINDOW_INFERENCES:
            g["mjs"].append(mj)
        g["throughput"] += _number(inf.get("throughput_per_s")) or 0.0
        g["errors"] += int(_number(inf.get("errors_total")) or 0)
        energy, count = _number(power.get("energy_j")), _number(power.get("inferences"))
        if energy is not None and count:
            g["energy_j"] += energy
            g["energy_inferences"] += int(count)
        try:
            h = Histogram.from_dict(inf.get("latency_histogram"))
        except HistogramError:
            continue
        g["hist"] = h if g["hist"] is None else g["hist"].merge(h)
    out = []
    for (name, version), g in sorted(groups.items()):
        h: Histogram | None = g["hist"]
        q = h.quantiles((0.5, 0.95, 0.99)) if h else [None, None, None]
        out.append({
            "model_name": name, "model_version": version, "devices": g["devices"],
            "throughput_per_s": round(g["throughput"], 2), "inferences": h.count if h else 0,
            **{f"latency_p{p}_ms": None if v is None else round(v * 1000, 4)
               for p, v in zip((50, 95, 99), q, strict=True)},
            "energy_per_inference_mj":
                round(g["energy_j"] / g["energy_inferences"] * 1000, 3) if g["energy_inferences"] else None,
            "errors": g["errors"],
            # the typical device, which one slow or hungry device does not move much: what alerts.py
            # compares each device with
            "device_p95_median_ms": statistics.median(g["p95s"]) if g["p95s"] else None,
            "device_mj_median": statistics.median(g["mjs"]) if g["mjs"] else None,
        })
    return out
