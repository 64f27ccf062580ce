"""CPU package energy from Intel RAPL through the powercap framework, wrap-around handled.

Format followed: the kernel's Documentation/power/powercap/powercap.rst. Each zone
`/sys/class/powercap/intel-rapl:N` has a `name` (`package-0`, ...), an `energy_uj` counter in
microjoules and `max_energy_range_uj`, the counter's range: after it the counter starts again
from zero. Subzones (`intel-rapl:N:M`, core and uncore) are parts of their package and are not
added again; zones not named `package-*` (such as `psys`) overlap the packages and are left out.

A wrap is recognised when a reading is lower than the one before it; two wraps between
readings cannot be told from one, so a window must be sampled at least once per wrap period
(the range divided by the package's power: typically tens of minutes). Since Linux 5.10
`energy_uj` is readable by root only, so an unprivileged agent finds no RAPL and falls back.

RAPL measures the CPU package (cores, caches, memory controller, integrated GPU), not the whole
machine. Verified only against fixture trees in this format (tests/devices/fixtures/power/rapl),
not on Intel hardware.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgefleet.devices.power.reading import measured, read_label, read_number


@dataclass(frozen=True)
class RaplZone:
    path: Path
    name: str
    max_range_uj: int


def find_rapl_zones(root: str | Path = "/") -> list[RaplZone]:
    """Top-level package zones whose counter range can be read (without it a wrap is undetectable)."""
    zones = []
    for path in sorted((Path(root) / "sys/class/powercap").glob("intel-rapl:*")):
        name = read_label(path / "name")  # subzones (intel-rapl:0:0) are core/uncore/dram: not packages
        max_range = read_number(path / "max_energy_range_uj")
        if name and name.startswith("package-") and max_range is not None and max_range > 0:
            zones.append(RaplZone(path, name, int(max_range)))
    return zones


def read_energy_uj(zone: RaplZone) -> int | None:
    value = read_number(zone.path / "energy_uj")
    return int(value) if value is not None and 0 <= value <= zone.max_range_uj else None


def energy_delta_uj(before: int, after: int, max_range_uj: int) -> int:
    """Microjoules from one reading to the next, across at most one wrap of the counter."""
    return after - before if after >= before else (max_range_uj - before) + after


class RaplMeter:
    """Joules between samples, summed over the package zones.

    The first sample() only sets the starting point and returns 0.0. A zone that fails to read
    keeps its last good value, so its energy is counted at the next sample that reads it.
    """

    def __init__(self, zones: list[RaplZone]):
        self.zones = zones
        self._last: dict[Path, int] = {}

    def sample(self) -> float | None:
        """Joules since the previous sample, or None when no zone reads."""
        joules, read_any = 0.0, False
        for zone in self.zones:
            now = read_energy_uj(zone)
            if now is None:
                continue
            read_any = True
            before = self._last.get(zone.path)
            if before is not None:
                joules += energy_delta_uj(before, now, zone.max_range_uj) / 1e6
            self._last[zone.path] = now
        return joules if read_any else None


class RaplWindow:
    def __init__(self, meter: RaplMeter):
        self._meter = meter
        self._joules = 0.0

    def sample(self, now: float) -> None:
        self._joules += self._meter.sample() or 0.0

    def finish(self, now: float, accelerator_busy_s: float = 0.0) -> float | None:
        last = self._meter.sample()
        if last is None:
            return None
        return self._joules + last


class RaplEnergy:
    """The package zones as one source, labelled `measured:rapl:package-0[+package-1...]`."""

    def __init__(self, zones: list[RaplZone]):
        self.zones = zones
        self.label = measured("rapl:" + "+".join(z.name for z in zones))

    @classmethod
    def find(cls, root: str | Path = "/") -> RaplEnergy | None:
        zones = find_rapl_zones(root)
        return cls(zones) if zones else None

    def probe(self) -> bool:
        return bool(self.zones) and all(read_energy_uj(z) is not None for z in self.zones)

    def open_window(self, now: float) -> RaplWindow | None:
        meter = RaplMeter(self.zones)
        return RaplWindow(meter) if meter.sample() is not None else None
