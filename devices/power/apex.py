"""The PCIe Edge TPU's own temperature and its throttling trip points (Coral's `apex` driver).

Format followed: Coral's "Manage the PCIe module temperature" (https://coral.ai/docs/pcie-parameters/):
the driver's parameters sit in `/sys/class/apex/apex_N/`; `temp` is the Edge TPU's temperature
and `trip_point0_temp`, `trip_point1_temp`, `trip_point2_temp` the temperatures at which dynamic
frequency scaling lowers its clock step by step, all in millidegrees Celsius. The Coral USB
Accelerator has no such driver and exposes no temperature at all.

A temperature, not a power: it says whether the accelerator is being throttled, which explains
a latency regression that a power figure would not. Verified only against fixture trees in this
format (tests/devices/fixtures/power/apex), not on a Coral PCIe/M.2 module or Dev Board.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefleet.devices.power.reading import measured, read_number

TRIP_POINTS = ("trip_point0_temp", "trip_point1_temp", "trip_point2_temp")


@dataclass(frozen=True)
class EdgeTpuThermal:
    device: str  # apex_0
    celsius: float
    trip_points_c: tuple[float, ...]  # in the driver's order; the ones that read

    @property
    def label(self) -> str:
        return measured(f"apex:{self.device}")

    @property
    def trip_points_reached(self) -> int:
        """How many trip points the temperature is at or above: 0 means no frequency scaling."""
        return sum(1 for trip in self.trip_points_c if self.celsius >= trip)

    def as_dict(self) -> dict[str, Any]:
        return {"temperature_c": self.celsius, "temperature_source": self.label,
                "trip_points_c": list(self.trip_points_c), "trip_points_reached": self.trip_points_reached}


def read_edgetpu_thermal(root: str | Path = "/") -> list[EdgeTpuThermal]:
    """One entry per Edge TPU under ROOT/sys/class/apex whose temperature reads now."""
    found = []
    for folder in sorted((Path(root) / "sys/class/apex").glob("apex_*")):
        millideg = read_number(folder / "temp")
        if millideg is None:
            continue
        readings = (read_number(folder / name) for name in TRIP_POINTS)
        trips = tuple(t / 1000.0 for t in readings if t is not None)
        found.append(EdgeTpuThermal(folder.name, millideg / 1000.0, trips))
    return found
