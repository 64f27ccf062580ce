"""Board power estimated from a profile's constants where the board has no power sensor.

The model is linear in two measured shares of a window:

    watts = idle_w + (cpu_full_w - idle_w) * cpu_share + accelerator_active_w * accelerator_share

- `idle_w`: the whole board at idle;
- `cpu_full_w`: the whole board with every CPU core busy (a total, not an increment);
- `accelerator_active_w`: what the accelerator adds while it computes (0 without one);
- `cpu_share`: the system-wide busy share of all cores over the window, from /proc/stat
  (user, nice, system, irq, softirq against those plus idle, iowait and steal: proc_stat(5));
- `accelerator_share`: the accelerator's busy seconds (the caller's sum of its invoke times)
  over the window's length.

Because the model is linear, the window's energy, the integral of watts over the window, is
exactly the average watts of the window's average shares times its length. The figure is
labelled `estimated:<profile name>` and is never passed off as a measurement.

Every constant must come with its source (a datasheet, the vendor's page, a measurement in the
repository with its command): `PowerModel` refuses a constant without one, so that a profile's
`[power]` table cannot slip in an unsourced guess. /proc/stat parsing was checked against
proc_stat(5) and this machine's own /proc/stat; the constants themselves belong to the profiles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edgefleet.devices.power.reading import estimated

CONSTANTS = ("idle_w", "cpu_full_w", "accelerator_active_w")
REQUIRED = ("idle_w", "cpu_full_w")  # without these there is no board figure to scale


@dataclass(frozen=True)
class PowerModel:
    """A board's power constants, each with its source in `sources` (constant name -> citation)."""

    name: str  # the profile's name, e.g. "rpi4"; the label becomes estimated:<name>
    idle_w: float
    cpu_full_w: float
    accelerator_active_w: float = 0.0
    sources: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a power model needs the profile's name: it becomes the label")
        for key in CONSTANTS:
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{self.name}: {key} = {value!r}; a finite number of watts >= 0")
            needed = key != "accelerator_active_w" or value != 0  # no accelerator: nothing to cite
            if needed and not str(self.sources.get(key, "")).strip():
                raise ValueError(f"{self.name}: {key} has no source; every constant needs one "
                                 f"(sources={{'{key}': '<url or measurement>'}})")
        if self.cpu_full_w < self.idle_w:
            raise ValueError(f"{self.name}: cpu_full_w ({self.cpu_full_w}) is below idle_w ({self.idle_w})")

    @classmethod
    def from_figures(cls, name: str, watts: Mapping[str, float], sources: Mapping[str, str]) -> PowerModel:
        """From a profile's figures (watts by constant, and each constant's citation).

        ValueError names the constants the profile lacks: a profile that publishes only its
        accelerator's draw (an accelerator on any host) has no estimate of its own.
        """
        problems = []
        unknown = sorted(set(watts) - set(CONSTANTS))
        if unknown:
            problems.append(f"unknown constant(s) {', '.join(unknown)}")
        missing = [key for key in REQUIRED if key not in watts]
        if missing:
            problems.append(f"no sourced {', '.join(missing)}")
        if problems:
            raise ValueError(f"{name}: no power estimate: {'; '.join(problems)}")
        return cls(name, float(watts["idle_w"]), float(watts["cpu_full_w"]),
                   float(watts.get("accelerator_active_w", 0.0)), dict(sources))

    @property
    def label(self) -> str:
        return estimated(self.name)

    def watts(self, cpu_share: float, accelerator_share: float = 0.0) -> float:
        cpu = min(max(cpu_share, 0.0), 1.0)
        acc = min(max(accelerator_share, 0.0), 1.0)
        return self.idle_w + (self.cpu_full_w - self.idle_w) * cpu + self.accelerator_active_w * acc


def read_cpu_ticks(root: str | Path = "/") -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs since boot from ROOT/proc/stat, or None."""
    try:
        with (Path(root) / "proc/stat").open() as stat:
            first = stat.readline().split()
    except (OSError, ValueError):
        return None
    if len(first) < 5 or first[0] != "cpu":
        return None
    try:
        fields = [int(v) for v in first[1:9]]
    except ValueError:
        return None
    ticks = fields + [0] * (8 - len(fields))  # old kernels have fewer fields
    user, nice, system, idle, iowait, irq, softirq, steal = ticks[:8]
    busy = user + nice + system + irq + softirq  # guest time is already inside user and nice
    return busy, busy + idle + iowait + steal


def cpu_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    busy, total = after[0] - before[0], after[1] - before[1]
    return min(max(busy / total, 0.0), 1.0) if total > 0 else 0.0  # < one tick elapsed: no load seen


class EstimateWindow:
    def __init__(self, estimator: Estimator, now: float, ticks: tuple[int, int]):
        self._estimator = estimator
        self._start = now
        self._ticks = ticks

    def sample(self, now: float) -> None:  # the shares need only the window's two ends
        pass

    def finish(self, now: float, accelerator_busy_s: float = 0.0) -> float | None:
        ticks = read_cpu_ticks(self._estimator.root)
        if ticks is None:
            return None
        seconds = max(now - self._start, 0.0)
        acc = accelerator_busy_s / seconds if seconds > 0 else 0.0
        return self._estimator.model.watts(cpu_share(self._ticks, ticks), acc) * seconds


class Estimator:
    """The estimate as a source: its label is `estimated:<profile>`, its idle is the model's."""

    def __init__(self, model: PowerModel, root: str | Path = "/"):
        self.model = model
        self.root = Path(root)
        self.label = model.label

    def probe(self) -> bool:
        return read_cpu_ticks(self.root) is not None

    def open_window(self, now: float) -> EstimateWindow | None:
        ticks = read_cpu_ticks(self.root)
        return EstimateWindow(self, now, ticks) if ticks is not None else None
