"""Temperatures from the Linux thermal framework (/sys/class/thermal/thermal_zone*/).

Format (documented in the kernel's sysfs-api for thermal): `type` holds the zone's
name, `temp` its temperature in millidegrees Celsius.
"""

from __future__ import annotations

from pathlib import Path


def read_thermal_zones(root: str | Path = "/sys/class/thermal") -> dict[str, float]:
    """Zone name -> degrees Celsius, for every zone that can be read now.

    Zones that fail to read (some return EINVAL while their sensor sleeps) are skipped.
    Duplicate names get the zone folder appended, so no reading is lost.
    """
    temps: dict[str, float] = {}
    base = Path(root)
    if not base.is_dir():
        return temps
    for zone in sorted(base.glob("thermal_zone*")):
        try:
            name = (zone / "type").read_text().strip() or zone.name
            millideg = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        if name in temps:
            name = f"{name}:{zone.name}"
        temps[name] = millideg / 1000.0
    return temps


def hottest(temps: dict[str, float]) -> float | None:
    return max(temps.values()) if temps else None
