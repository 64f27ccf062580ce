"""Energy over a window, for telemetry: joules, average watts and energy per inference, labelled.

    meter = EnergyMeter(pick_source(model))      # the best source this board has
    meter.start()
    ...                                          # serve; meter.sample() now and then
    window = meter.lap(inferences=n, accelerator_busy_s=busy)   # this window, next one begins
    window.as_dict()  # {"power_source": "measured:pi5-pmic", "energy_j": ..., ...}

Energy per inference is the window's energy divided by its inferences. The part above idle
subtracts an idle baseline (watts x the window's length) first: the estimate's own idle constant,
or a baseline the caller measured with `measure_idle` before serving. That figure's label is
the idle baseline's when the baseline is estimated, so a measured window minus an estimated idle
is never shown as a measurement. It can come out negative when the baseline is stale or noisy;
it is reported as it is, not clamped.

A meter belongs to one thread (the agent's telemetry loop); inference threads only count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgefleet.devices.power.estimate import Estimator
from edgefleet.devices.power.reading import Source, Window, is_measured


@dataclass(frozen=True)
class IdleBaseline:
    watts: float
    label: str


@dataclass(frozen=True)
class EnergyWindow:
    label: str  # measured:<sensor> | estimated:<model>
    seconds: float
    joules: float
    inferences: int = 0
    idle: IdleBaseline | None = None

    @property
    def average_watts(self) -> float | None:
        return self.joules / self.seconds if self.seconds > 0 else None

    @property
    def millijoules_per_inference(self) -> float | None:
        return 1000.0 * self.joules / self.inferences if self.inferences > 0 else None

    @property
    def above_idle_millijoules_per_inference(self) -> float | None:
        if self.idle is None or self.inferences <= 0:
            return None
        return 1000.0 * (self.joules - self.idle.watts * self.seconds) / self.inferences

    @property
    def above_idle_label(self) -> str | None:
        if self.idle is None:
            return None
        return self.label if is_measured(self.idle.label) else self.idle.label

    def as_dict(self) -> dict[str, Any]:
        """Telemetry keys: units in the names, numbers as numbers, None where there is no figure."""
        return {
            "power_source": self.label, "window_s": self.seconds, "energy_j": self.joules,
            "power_avg_w": self.average_watts, "inferences": self.inferences,
            "energy_per_inference_mj": self.millijoules_per_inference,
            "energy_above_idle_per_inference_mj": self.above_idle_millijoules_per_inference,
            "energy_above_idle_source": self.above_idle_label,
            "idle_power_w": self.idle.watts if self.idle else None,
            "idle_power_source": self.idle.label if self.idle else None,
        }


class EnergyMeter:
    """Windows of one source. start() opens one, stop() closes it, lap() does both at one instant."""

    def __init__(self, source: Source, *, idle: IdleBaseline | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.source = source
        if idle is None and isinstance(source, Estimator):  # the model's idle is the estimate's baseline
            idle = IdleBaseline(source.model.idle_w, source.label)
        self.idle = idle
        self._clock = clock
        self._window: Window | None = None
        self._started = 0.0

    @property
    def label(self) -> str:
        return self.source.label

    @property
    def running(self) -> bool:
        return self._window is not None

    def start(self) -> bool:
        """Open a window now; False when the source does not read (then stop() returns None)."""
        self._started = self._clock()
        self._window = self.source.open_window(self._started)
        return self._window is not None

    def sample(self) -> None:
        """Add a reading inside the window (sampled sensors integrate between readings)."""
        if self._window is not None:
            self._window.sample(self._clock())

    def stop(self, inferences: int = 0, accelerator_busy_s: float = 0.0) -> EnergyWindow | None:
        """Close the window; None when none was open or the source stopped reading."""
        window, self._window = self._window, None
        if window is None:
            return None
        now = self._clock()
        joules = window.finish(now, accelerator_busy_s)
        if joules is None:
            return None
        return EnergyWindow(self.label, now - self._started, joules, max(inferences, 0), self.idle)

    def lap(self, inferences: int = 0, accelerator_busy_s: float = 0.0) -> EnergyWindow | None:
        """Close this window and open the next, for periodic telemetry."""
        result = self.stop(inferences, accelerator_busy_s)
        self.start()
        return result


def measure_idle(source: Source, seconds: float, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> IdleBaseline | None:
    """The source's average watts over SECONDS with nothing to do (call before serving starts)."""
    meter = EnergyMeter(source, clock=clock)
    if not meter.start():
        return None
    sleep(seconds)
    window = meter.stop()
    watts = window.average_watts if window else None
    return IdleBaseline(watts, window.label) if window and watts is not None else None
