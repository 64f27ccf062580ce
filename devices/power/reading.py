"""What every power and energy figure carries, and the two shapes a power source comes in.

A figure is labelled by the source that made it: `measured:<sensor>` when it was read from a
sensor (`measured:pi5-pmic`, `measured:hwmon:ina219`, `measured:rapl:package-0`) and
`estimated:<model>` when it was computed from a board profile's constants (`estimated:rpi4`).
Labels travel unchanged from a source into its readings and energy windows; nothing in this
package relabels an estimate as a measurement.

Every source offers the same three things (the `Source` protocol): its `label`, `probe()` (does
it read now?) and `open_window(now)`, the start of an energy window that `EnergyMeter` samples
and finishes. Sensors that give instantaneous watts (Pi 5 PMIC, hwmon, Jetson) share
`SampledSource`, whose window integrates its samples with the trapezoid rule.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

MEASURED = "measured:"
ESTIMATED = "estimated:"


def measured(sensor: str) -> str:
    return MEASURED + sensor


def estimated(model: str) -> str:
    return ESTIMATED + model


def is_measured(label: str | None) -> bool:
    return bool(label) and str(label).startswith(MEASURED)


@dataclass(frozen=True)
class PowerReading:
    """Instantaneous power of one source: the total and, where the sensor has them, its rails."""

    watts: float
    label: str
    rails_watts: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"power_w": self.watts, "power_source": self.label, "rails_w": dict(self.rails_watts)}


class Window(Protocol):
    """One energy window of one source; `now` comes from the meter's clock, in seconds."""

    def sample(self, now: float) -> None: ...

    def finish(self, now: float, accelerator_busy_s: float = 0.0) -> float | None:
        """Joules since the window opened, or None when the source stopped reading."""
        ...


class Source(Protocol):
    @property
    def label(self) -> str: ...

    def probe(self) -> bool:
        """True when the source reads now; never raises."""
        ...

    def open_window(self, now: float) -> Window | None:
        """A window starting at `now`, or None when the source does not read now."""
        ...


def read_number(path: Path) -> float | None:
    """The number a sysfs attribute holds, or None when it is missing, unreadable or not a number.

    Sensors that sleep return EINVAL or ENODATA on read, and a broken driver may leave an empty
    file: all of these are "no reading", never an exception.
    """
    try:
        value = float(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return value if math.isfinite(value) else None


def read_label(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except (OSError, ValueError):
        return None
    return text or None


def trapezoid_joules(points: list[tuple[float, float]], end: float) -> float:
    """Energy of (time, watts) samples up to `end`: trapezoids between samples, the last held flat."""
    joules = 0.0
    for (t0, w0), (t1, w1) in itertools.pairwise(points):
        joules += (t1 - t0) * (w0 + w1) / 2.0
    last_t, last_w = points[-1]
    if end > last_t:  # the final read failed: hold the last good value rather than drop the tail
        joules += (end - last_t) * last_w
    return joules


class SampledWindow:
    """A window over instantaneous watts: every sample() adds a point to the integral.

    Only start and stop are sampled unless the caller samples in between, so a long window over a
    bursty load should be sampled periodically (each sample of the Pi 5 PMIC spawns vcgencmd).
    """

    def __init__(self, read_watts: Callable[[], float | None], now: float, first_watts: float):
        self._read = read_watts
        self._points: list[tuple[float, float]] = [(now, first_watts)]

    def sample(self, now: float) -> None:
        watts = self._read()
        if watts is not None and now >= self._points[-1][0]:
            self._points.append((now, watts))

    def finish(self, now: float, accelerator_busy_s: float = 0.0) -> float | None:
        self.sample(now)
        return trapezoid_joules(self._points, now)


class SampledSource:
    """Base of sensors that give instantaneous watts: subclasses set `label` and define `read()`."""

    label: str = ""

    def read(self) -> PowerReading | None:
        raise NotImplementedError

    def probe(self) -> bool:
        return self.read() is not None

    def _watts(self) -> float | None:
        reading = self.read()
        return reading.watts if reading else None

    def open_window(self, now: float) -> Window | None:
        first = self._watts()
        return SampledWindow(self._watts, now, first) if first is not None else None
