"""Power and energy for telemetry: the best source this board has (a sensor, else the estimate
from the board profiles' sourced constants), read once per telemetry window.

The estimate's constants come from the profiles the agent runs with: the board's (idle and
full-load watts) plus each accelerator's found on it (what it adds while it computes), e.g.
rpi4 + coral-usb. A figure is labelled `measured:<sensor>` or `estimated:<profiles>`; where
there is neither a sensor nor a sourced constant, telemetry says so instead of a number.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from edgefleet.agent.config import BoardSettings
from edgefleet.devices.detect import Detection, detect_board
from edgefleet.devices.power import EnergyMeter, PowerModel, pick_source, read_edgetpu_thermal, read_throttled
from edgefleet.devices.profiles import Profile, load_profile

log = logging.getLogger("edgefleet.agent")
SAMPLE_EVERY_S = 1.0  # sampled sensors integrate between readings: one a second is plenty


def board_setup(settings: BoardSettings) -> tuple[Detection, PowerTelemetry]:
    """What this board is (detected; the config's profile wins) and its power telemetry."""
    detection = detect_board(settings.root)
    return detection, PowerTelemetry(board_profiles(settings, detection), settings.root, settings.vcgencmd)


def board_profiles(settings: BoardSettings, detection: Detection) -> list[Profile]:
    """The board's profile (the config's, else the detected one) and those of accelerators
    found beside it: the board first (its power figures win), then each accelerator."""
    board = settings.profile or detection.profile
    names = [board, *(a.profile for a in detection.accelerators if a.profile != board)]
    return [load_profile(n) for n in dict.fromkeys(names)]


def power_model(profiles: list[Profile]) -> tuple[PowerModel | None, str | None]:
    """The estimate from PROFILES (board first, then accelerators), or None and why not."""
    watts: dict[str, float] = {}
    sources: dict[str, str] = {}
    for profile in profiles:
        for key, value in profile.power.items():
            if key not in watts:  # the board's own figure wins over an accelerator profile's
                watts[key], sources[key] = value, profile.power_sources[key]
    name = "+".join(p.name for p in profiles)
    try:
        return PowerModel.from_figures(name, watts, sources), None
    except ValueError as exc:
        return None, f"no power sensor found and no power estimate for {name}: {exc}"


class PowerTelemetry:
    """One energy window per telemetry message; never raises into the agent's loop."""

    def __init__(self, profiles: list[Profile], root: str | Path = "/", vcgencmd: str = "vcgencmd"):
        self._root, self._vcgencmd = root, vcgencmd
        self.profiles = [p.name for p in profiles]
        self._sampled_at = time.monotonic()
        model, self.reason = power_model(profiles)
        source = pick_source(model, root=root, vcgencmd=vcgencmd)
        self.meter = EnergyMeter(source) if source is not None else None
        if source is not None:
            self.reason = None  # a sensor was found: the estimate's absence does not matter
        elif self.reason is None:
            self.reason = "no power sensor found and no power estimate"
        if self.meter is not None and not self.meter.start():
            self.reason, self.meter = f"{source.label}: could not be read", None  # type: ignore[union-attr]

    @property
    def label(self) -> str | None:
        return self.meter.label if self.meter else None

    def sample(self) -> None:
        """Called on every turn of the agent's loop; reads the sensor once a second at most."""
        now = time.monotonic()
        if self.meter is not None and now - self._sampled_at >= SAMPLE_EVERY_S:
            self._sampled_at = now
            try:
                self.meter.sample()
            except Exception:  # a sensor that fails now and then must not stop the agent
                log.exception("power sample failed")

    def window(self, inferences: int, accelerator_busy_s: float) -> dict[str, Any]:
        """This window's figures (energy, watts, mJ per inference and above idle) and the next begins."""
        if self.meter is None:
            return {"power_source": None, "reason": self.reason}
        try:
            window = self.meter.lap(inferences=inferences, accelerator_busy_s=accelerator_busy_s)
        except Exception as exc:
            log.exception("power window failed")
            return {"power_source": None, "reason": f"{self.meter.label}: {exc}"}
        if window is None:
            return {"power_source": None, "reason": f"{self.meter.label}: no reading in this window"}
        return window.as_dict()

    def board_state(self) -> dict[str, Any]:
        """Throttling (Raspberry Pi firmware) and the Edge TPU's temperature, where there are."""
        state: dict[str, Any] = {}
        throttled = read_throttled(self._vcgencmd)
        if throttled is not None:
            state["throttling"] = throttled.as_dict()
        tpus = read_edgetpu_thermal(self._root)
        if tpus:
            state["edgetpu_thermal"] = [t.as_dict() for t in tpus]
        return state
