"""Power monitors on the Linux hwmon bus: TI INA219/220/226/230/231 and INA3221.

Formats followed, from the kernel's documentation:

- Documentation/hwmon/sysfs-interface.rst: `/sys/class/hwmon/hwmonN/name` is the chip's name,
  `powerN_input` is in microwatts, `currN_input` in milliamperes, `inN_input` in millivolts,
  `inN_label` / `powerN_label` are optional channel labels, `inN_enable` = 0 turns a channel off.
- Documentation/hwmon/ina2xx.rst: `in0_input` is the shunt voltage, `in1_input` the bus voltage,
  `curr1_input` the current and `power1_input` the power of the single channel.
- Documentation/hwmon/ina3221.rst: channels 1-3 have a bus voltage `in[123]_input`, a current
  `curr[123]_input` and a label `in[123]_label`, and no power attribute (power is computed host
  side); `in[4-7]_input` are shunt voltages in microvolts and `curr4_input` is the sum of the
  currents, so neither is paired into a power.

Channels of one device are summed into its total. An INA3221 whose channels nest (one of them
the board's input, as on Jetson modules) would be counted twice: jetson.py handles those boards,
and the picker tries it first.

Verified only against fixture trees in these formats (tests/devices/fixtures/power/hwmon-*),
not on real INA2xx/INA3221 hardware.
"""

from __future__ import annotations

from pathlib import Path

from edgefleet.devices.power.reading import PowerReading, SampledSource, measured, read_label, read_number

# Which currN/inN pairs are a bus voltage and its current, per chip (from the driver docs above).
BUS_CHANNELS: dict[str, tuple[int, ...]] = {
    "ina219": (1,), "ina220": (1,), "ina226": (1,), "ina230": (1,), "ina231": (1,),
    "ina3221": (1, 2, 3),
}
POWER_CHIPS = frozenset(BUS_CHANNELS)


def _channel_label(folder: Path, kind: str, index: int, labels: dict[str, float]) -> str:
    label = read_label(folder / f"{kind}{index}_label") or f"{kind}{index}"
    return label if label not in labels else f"{label}:{kind}{index}"  # duplicate labels keep both


def read_hwmon_channels(folder: Path, chip: str) -> dict[str, float]:
    """Channel label -> watts for one hwmon device folder; channels that do not read are skipped."""
    rails: dict[str, float] = {}
    for path in sorted(folder.glob("power*_input")):
        index = path.name[len("power"):-len("_input")]
        microwatts = read_number(path)
        if index.isdigit() and microwatts is not None:
            rails[_channel_label(folder, "power", int(index), rails)] = microwatts / 1e6
    if rails:  # the driver computed power itself: take that rather than recompute it
        return rails
    for index in BUS_CHANNELS.get(chip, ()):
        if read_number(folder / f"in{index}_enable") == 0:
            continue
        millivolts = read_number(folder / f"in{index}_input")
        milliamps = read_number(folder / f"curr{index}_input")
        if millivolts is not None and milliamps is not None:
            rails[_channel_label(folder, "in", index, rails)] = millivolts * milliamps / 1e6
    return rails


class HwmonPower(SampledSource):
    """One hwmon power monitor, labelled `measured:hwmon:<chip>`."""

    def __init__(self, folder: str | Path, chip: str):
        self.folder = Path(folder)
        self.chip = chip
        self.label = measured(f"hwmon:{chip}")

    def read(self) -> PowerReading | None:
        rails = read_hwmon_channels(self.folder, self.chip)
        return PowerReading(sum(rails.values()), self.label, rails) if rails else None


def find_hwmon(root: str | Path = "/") -> list[HwmonPower]:
    """Every hwmon device under ROOT/sys/class/hwmon whose name is a known power monitor."""
    found = []
    for folder in sorted((Path(root) / "sys/class/hwmon").glob("hwmon*")):
        chip = read_label(folder / "name")
        if chip in POWER_CHIPS:
            found.append(HwmonPower(folder, chip))
    return found
