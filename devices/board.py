"""Which board this is, by name: the device-tree model string or DMI (x86).

The full answer (profile, accelerators, evidence) is devices/detect.py's `detect_board`;
these two stay for callers that want the name and its profile only.
"""

from __future__ import annotations

from pathlib import Path

from edgefleet.devices.detect import profile_for_model

# Where boards publish their name: the device tree on ARM boards, DMI on x86-64.
_MODEL_FILES = ("proc/device-tree/model", "sys/firmware/devicetree/base/model",
                "sys/class/dmi/id/product_name")


def board_model(root: str | Path = "/") -> str | None:
    """The board's own name, e.g. 'Raspberry Pi 5 Model B Rev 1.0', or None."""
    for rel in _MODEL_FILES:
        try:
            text = (Path(root) / rel).read_bytes().rstrip(b"\0\n ").decode(errors="replace")
        except OSError:
            continue
        if text:
            return text
    return None


def board_profile(model: str | None, machine: str | None = None) -> str:
    """A profile name from devices/ for a model string (generic-<arch> when unknown)."""
    return profile_for_model(model, machine)
