"""Raspberry Pi 5 board power from its PMIC's ADCs: `vcgencmd pmic_read_adc`, volts x amps per rail.

Format followed: the tool's output as captured on a Pi 5 and published with the command
(https://gist.github.com/cleverca22/95d2cb2f4e1f59be2bd94f0e1d446cc9), one reading per line:

    VDD_CORE_A current(7)=0.92871990A
    VDD_CORE_V volt(15)=0.72097620V
    EXT5V_V volt(24)=5.17105900V

Raspberry Pi's own documentation does not describe this command, so that capture is the format
reference. A rail counts when it has both its `_A` and its `_V` line; rails with a voltage only
(EXT5V_V, the 5 V input, and BATT_V, the RTC cell) carry no current and are left out. The sum is
therefore what the PMIC's rails deliver: it excludes the PMIC's own conversion losses and what
USB devices draw from the 5 V input, so it reads below the wall.

Verified only against a stand-in script that prints output in this format (tests/devices/
fixtures/power/pi5/), not on a Raspberry Pi 5: this project's machines have none.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgefleet.devices.power.reading import PowerReading, SampledSource, measured
from edgefleet.devices.power.vcgencmd import DEFAULT_TIMEOUT_S, run_vcgencmd

LABEL = measured("pi5-pmic")

_LINE = re.compile(
    r"^\s*(?P<rail>\S+)_(?P<kind>[AV])\s+(?:current|volt)\(\d+\)="
    r"(?P<value>[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)(?P<unit>[AV])\s*$")


def parse_pmic_adc(text: str) -> dict[str, float]:
    """Rail name -> watts, for every rail with both a current and a voltage line."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match or match["kind"] != match["unit"]:  # a line that says `_A ...=0.7V` is not trusted
            continue
        (amps if match["kind"] == "A" else volts)[match["rail"]] = float(match["value"])
    return {rail: volts[rail] * amps[rail] for rail in sorted(amps.keys() & volts.keys())}


class Pi5Pmic(SampledSource):
    """The Pi 5's PMIC rails; each read spawns vcgencmd (a few milliseconds), so sample sparingly."""

    label = LABEL

    def __init__(self, command: str | Path = "vcgencmd", timeout_s: float = DEFAULT_TIMEOUT_S):
        self.command = command
        self.timeout_s = timeout_s

    def read(self) -> PowerReading | None:
        out = run_vcgencmd(["pmic_read_adc"], self.command, self.timeout_s)
        rails = parse_pmic_adc(out) if out else {}
        if not rails:  # an older Pi answers with an error or nothing: no PMIC ADC there
            return None
        return PowerReading(sum(rails.values()), LABEL, rails)
