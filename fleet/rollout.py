"""Staged rollouts (`edgefleet rollout`): a new bundle to a group's devices stage by stage,
canaries first, promoted when the gate holds over the bake time against the figures the
previous version had on the same devices, and rolled back on the devices it touched when
it does not. Every decision is recorded with the figures it was made on (rollout_state.py
keeps them on disk, so a restarted operator process carries on).

How a device is told: a signed desired state of its own naming the new bundle (a device's
own desired state wins over its group's). Once the last stage has passed, the group's desired
state names the new bundle and the devices' own are cleared, so devices that join later get
it too. Rolling back: `"bundle": "previous"` for each device that activated the new bundle
(it goes back from its own disk), and the devices' own desired states cleared once they run
the old bundle again (their group's still names it).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from edgefleet.fleet.desired import clear, roll_back
from edgefleet.fleet.fleet_view import DeviceView, FleetView
from edgefleet.fleet.publish import QOS, desired_targets, wait_published
from edgefleet.fleet.rollout_gate import judge, parse_gate
from edgefleet.fleet.rollout_state import RolloutState, RolloutStore
from edgefleet.protocol.desired import BundleRef, desired_payload
from edgefleet.protocol.histogram import Histogram, HistogramError
from edgefleet.protocol.signing import Signer
from edgefleet.protocol.topics import Topics

log = logging.getLogger("edgefleet.rollout")
MIN_SAMPLES = 50  # inferences a latency term needs before it is judged
INSTALL_TIMEOUT_S = 600.0  # a stage's devices must all run the bundle within this, or it rolls back
BACK_TIMEOUT_S = 120.0  # how long a rollback waits for the devices before it clears their desired states


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def figures(view: DeviceView | None, bundle_id: str) -> dict[str, Any]:
    """What the gate reads of one device for BUNDLE_ID: latency quantiles from its histogram (ms)
    and the number of inferences behind them, energy per inference of its latest window, its
    error count, and whether it passed its self-test of the bundle (None: not known yet)."""
    if view is None:
        return {}
    tel, rep = _dict(view.telemetry), _dict(view.reported)
    out: dict[str, Any] = {"selftest": None}
    active, install = _dict(rep.get("active")), _dict(rep.get("install"))
    if active.get("bundle_id") == bundle_id:
        out["selftest"] = _dict(active.get("selftest")).get("passed") is True
    elif install.get("bundle_id") == bundle_id and install.get("state") == "failed":
        out["selftest"] = False
        out["failed"] = f"{install.get('stage')}: {install.get('reason')}"
    if _dict(tel.get("model")).get("bundle_id") != bundle_id:
        return out
    inf, power = _dict(tel.get("inference")), _dict(tel.get("power"))
    try:
        h = Histogram.from_dict(inf.get("latency_histogram"))
    except HistogramError:
        h = None
    out["samples"] = h.count if h else 0
    if h and h.count >= MIN_SAMPLES:
        for name, v in zip(("p50_ms", "p95_ms", "p99_ms"), h.quantiles((0.5, 0.95, 0.99)), strict=True):
            out[name] = None if v is None else round(v * 1000, 5)
    mj = power.get("energy_per_inference_mj")
    out["mj_per_inference"] = mj if isinstance(mj, (int, float)) and not isinstance(mj, bool) else None
    errors = inf.get("errors_total")
    out["errors"] = errors if isinstance(errors, int) and not isinstance(errors, bool) else None
    return out


class Runner:
    """Drives one rollout: call step() until the rollout is finished."""

    def __init__(self, state: RolloutState, store: RolloutStore, client: mqtt.Client, view: FleetView,
                 key: Signer, say: Callable[[str], None] = log.info):
        self.state, self.store, self.client, self.view = state, store, client, view
        self.key, self.say = key, say
        self.topics = Topics(state.prefix)
        self.terms = parse_gate(state.gate)
        b = state.bundle
        self.ref = BundleRef(b["name"], b["version"], b["sha256"])
        self._back_since: float | None = None

    # --- what the devices are told
    def _desired(self, devices: list[str]) -> None:
        for kind, who, topic in desired_targets(self.topics, devices, ()):
            payload = desired_payload(self.key, kind, who, self.ref, set_by=self._by)
            info = self.client.publish(topic, payload, qos=QOS, retain=True)
            wait_published(info, f"desired state of {who}")

    @property
    def _by(self) -> str:
        return f"edgefleet rollout {self.state.id}"

    def _finish_group(self) -> None:
        group = self.state.group
        payload = desired_payload(self.key, "group", group, self.ref, set_by=self._by)
        wait_published(self.client.publish(self.topics.group_desired(group), payload, qos=QOS, retain=True),
                       f"desired state of group {group}")
        clear(self.client, self.topics, devices=self.state.touched)

    def _roll_back(self, reason: str, evidence: dict[str, Any]) -> None:
        s = self.state
        on_new = [d for d in s.touched if self._active(d) == self.ref.bundle_id]
        if on_new:
            roll_back(self.client, self.topics, self.key, devices=on_new)
        s.decide("roll back", reason, evidence)
        s.phase = "rolling-back"
        self.say(f"rolling back {', '.join(s.touched)}: {reason}")

    def _active(self, device: str) -> str | None:
        with self.view.lock:
            v = self.view.devices.get(device)
            return _dict(_dict(v.reported if v else None).get("active")).get("bundle_id")

    def _device(self, device: str) -> DeviceView | None:
        with self.view.lock:
            return self.view.devices.get(device)

    # --- one step
    def step(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        s = self.state
        request = self.store.take_request(s)
        if request:
            self._handle(request)
        if s.phase == "paused" or s.finished:
            return
        if s.phase == "rolling-back":
            self._settle_back(now)
        elif s.phase == "installing":
            self._installing(now)
        elif s.phase == "baking":
            self._baking(now)
        self.store.save(s)

    def _handle(self, request: str) -> None:
        s = self.state
        if request == "abort" and not s.finished:
            if s.phase == "paused":
                s.phase = s.paused_phase or "installing"
            self._roll_back("aborted by the operator", {})
            s.decisions[-1]["decision"] = "abort"
            s.paused_phase = "aborted"
        elif request == "pause" and s.phase in ("installing", "baking"):
            s.paused_phase, s.phase = s.phase, "paused"
            s.decide("pause", "paused by the operator")
            self.say("paused")
        elif request == "resume" and s.phase == "paused":
            s.phase = s.paused_phase or "installing"
            if s.phase == "baking":
                s.bake_started_at = time.time()  # the bake restarts: a pause is not time watched
            s.decide("resume", "resumed by the operator")
            self.say("resumed")
        self.store.save(s)

    def _installing(self, now: float) -> None:
        s = self.state
        wanted = s.devices[: s.stage_size()]
        new = [d for d in wanted if d not in s.touched]
        if new:
            self._desired(new)
            s.touched += new
            s.stage_started_at = now
            self.say(f"stage {s.stage + 1}/{len(s.stages)} ({100 * s.stages[s.stage]:.0f} %): "
                     f"{', '.join(new)} told to run {self.ref.name} {self.ref.version}")
        found = {d: figures(self._device(d), self.ref.bundle_id) for d in wanted}
        failed = {d: f["failed"] for d, f in found.items() if "failed" in f}
        if failed:
            self._roll_back(f"the install failed on {', '.join(failed)}", {"failed": failed})
            return
        if all(self._active(d) == self.ref.bundle_id for d in wanted):
            s.phase, s.bake_started_at = "baking", now
            self.say(f"stage {s.stage + 1}: every device runs it; baking {s.bake_s:g} s")
        elif s.stage_started_at is not None and now - s.stage_started_at > INSTALL_TIMEOUT_S:
            late = [d for d in wanted if self._active(d) != self.ref.bundle_id]
            self._roll_back(f"{', '.join(late)} did not run the bundle within {INSTALL_TIMEOUT_S:.0f} s", {})

    def _baking(self, now: float) -> None:
        s = self.state
        wanted = s.devices[: s.stage_size()]
        verdicts, holds = {}, True
        for d in wanted:
            new = figures(self._device(d), self.ref.bundle_id)
            if "failed" in new or self._active(d) != self.ref.bundle_id:
                self._roll_back(f"{d} no longer runs the bundle ({new.get('failed') or self._active(d)})",
                                {d: new})
                return
            verdicts[d] = {**judge(self.terms, new, s.baseline.get(d, {})), "figures": new,
                           "baseline": s.baseline.get(d, {})}
            holds &= verdicts[d]["holds"]
        if not holds:  # a failed term ends the bake at once: no need to watch a regression longer
            bad = [d for d, v in verdicts.items() if not v["holds"]]
            terms = sorted({t for d in bad for t, v in verdicts[d]["terms"].items()
                            if v["verdict"] == "fail"})
            self._roll_back(f"the gate failed on {', '.join(bad)} ({', '.join(terms)})", verdicts)
            return
        baked = now - (s.bake_started_at or now)
        if baked < s.bake_s:
            return
        lacking = [d for d, v in verdicts.items() if v["baseline"].get("samples", 0) >= MIN_SAMPLES
                   and v["figures"].get("samples", 0) < MIN_SAMPLES]
        if lacking and baked < 3 * s.bake_s:  # judge on figures, not on too few inferences
            return
        s.decide("promote" if s.stage + 1 < len(s.stages) else "complete",
                 f"the gate held on {len(wanted)} devices for {s.bake_s:g} s", verdicts)
        if s.stage + 1 < len(s.stages):
            s.stage += 1
            s.phase, s.bake_started_at = "installing", None
            self.say(f"stage {s.stage}: the gate held; promoting to {100 * s.stages[s.stage]:.0f} %")
        else:
            self._finish_group()
            s.phase = "done"
            self.say(f"done: {self.ref.name} {self.ref.version} runs on every device of {s.group}")

    def _settle_back(self, now: float) -> None:
        s = self.state
        self._back_since = self._back_since or now
        back = all(self._active(d) != self.ref.bundle_id for d in s.touched)
        if back or now - self._back_since > BACK_TIMEOUT_S:
            clear(self.client, self.topics, devices=s.touched)
            s.phase = "aborted" if s.paused_phase == "aborted" else "rolled-back"
            still = [d for d in s.touched if self._active(d) == self.ref.bundle_id]
            s.decide("rolled back", "every touched device runs the previous bundle again" if not still
                     else f"{', '.join(still)} did not go back within {BACK_TIMEOUT_S:.0f} s", {})
            self.say(f"{s.phase}: {s.decisions[-1]['reason']}")


def baseline(view: FleetView, devices: list[str]) -> dict[str, dict[str, Any]]:
    """What each device runs now and the figures the gate compares with."""
    out = {}
    for d in devices:
        with view.lock:
            v = view.devices.get(d)
        bundle_id = _dict(_dict(v.reported if v else None).get("active")).get("bundle_id")
        out[d] = {"bundle_id": bundle_id, **(figures(v, bundle_id) if bundle_id else {})}
        out[d].pop("selftest", None)
    return out


def parse_stages(text: str) -> list[float]:
    """'10%,50%,100%' -> [0.1, 0.5, 1.0]: rising shares of the group, the last 100 %."""
    wrong = f"stages {text!r}: give rising percentages ending at 100%, e.g. 10%,50%,100%"
    try:
        shares = [float(p.strip().rstrip("%")) / 100 for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(wrong) from None
    rising = all(a < b for a, b in itertools.pairwise(shares))
    if not shares or shares[-1] != 1.0 or shares[0] <= 0 or not rising:
        raise ValueError(wrong)
    return shares


def group_devices(view: FleetView, group: str) -> tuple[list[str], list[str]]:
    """The group's online devices in rollout order (by id: canaries first), and those not online."""
    rows = [r for r in view.rows() if group in r["groups"]]
    online = sorted(r["device_id"] for r in rows if r["status"] == "online")
    return online, sorted(r["device_id"] for r in rows if r["status"] != "online")


def new_state(rollout_id: str, bundle: dict[str, Any], group: str, prefix: str, stages: list[float],
              gate: str, bake_s: float, view: FleetView, devices: list[str]) -> RolloutState:
    parse_gate(gate)
    return RolloutState(rollout_id, bundle, group, prefix, stages, gate, bake_s, devices,
                        baseline(view, devices))
