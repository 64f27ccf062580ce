"""Board profiles: one TOML file per board under devices/board-profiles/, read with the stdlib.

A profile says what a board can accelerate and how a model for it should be converted:
the delegate (and its library and options) that goes into a bundle's manifest, and the
quantisation defaults the converter takes for `--target NAME`. The TOML files are package
data; they are found next to this module both in a checkout and in an installed wheel
(the folder's name is not a Python identifier, so it can never pass for a package).

Two optional tables serve the device side:

- `[detect]`: the strings a board (or an accelerator) publishes, which devices/detect.py
  matches: device-tree `compatible` entries and `model` substrings, the board-type field
  of a Raspberry Pi revision code, DMI substrings, USB ids, device nodes.
- `[power]`: the constants of the power estimate, one sub-table per figure (`idle_w`,
  `cpu_full_w`, `accelerator_active_w`), each with the `source` it was taken from (a URL or a
  document's title) and either `watts` or the cited `amps` and `volts`. A figure nobody
  published is left out, never guessed; the estimate then says it lacks it.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgefleet.accelerators import NAMES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 boards
    import tomli as tomllib

ACCELERATOR_KINDS = ("edgetpu", "npu", "none")
DELEGATES = NAMES  # what [accelerator] delegate and fallback may name (edgefleet.accelerators)
MODES = ("auto", "float32", "float16", "dynamic", "int8", "int16x8")
IO_DTYPES = ("uint8", "int8", "float32", "int16")
_FOLDER = "board-profiles"
# What each [power] figure means; the estimate (devices/power/) adds them up.
POWER_KEYS = {
    "idle_w": "the whole board at idle",
    "cpu_full_w": "the whole board with every CPU core at full load",
    "accelerator_active_w": "the accelerator's own draw while it computes (on top of its host's)",
}
_POWER_FIELDS = {"watts", "amps", "volts", "source", "note"}
_DETECT_STRINGS = ("dt_compatible", "dt_model", "dmi", "usb_ids", "usb_ids_no_firmware", "device_nodes")
_USB_ID = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{4}$")


class ProfileError(ValueError):
    """An unknown profile name, or a profile file that breaks the format (names file and key)."""


@dataclass(frozen=True)
class Accelerator:
    kind: str  # edgetpu | npu | none
    delegate: str  # edgetpu | vx | cpu
    library: str = ""  # what load_delegate() opens, e.g. libedgetpu.so.1
    options: dict[str, str] = field(default_factory=dict)  # delegate options, e.g. {"device": "usb"}
    fallback: tuple[str, ...] = ("cpu",)  # tried after `delegate`, in order, each reported with its reason

    def chain_entries(self) -> list[tuple[str, str, dict[str, str]]]:
        """(name, library, options) in the order the agent tries them."""
        return [(self.delegate, self.library, dict(self.options)),
                *((name, "", {}) for name in self.fallback if name != self.delegate)]


@dataclass(frozen=True)
class Conversion:
    default_mode: str  # "auto" on CPU boards: what the accuracy gate and size allow
    io_dtype: str  # model input/output type
    allowed_modes: tuple[str, ...]
    requires_edgetpu_compiler: bool = False


@dataclass(frozen=True)
class PowerFigure:
    """One constant of the power estimate, with where it was published."""

    watts: float
    source: str  # a URL or a document's title
    note: str = ""  # the conditions it was measured under, how watts follow from it
    amps: float | None = None  # as cited, when the source gives current (watts = amps x volts)
    volts: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"watts": self.watts, "source": self.source, "note": self.note}
        if self.amps is not None:
            out.update(amps=self.amps, volts=self.volts)
        return out


@dataclass(frozen=True)
class Detect:
    """What identifies the board or accelerator; any one match is enough (see devices/detect.py)."""

    dt_compatible: tuple[str, ...] = ()  # whole entries of /proc/device-tree/compatible
    dt_model: tuple[str, ...] = ()  # substrings of the device-tree model (or cpuinfo's Model line)
    pi_revision_type: tuple[int, ...] = ()  # type field (bits 4-11) of a new-style Pi revision code
    dmi: tuple[str, ...] = ()  # substrings of DMI sys_vendor, product_name or board_name
    usb_ids: tuple[str, ...] = ()  # "vvvv:pppp", lower-case hex, of a working USB device
    usb_ids_no_firmware: tuple[str, ...] = ()  # ids it shows before its firmware is loaded
    device_nodes: tuple[str, ...] = ()  # glob patterns below the root, e.g. "dev/apex_*"

    def __bool__(self) -> bool:
        return any(getattr(self, key) for key in (*_DETECT_STRINGS, "pi_revision_type"))


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    arch: str  # aarch64 | x86_64 | armv7l | any
    cpu_cores: int  # 0: the host's, detected at run time
    cpu_model: str
    accelerator: Accelerator
    conversion: Conversion
    power: dict[str, float] = field(default_factory=dict)  # watts by POWER_KEYS key, cited ones only
    power_figures: dict[str, PowerFigure] = field(default_factory=dict)  # the same, with sources
    detect: Detect = field(default_factory=Detect)

    @property
    def power_sources(self) -> dict[str, str]:
        """Each power constant's citation, as devices/power/estimate.PowerModel takes them."""
        return {key: fig.source for key, fig in self.power_figures.items()}

    @property
    def attaches_to_host(self) -> bool:
        """An accelerator that plugs into any host (arch "any"), not a board of its own."""
        return self.arch == "any"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "arch": self.arch,
            "cpu": {"cores": self.cpu_cores, "model": self.cpu_model},
            "accelerator": {"kind": self.accelerator.kind, "delegate": self.accelerator.delegate,
                            "library": self.accelerator.library, "options": dict(self.accelerator.options),
                            "fallback": list(self.accelerator.fallback)},
            "conversion": {"default_mode": self.conversion.default_mode, "io_dtype": self.conversion.io_dtype,
                           "allowed_modes": list(self.conversion.allowed_modes),
                           "requires_edgetpu_compiler": self.conversion.requires_edgetpu_compiler},
            "power": {key: fig.as_dict() for key, fig in self.power_figures.items()},
        }


def _folder() -> Path:
    # installed as plain files beside this module (importlib.resources is memory the agent can spare)
    return Path(__file__).resolve().parent / _FOLDER


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


def _number(value: Any, where: str, key: str) -> float:
    # bool is an int to Python; a figure of `true` watts is a typo, not a number
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ProfileError(f"{where}: {key} = {value!r} must be a number above 0")
    return float(value)


def _power_figure(value: Any, where: str, key: str) -> PowerFigure:
    at = f"[power.{key}]"
    if not isinstance(value, dict):
        raise ProfileError(f"{where}: {at} must be a table: watts (or amps and volts), source, note; "
                           f"got {value!r}")
    unknown = sorted(set(value) - _POWER_FIELDS)
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) in {at}: {', '.join(unknown)}; "
                           f"allowed: {', '.join(sorted(_POWER_FIELDS))}")
    source, note = value.get("source"), value.get("note", "")
    if not isinstance(source, str) or not source.strip():
        raise ProfileError(f"{where}: {at} needs its source (a URL or a document's title): "
                           "a figure nobody published stays out")
    if not isinstance(note, str):
        raise ProfileError(f"{where}: {at} note must be a string")
    if "watts" in value:
        if "amps" in value or "volts" in value:
            raise ProfileError(f"{where}: {at} gives watts and amps/volts; give one of them")
        return PowerFigure(_number(value["watts"], where, f"{at} watts"), source.strip(), note)
    if "amps" in value and "volts" in value:
        amps = _number(value["amps"], where, f"{at} amps")
        volts = _number(value["volts"], where, f"{at} volts")
        return PowerFigure(round(amps * volts, 4), source.strip(), note, amps, volts)
    raise ProfileError(f"{where}: {at} needs watts, or amps and volts")


def _detect(doc: dict[str, Any], where: str) -> Detect:
    table = _table(doc, "detect", where, {*_DETECT_STRINGS, "pi_revision_type"})
    values: dict[str, tuple[Any, ...]] = {}
    for key, value in table.items():
        if not isinstance(value, list):
            raise ProfileError(f"{where}: [detect] {key} must be a list")
        if key == "pi_revision_type":
            if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0xFF for v in value):
                raise ProfileError(f"{where}: [detect] pi_revision_type holds 8-bit integers, e.g. 0x17")
        elif not all(isinstance(v, str) and v.strip() for v in value):
            raise ProfileError(f"{where}: [detect] {key} holds non-empty strings")
        if key.startswith("usb_ids"):
            bad = [v for v in value if not _USB_ID.match(v)]
            if bad:
                raise ProfileError(f"{where}: [detect] {key}: {bad!r} are not lower-case 'vvvv:pppp' ids")
        if key == "device_nodes" and any(v.startswith("/") for v in value):
            raise ProfileError(f"{where}: [detect] device_nodes are relative to the root: 'dev/apex_*'")
        values[key] = tuple(value)
    return Detect(**values)


def parse_profile(doc: dict[str, Any], where: str = "<profile>") -> Profile:
    top = {"name", "description", "arch", "cpu", "accelerator", "conversion", "power", "detect"}
    unknown = sorted(set(doc) - top)
    if unknown:
        raise ProfileError(f"{where}: unknown key(s): {', '.join(unknown)}; "
                           f"allowed: {', '.join(sorted(top))}")
    for key in ("name", "arch", "accelerator", "conversion"):
        if key not in doc:
            raise ProfileError(f"{where}: missing {key!r}")
    cpu = _table(doc, "cpu", where, {"cores", "model"})
    acc = _table(doc, "accelerator", where, {"kind", "delegate", "library", "options", "fallback"})
    fallback = acc.get("fallback", ["cpu"])
    if not isinstance(fallback, list):
        raise ProfileError(f"{where}: accelerator.fallback must be a list of accelerator names")
    conv = _table(doc, "conversion", where,
                  {"default_mode", "io_dtype", "allowed_modes", "requires_edgetpu_compiler"})
    power = {key: _power_figure(value, where, key)
             for key, value in _table(doc, "power", where, set(POWER_KEYS)).items()}
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
            options={str(k): str(v) for k, v in dict(acc.get("options", {})).items()},
            fallback=tuple(_choice(n, DELEGATES, where, "accelerator.fallback[]") for n in fallback)),
        conversion=Conversion(
            default_mode=default_mode,
            io_dtype=_choice(conv.get("io_dtype", "float32"), IO_DTYPES, where, "conversion.io_dtype"),
            allowed_modes=allowed_modes,
            requires_edgetpu_compiler=bool(conv.get("requires_edgetpu_compiler", False))),
        power={key: fig.watts for key, fig in power.items()},
        power_figures=power,
        detect=_detect(doc, where),
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


@lru_cache(maxsize=1)
def all_profiles() -> tuple[Profile, ...]:
    """Every profile, loaded once: they are package data and cannot change while we run."""
    return tuple(load_profile(name) for name in list_profiles())
