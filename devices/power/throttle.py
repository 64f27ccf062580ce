"""Raspberry Pi under-voltage and throttling flags from `vcgencmd get_throttled`.

Format followed: Raspberry Pi's documentation of `get_throttled`
(https://www.raspberrypi.com/documentation/computers/os.html#get_throttled, its table as
quoted at https://disks.eu.org/andreabenini/pi.Projects/blob/master/underpowered.md): the tool
prints `throttled=0x50005`, a bit field where

    bit 0  under-voltage detected          bit 16  under-voltage has occurred
    bit 1  arm frequency capped            bit 17  arm frequency capping has occurred
    bit 2  currently throttled             bit 18  throttling has occurred
    bit 3  soft temperature limit active   bit 19  soft temperature limit has occurred

The low bits are the state now, the high ones are sticky since boot (the firmware property's
definition in the kernel, commit be3035e3627d, says the same of bits 0-2 and 16-18). Verified
only against a stand-in script printing this format, not on a Raspberry Pi.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefleet.devices.power.vcgencmd import DEFAULT_TIMEOUT_S, run_vcgencmd

# Bit -> name, now (0-3) and since boot (16-19).
FLAGS: dict[int, str] = {
    0: "under_voltage", 1: "arm_frequency_capped", 2: "throttled", 3: "soft_temperature_limit",
    16: "under_voltage_occurred", 17: "arm_frequency_capped_occurred", 18: "throttled_occurred",
    19: "soft_temperature_limit_occurred",
}
_VALUE = re.compile(r"^\s*throttled=(0x[0-9a-fA-F]+|\d+)\s*$")


@dataclass(frozen=True)
class ThrottleState:
    raw: int

    def flag(self, bit: int) -> bool:
        return bool(self.raw >> bit & 1)

    @property
    def under_voltage(self) -> bool:
        return self.flag(0)

    @property
    def arm_frequency_capped(self) -> bool:
        return self.flag(1)

    @property
    def throttled(self) -> bool:
        return self.flag(2)

    @property
    def soft_temperature_limit(self) -> bool:
        return self.flag(3)

    @property
    def active(self) -> list[str]:
        """Names of the flags that are set, now and since boot."""
        return [name for bit, name in FLAGS.items() if self.flag(bit)]

    def as_dict(self) -> dict[str, Any]:
        return {"throttled_raw": self.raw, "throttle_source": "measured:vcgencmd:get_throttled",
                **{name: self.flag(bit) for bit, name in FLAGS.items()}}


def parse_throttled(text: str) -> ThrottleState | None:
    for line in text.splitlines():
        match = _VALUE.match(line)
        if match:
            value = match[1]
            return ThrottleState(int(value, 16) if value.startswith("0x") else int(value))
    return None


def read_throttled(command: str | Path = "vcgencmd",
                   timeout_s: float = DEFAULT_TIMEOUT_S) -> ThrottleState | None:
    out = run_vcgencmd(["get_throttled"], command, timeout_s)
    return parse_throttled(out) if out else None
