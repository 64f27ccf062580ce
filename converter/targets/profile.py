"""What a board profile (devices/profiles) means for conversion: default variants,
allowed modes, input/output type, delegate settings for the manifest."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgefleet.converter.errors import ConversionError
from edgefleet.devices.detect import generic_profile

# "auto" (CPU boards): build these and keep what the accuracy gate and size allow
AUTO_VARIANTS = "int8,float16,dynamic"


@dataclass(frozen=True)
class Target:
    name: str
    accelerator: str  # edgetpu | npu | none
    delegate: str  # edgetpu | vx | cpu
    library: str
    options: dict[str, str] = field(default_factory=dict)
    io_dtype: str = "int8"  # of int8 variants
    allowed_modes: list[str] | None = None  # None: any
    default_variants: str = AUTO_VARIANTS
    requires_edgetpu_compiler: bool = False

    @property
    def needs_edgetpu(self) -> bool:
        return self.accelerator == "edgetpu"


def resolve_target(name: str | None) -> Target:
    """The profile NAME, or without one (or "generic") the generic CPU profile of this machine."""
    from edgefleet.devices.profiles import ProfileError, load_profile

    if name in (None, "generic"):
        name = generic_profile()
    try:
        profile = load_profile(name)
    except ProfileError as exc:
        raise ConversionError(f"--target: {exc}") from None
    conv, acc = profile.conversion, profile.accelerator
    # CPU profiles accept any input/output type; full integer keeps an int8 model smallest
    io_dtype = conv.io_dtype if conv.io_dtype in ("int8", "uint8") else "int8"
    allowed = list(conv.allowed_modes) if conv.allowed_modes else None
    variants = AUTO_VARIANTS if conv.default_mode == "auto" else conv.default_mode
    return Target(profile.name, acc.kind, acc.delegate, acc.library, dict(acc.options), io_dtype,
                  allowed, variants, conv.requires_edgetpu_compiler)
