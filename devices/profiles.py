"""Board profiles: one TOML file per board under devices/board-profiles/, read with the stdlib.

A profile says what a board can accelerate and how a model for it should be converted:
the delegate (and its library and options) that goes into a bundle's manifest, and the
quantisation defaults the converter takes for `--target NAME`. The TOML files are package
data; they are found next to this module both in a checkout and in an installed wheel
(the folder's name is not a Python identifier, so it can never pass for a package).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 boards
    import tomli as tomllib

ACCELERATOR_KINDS = ("edgetpu", "npu", "none")
DELEGATES = ("edgetpu", "vx", "cpu")
MODES = ("auto", "float32", "float16", "dynamic", "int8", "int16x8")
IO_DTYPES = ("uint8", "int8", "float32", "int16")
_FOLDER = "board-profiles"


class ProfileError(ValueError):
    """An unknown profile name, or a profile file that breaks the format (names file and key)."""


@dataclass(frozen=True)
class Accelerator:
    kind: str  # edgetpu | npu | none
    delegate: str  # edgetpu | vx | cpu
    library: str = ""  # what load_delegate() opens, e.g. libedgetpu.so.1
    options: dict[str, str] = field(default_factory=dict)  # delegate options, e.g. {"device": "usb"}


@dataclass(frozen=True)
class Conversion:
    default_mode: str  # "auto" on CPU boards: what the accuracy gate and size allow
    io_dtype: str  # model input/output type
    allowed_modes: tuple[str, ...]
    requires_edgetpu_compiler: bool = False


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    arch: str  # aarch64 | x86_64 | armv7l | any
    cpu_cores: int  # 0: the host's, detected at run time
    cpu_model: str
    accelerator: Accelerator
    conversion: Conversion
    power: dict[str, Any] = field(default_factory=dict)  # only figures with a cited source

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "arch": self.arch,
            "cpu": {"cores": self.cpu_cores, "model": self.cpu_model},
            "accelerator": {"kind": self.accelerator.kind, "delegate": self.accelerator.delegate,
                            "library": self.accelerator.library, "options": dict(self.accelerator.options)},
            "conversion": {"default_mode": self.conversion.default_mode, "io_dtype": self.conversion.io_dtype,
                           "allowed_modes": list(self.conversion.allowed_modes),
                           "requires_edgetpu_compiler": self.conversion.requires_edgetpu_compiler},
            "power": dict(self.power),
        }


def _folder() -> Any:
    return resources.files("edgefleet.devices").joinpath(_FOLDER)


def list_profiles() -> list[str]:
    return sorted(p.name[:-5] for p in _folder().iterdir() if p.name.endswith(".toml"))


def _table(doc: dict[str, Any], key: str, where: str, allowed: set[str]) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ProfileError(f"{where}: [{key}] must be a table")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) in [{key}]: {', '.join(unknown)}; "
                           f"allowed: {', '.join(sorted(allowed))}")
    return value


def _choice(value: Any, allowed: tuple[str, ...], where: str, key: str) -> str:
    if value not in allowed:
        raise ProfileError(f"{where}: {key} = {value!r}; choose one of {', '.join(allowed)}")
    return str(value)


def parse_profile(doc: dict[str, Any], where: str = "<profile>") -> Profile:
    top = {"name", "description", "arch", "cpu", "accelerator", "conversion", "power"}
    unknown = sorted(set(doc) - top)
    if unknown:
        raise ProfileError(f"{where}: unknown key(s): {', '.join(unknown)}; "
                           f"allowed: {', '.join(sorted(top))}")
    for key in ("name", "arch", "accelerator", "conversion"):
        if key not in doc:
            raise ProfileError(f"{where}: missing {key!r}")
    cpu = _table(doc, "cpu", where, {"cores", "model"})
    acc = _table(doc, "accelerator", where, {"kind", "delegate", "library", "options"})
    conv = _table(doc, "conversion", where,
                  {"default_mode", "io_dtype", "allowed_modes", "requires_edgetpu_compiler"})
    power = _table(doc, "power", where, {"idle_w", "active_w", "accelerator_max_w", "source"})
    allowed_modes = tuple(conv.get("allowed_modes", ()))
    for mode in allowed_modes:
        _choice(mode, MODES, where, "conversion.allowed_modes[]")
    default_mode = _choice(conv.get("default_mode", "auto"), MODES, where, "conversion.default_mode")
    if default_mode != "auto" and default_mode not in allowed_modes:
        raise ProfileError(f"{where}: conversion.default_mode {default_mode!r} is not in allowed_modes")
    return Profile(
        name=str(doc["name"]), description=str(doc.get("description", "")), arch=str(doc["arch"]),
        cpu_cores=int(cpu.get("cores", 0)), cpu_model=str(cpu.get("model", "")),
        accelerator=Accelerator(
            kind=_choice(acc.get("kind", "none"), ACCELERATOR_KINDS, where, "accelerator.kind"),
            delegate=_choice(acc.get("delegate", "cpu"), DELEGATES, where, "accelerator.delegate"),
            library=str(acc.get("library", "")),
            options={str(k): str(v) for k, v in dict(acc.get("options", {})).items()}),
        conversion=Conversion(
            default_mode=default_mode,
            io_dtype=_choice(conv.get("io_dtype", "float32"), IO_DTYPES, where, "conversion.io_dtype"),
            allowed_modes=allowed_modes,
            requires_edgetpu_compiler=bool(conv.get("requires_edgetpu_compiler", False))),
        power=dict(power),
    )


def load_profile(name: str) -> Profile:
    """The named board profile; ProfileError listing the known names for an unknown one."""
    known = list_profiles()
    if name not in known:
        raise ProfileError(f"unknown board profile {name!r}; known profiles: {', '.join(known)}")
    entry = _folder().joinpath(f"{name}.toml")
    where = f"devices/{_FOLDER}/{name}.toml"
    try:
        doc = tomllib.loads(entry.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{where}: {exc}") from None
    profile = parse_profile(doc, where)
    if profile.name != name:
        raise ProfileError(f"{where}: name = {profile.name!r} does not match the file name")
    return profile
