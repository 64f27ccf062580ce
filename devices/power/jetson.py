"""NVIDIA Jetson module power from its on-module INA3221 monitor(s), JetPack 4 and JetPack 5+.

Formats followed:

- JetPack 4 (L4T 32, the `ina3221x` IIO driver), as in NVIDIA's power management guides for
  Jetson Nano/TX1 and Xavier (https://docs.nvidia.com/jetson/archives/l4t-archived/l4t-3271/
  Tegra%20Linux%20Driver%20Package%20Development%20Guide/power_management_nano.html):
  `/sys/bus/i2c/drivers/ina3221x/<bus-addr>/iio:deviceN/rail_name_K` names channel K,
  `in_power{K}_input` is its power in milliwatts, `in_voltage{K}_input` millivolts and
  `in_current{K}_input` milliamperes.
- JetPack 5 and later (L4T 35+, the mainline `ina3221` hwmon driver), as in NVIDIA's Orin
  guide (https://docs.nvidia.com/jetson/archives/r35.6.0/DeveloperGuide/SD/
  PlatformPowerAndPerformance/JetsonOrinNanoSeriesJetsonOrinNxSeriesAndJetsonAgxOrinSeries.html)
  and the kernel's Documentation/hwmon/ina3221.rst: `/sys/bus/i2c/drivers/ina3221/<bus-addr>/
  hwmon/hwmonN/in{K}_label`, `in{K}_input` (mV) and `curr{K}_input` (mA), K = 1..3.

The module's input rail (`VDD_IN`, `POM_5V_IN`: a rail whose name ends in `_IN`) already
contains the others, so it alone is the total where a module has one; otherwise the rails are
summed. Every rail is reported on its own as well.

Verified only against fixture trees in these formats (tests/devices/fixtures/power/jetson-*),
not on a Jetson; the search tool showed the openings of NVIDIA's pages, not their power monitor
sections, so the node names rest on the kernel's ina3221 document (JetPack 5+) and on the
layout given above (JetPack 4).
"""

from __future__ import annotations

from pathlib import Path

from edgefleet.devices.power.hwmon import read_hwmon_channels
from edgefleet.devices.power.reading import PowerReading, SampledSource, measured, read_label, read_number

LABEL = measured("jetson-ina3221")


def _iio_rails(root: Path) -> dict[str, float]:
    rails: dict[str, float] = {}
    for device in sorted(root.glob("sys/bus/i2c/drivers/ina3221x/*/iio:device*")):
        for name_file in sorted(device.glob("rail_name_*")):
            index = name_file.name[len("rail_name_"):]
            name = read_label(name_file)
            if not index.isdigit() or not name:
                continue
            milliwatts = read_number(device / f"in_power{index}_input")
            if milliwatts is None:  # some rails expose only volts and amps
                mv = read_number(device / f"in_voltage{index}_input")
                ma = read_number(device / f"in_current{index}_input")
                milliwatts = mv * ma / 1000.0 if mv is not None and ma is not None else None
            if milliwatts is not None:
                rails[name if name not in rails else f"{name}:{device.parent.name}"] = milliwatts / 1000.0
    return rails


def _hwmon_rails(root: Path) -> dict[str, float]:
    rails: dict[str, float] = {}
    for folder in sorted(root.glob("sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*")):
        for name, watts in read_hwmon_channels(folder, "ina3221").items():
            rails[name if name not in rails else f"{name}:{folder.parent.parent.name}"] = watts
    return rails


def read_jetson_rails(root: str | Path = "/") -> dict[str, float]:
    """Rail name -> watts from whichever driver this JetPack uses; {} on other boards."""
    return _iio_rails(Path(root)) or _hwmon_rails(Path(root))


def module_total(rails: dict[str, float]) -> float:
    inputs = [watts for name, watts in rails.items() if name.split(":")[0].upper().endswith("_IN")]
    return sum(inputs) if inputs else sum(rails.values())


class JetsonPower(SampledSource):
    label = LABEL

    def __init__(self, root: str | Path = "/"):
        self.root = Path(root)

    def read(self) -> PowerReading | None:
        rails = read_jetson_rails(self.root)
        return PowerReading(module_total(rails), LABEL, rails) if rails else None
