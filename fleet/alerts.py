"""Fleet alerts, worked out by the monitor (and the exporter) from what it holds: a device
offline or stale, a latency or energy regression against the median of its version's
devices, thermal throttling, a fall-back to the CPU, a failed install. Shown in the live view,
served as `edgefleet_alert` to Prometheus, and, with `--publish-alerts`, published retained on
`<prefix>/alerts/<device>/<kind>` while they last (docs/protocol.md, "Alerts").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from edgefleet.fleet.fleet_view import MIN_LATENCY_SAMPLES, MIN_WINDOW_INFERENCES, FleetView

SCHEMA = "edgefleet.alert/1"
LATENCY_FACTOR = 1.5  # a device's p95 above this times the median of its version's devices' p95
ENERGY_FACTOR = 1.3
MIN_PEERS = 2  # a version's fleet figure means something with at least this many devices

KINDS = {"offline": "warning", "stale": "warning", "latency_regression": "warning",
         "energy_regression": "warning", "throttled": "warning", "cpu_fallback": "critical",
         "install_failed": "warning"}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def evaluate(view: FleetView, version_rows: list[dict[str, Any]], rows: list[dict[str, Any]] | None = None
             ) -> list[dict[str, Any]]:
    """The alerts that hold now, one per device and kind: kind, device_id, severity, summary,
    figures. VERSION_ROWS: fleet_view.versions(view); ROWS: view.rows() when already read."""
    rows = view.rows() if rows is None else rows
    fleet = {(v["model_name"], v["model_version"]): v for v in version_rows}
    with view.lock:
        delegates = {d: _dict(_dict(v.telemetry).get("delegate")) for d, v in view.devices.items()}
    out = []

    def alert(row: dict[str, Any], kind: str, summary: str, **figures: Any) -> None:
        out.append({"kind": kind, "device_id": row["device_id"], "severity": KINDS[kind], "summary": summary,
                    "model": row["model_name"], "version": row["model_version"], "figures": figures})

    for row in rows:
        d = row["device_id"]
        if row["status"] in ("offline", "stale"):
            age = row["last_seen_age_s"]
            said = f", last heard from {age:.0f} s ago" if age is not None else ""
            alert(row, row["status"], f"{d} is {row['status']}{said}", last_seen_at=row["last_seen_at"])
            continue  # its figures are old: no regression judged on them
        if row["install"] == "failed":
            reason = row["last_error"] or "no reason given"
            alert(row, "install_failed", f"an install failed on {d}: {reason}")
        if row["throttled"]:
            alert(row, "throttled", f"{d} is throttled (the board reports it)",
                  temperature_c=row["temperature_c"])
        delegate = delegates.get(d, {})
        if delegate.get("requested") not in (None, "cpu") and delegate.get("on_cpu") is True:
            alert(row, "cpu_fallback", f"{d} runs on the CPU, not {delegate['requested']}: "
                  f"{delegate.get('fallback_reason') or 'no reason given'}")
        peers = fleet.get((row["model_name"], row["model_version"]))
        if not peers or peers["devices"] < MIN_PEERS:
            continue
        mine, theirs = row["latency_p95_ms"], peers["device_p95_median_ms"]
        if (row["latency_samples"] or 0) < MIN_LATENCY_SAMPLES:
            mine = None
        if mine is not None and theirs and mine > LATENCY_FACTOR * theirs:
            alert(row, "latency_regression", f"{d}: p95 {mine:.3g} ms, {mine / theirs:.1f}x the median "
                  f"{theirs:.3g} ms of its version's {peers['devices']} devices", p95_ms=mine,
                  fleet_p95_ms=theirs)
        mine, theirs = row["energy_per_inference_mj"], peers["device_mj_median"]
        if (row["window_inferences"] or 0) < MIN_WINDOW_INFERENCES:
            mine = None
        if mine is not None and theirs and mine > ENERGY_FACTOR * theirs:
            alert(row, "energy_regression", f"{d}: {mine:.3g} mJ per inference, {mine / theirs:.1f}x the "
                  f"median {theirs:.3g} mJ of its version's devices", mj_per_inference=mine,
                  fleet_mj_per_inference=theirs)
    return out


@dataclass
class AlertBook:
    """Which alerts fire since when; tells what started and what ended at each update, and
    publishes them when given PUBLISH(topic, payload) (empty payload: the alert ended)."""

    prefix: str
    publish: Callable[[str, bytes], None] | None = None
    firing: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def update(self, alerts: list[dict[str, Any]], now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        seen = set()
        for a in alerts:
            key = (a["device_id"], a["kind"])
            seen.add(key)
            if key not in self.firing:
                self.firing[key] = {**a, "schema": SCHEMA, "state": "firing", "since": now}
                self._send(key, orjson.dumps(self.firing[key]))
            else:  # figures change all the time: the retained message keeps the first ones
                self.firing[key].update(summary=a["summary"], figures=a["figures"])
        for key in [k for k in self.firing if k not in seen]:
            del self.firing[key]
            self._send(key, b"")
        return sorted(self.firing.values(), key=lambda a: (a["device_id"], a["kind"]))

    def adopt(self, client: Any) -> None:
        """Take the alerts an earlier run left retained on the broker as firing, so that the next
        update clears those that no longer hold (and keeps their `since`)."""
        def on_alert(client: Any, userdata: Any, msg: Any) -> None:
            if not msg.retain or not msg.payload:
                return
            try:
                body = orjson.loads(msg.payload)
            except orjson.JSONDecodeError:
                return
            parts = msg.topic.split("/")
            if isinstance(body, dict) and body.get("schema") == SCHEMA and len(parts) >= 2:
                self.firing.setdefault((parts[-2], parts[-1]), body)
        pattern = f"{self.prefix}/alerts/+/+"
        client.message_callback_add(pattern, on_alert)
        client.subscribe(pattern, qos=1)

    def topic(self, device_id: str, kind: str) -> str:
        return f"{self.prefix}/alerts/{device_id}/{kind}"

    def _send(self, key: tuple[str, str], payload: bytes) -> None:
        if self.publish is not None:
            self.publish(self.topic(*key), payload)


def publishing_book(client: Any, prefix: str) -> AlertBook:
    """An AlertBook that publishes retained alerts with CLIENT (paho), after adopting what an
    earlier run left on the broker."""
    def publish(topic: str, payload: bytes) -> None:
        client.publish(topic, payload, qos=1, retain=True)
    book = AlertBook(prefix, publish)
    book.adopt(client)
    return book
