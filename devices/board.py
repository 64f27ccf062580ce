"""Which board this is, from the device-tree model string or DMI (x86)."""

from __future__ import annotations

import platform
from pathlib import Path

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
    m = (model or "").lower()
    if "raspberry pi 5" in m:
        return "rpi5"
    if "raspberry pi 4" in m:
        return "rpi4"
    if "coral" in m or "phanbell" in m:
        return "coral-devboard"
    if "i.mx8mp" in m or "imx8mp" in m or "i.mx 8m plus" in m:
        return "imx8mp-npu"
    arch = (machine or platform.machine()).lower()
    return "generic-aarch64" if arch in ("aarch64", "arm64") else "generic-x86_64" if arch in (
        "x86_64", "amd64") else f"generic-{arch}"
