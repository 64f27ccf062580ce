"""What the agent tells the fleet: the retained `reported` state (what runs, the install
in progress, the last error) and periodic telemetry (see docs/protocol.md).

Progress reports are rate-limited (one a second while a download runs); state changes
are sent at once (`force`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgefleet.agent.installer import ServingModel
from edgefleet.agent.power import PowerTelemetry
from edgefleet.agent.telemetry import ModelStats, SystemSampler, telemetry_payload
from edgefleet.protocol import messages

log = logging.getLogger("edgefleet.agent")
REPORT_EVERY_S = 1.0
BUSY_STATES = ("downloading", "verifying", "self-testing")
INSTALL_START = {"progress": 0.0, "chunks_have": 0, "chunks_total": None, "chunks_resumed": 0,
                 "chunks_refetched": 0}


@dataclass(frozen=True)
class Context:
    """What the reporter reads from the agent at the moment it reports."""

    serving: ServingModel | None
    desired_bundle_id: str | None
    desired_source: str | None
    previous: str | None
    agent: dict[str, Any]
    desired_signed_by: str | None = None


class Reporter:
    def __init__(self, device_id: str, publish: Callable[[bytes], None], context: Callable[[], Context],
                 monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.device_id = device_id
        self._publish = publish  # sends a `reported` payload (retained)
        self._context = context
        self._monotonic, self._wall = monotonic, wall
        self.install: dict[str, Any] | None = None
        self.last_error: dict[str, Any] | None = None
        self._last_sent = -REPORT_EVERY_S
        self._due = False

    def set_install(self, bundle_id: str, state: str, force: bool = False, **extra: Any) -> None:
        """Every documented field at every stage: the last known figures of this bundle's
        install (`chunks_total` is null until its manifest has arrived)."""
        known = self.install if self.install and self.install["bundle_id"] == bundle_id else INSTALL_START
        self.install = {**{k: known.get(k) for k in INSTALL_START}, "bundle_id": bundle_id,
                        "state": state, "updated_at": self._wall(), **extra}
        self.report(force)

    def clear_install(self) -> None:
        self.install = None

    def record_error(self, bundle_id: str | None, stage: str, reason: str, publish: bool = True) -> None:
        self.last_error = {"bundle_id": bundle_id, "stage": stage, "reason": reason, "at": self._wall()}
        if publish:
            log.error("%s", reason)
            self.report(force=True)

    def report(self, force: bool = False) -> None:
        now = self._monotonic()
        if not force and now - self._last_sent < REPORT_EVERY_S:
            self._due = True  # sent by flush() once the second is over
            return
        self._last_sent, self._due = now, False
        self._publish(self.payload())

    def flush(self) -> None:
        if self._due and self._monotonic() - self._last_sent >= REPORT_EVERY_S:
            self.report(force=True)

    def state(self, serving: ServingModel | None) -> str:
        install = self.install
        if install and (install["state"] in BUSY_STATES or install["state"] == "failed"):
            return str(install["state"])
        return "active" if serving else "idle"

    def payload(self) -> bytes:
        ctx = self._context()
        serving = ctx.serving
        active = None
        if serving:
            active = {**serving.info(), "selftest": serving.selftest.as_dict(),
                      "runtime": serving.runtime_info(), "delegate": serving.model.delegate.as_dict()}
        return messages.dumps({
            "schema": messages.REPORTED, "device_id": self.device_id, "ts": self._wall(),
            "state": self.state(serving), "active": active, "install": self.install,
            "desired": {"bundle_id": ctx.desired_bundle_id, "source": ctx.desired_source,
                        "signed_by": ctx.desired_signed_by},
            "previous": ctx.previous, "last_error": self.last_error, "agent": ctx.agent,
        })


def telemetry(device_id: str, interval_s: float, serving: ServingModel | None, system: SystemSampler,
              power: PowerTelemetry | None = None, agent: dict[str, Any] | None = None) -> bytes:
    """Telemetry of the model that serves now; its figures start at its activation."""
    model = runtime = delegate = None
    stats = serving.stats if serving else ModelStats()
    inference = stats.snapshot()
    if serving:
        model, runtime = serving.info(), serving.runtime_info()
        delegate = serving.model.delegate.as_dict()
        first = serving.model.cold_start_seconds
        inference["cold_start"] = {  # apart from the steady state above
            "load_ms": round(serving.model.load_seconds * 1000, 4),
            "first_inference_ms": round(first * 1000, 4) if first is not None else None,
        }
    sample = system.sample()
    energy = None
    if power is not None:
        # the accelerator is busy while it invokes; on the CPU the estimate's CPU share covers it
        on_accelerator = delegate is not None and delegate.get("active") not in (None, "cpu")
        energy = power.window(inference["count_interval"], stats.interval_invoke_s if on_accelerator else 0.0)
        sample.update(power.board_state())
    return telemetry_payload(device_id, interval_s, model, runtime, delegate, inference, sample, energy,
                             agent)
