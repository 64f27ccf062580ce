"""Which accelerators a model is tried on, in which order, and why one was left out.

The chain comes from three places (docs/runtime.md):

1. the board: its profile's `[accelerator]` delegate and `fallback` list, with any
   accelerator detected beside it (a Coral USB on any host) first;
2. the agent's config: `[runtime] delegate = "auto"` takes the board's chain, a named
   accelerator replaces it (with the CPU after it only under `allow_cpu_fallback`);
3. the bundle: what the converter targeted (`runtime.delegate` in its manifest). An
   accelerator that runs only models compiled for it (the Edge TPU) is skipped for a
   bundle that was not; a bundle that targets an accelerator the chain lacks is a
   mismatch, refused before download or warned about (`[runtime] target_mismatch`).

Stdlib only: the device side and the CLI read it without a runtime installed.
"""

from __future__ import annotations

import ctypes.util
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# How each accelerator is reached: a TFLite delegate library opened with load_delegate()
# (the Interpreter API), an accelerator of LiteRT's CompiledModel API, or the CPU (XNNPACK).
DELEGATE, LITERT, CPU = "delegate", "litert", "cpu"


@dataclass(frozen=True)
class Known:
    kind: str
    library: str = ""  # the default library; [runtime] delegate_library overrides it
    compiled_only: bool = False  # runs only models compiled for it (the Edge TPU's custom op)
    about: str = ""


# Default library names as their vendors document them; verified here only in that a
# missing library yields the loader's own message (no such hardware on the CI machine).
KNOWN: dict[str, Known] = {
    # Coral: https://coral.ai/docs/edgetpu/tflite-python/ (libedgetpu1-std / -max)
    "edgetpu": Known(DELEGATE, "libedgetpu.so.1", True, "Coral Edge TPU"),
    # NXP eIQ (i.MX 8M Plus NPU): the VX delegate over TIM-VX, /usr/lib in NXP's BSP images
    "vx": Known(DELEGATE, "/usr/lib/libvx_delegate.so", False, "VeriSilicon NPU (VX delegate, TIM-VX)"),
    # NXP eIQ (i.MX 93 Ethos-U65): the Ethos-U external delegate of NXP's BSP
    "ethos-u": Known(DELEGATE, "/usr/lib/libethosu_delegate.so", False, "Arm Ethos-U NPU"),
    # Mesa's Teflon TFLite delegate (Vivante / Rockchip NPUs), https://docs.mesa3d.org/teflon.html
    "teflon": Known(DELEGATE, "libteflon.so", False, "Mesa Teflon NPU delegate"),
    # Arm NN's TFLite delegate; options such as backends = "GpuAcc,CpuAcc"
    "armnn": Known(DELEGATE, "libarmnnDelegate.so", False, "Arm NN (Mali GPU, Neon CPU)"),
    "external": Known(DELEGATE, "", False, "an external delegate given by delegate_library"),
    # LiteRT's CompiledModel accelerators: https://ai.google.dev/edge/litert/next/acceleration
    "litert-gpu": Known(LITERT, "", False, "LiteRT GPU accelerator (CompiledModel)"),
    "litert-npu": Known(LITERT, "", False, "LiteRT NPU accelerator (CompiledModel)"),
    "cpu": Known(CPU, "", False, "the CPU (XNNPACK)"),
}
NAMES = tuple(KNOWN)
MISMATCH_POLICIES = ("refuse", "warn")
# libedgetpu's "device" option (its tflite_plugin_create_delegate): any, ":N", usb[:N], pci[:N]
EDGETPU_DEVICE_FORMS = ("", ":N", "usb", "usb:N", "pci", "pci:N")
_EDGETPU_DEVICE = re.compile(r"|:\d+|(usb|pci)(:\d+)?")


class ChainError(ValueError):
    """An accelerator name or option that cannot be used; the message says what is allowed."""


@dataclass(frozen=True)
class Accelerator:
    name: str
    library: str = ""
    options: Mapping[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return KNOWN[self.name].kind

    @property
    def compiled_only(self) -> bool:
        return KNOWN[self.name].compiled_only

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "library": self.library, "options": dict(self.options)}


@dataclass(frozen=True)
class Plan:
    """The accelerators to try in order, those skipped and why, and a target mismatch."""

    chain: tuple[Accelerator, ...]
    skipped: tuple[tuple[str, str], ...] = ()  # (name, reason)
    mismatch: str | None = None  # set when the bundle targets what the chain lacks


def library_found(library: str) -> bool:
    """Where the dynamic loader would find LIBRARY: a path that exists, or a name ldconfig knows."""
    if "/" in library:
        return Path(library).exists()
    stem = library.removeprefix("lib").split(".so")[0]
    return ctypes.util.find_library(stem) is not None


def check_edgetpu_device(value: str) -> None:
    if not _EDGETPU_DEVICE.fullmatch(value):
        raise ChainError(f"Edge TPU option device = {value!r}; use one of "
                         f"{', '.join(repr(f) for f in EDGETPU_DEVICE_FORMS)} (N: 0, 1, ...)")


def make(name: str, library: str = "", options: Mapping[str, str] | None = None) -> Accelerator:
    if name not in KNOWN:
        raise ChainError(f"unknown accelerator {name!r}; choose one of {', '.join(NAMES)}")
    library = library or KNOWN[name].library
    if KNOWN[name].kind == DELEGATE and not library:
        raise ChainError(f"accelerator {name!r} needs the delegate's library: set [runtime] delegate_library")
    opts = {str(k): str(v) for k, v in (options or {}).items()}
    if name == "edgetpu" and "device" in opts:
        check_edgetpu_device(opts["device"])
    return Accelerator(name, library if KNOWN[name].kind == DELEGATE else "", opts)


def board_chain(entries: Iterable[tuple[str, str, Mapping[str, str]]]) -> list[Accelerator]:
    """Accelerators from profiles' (name, library, options) entries, each name once, the CPU last."""
    chain: dict[str, Accelerator] = {}
    for name, library, options in entries:
        if name not in chain:
            chain[name] = make(name, library, options)
    cpu = chain.pop("cpu", None)
    return [*chain.values(), *([cpu] if cpu else [])]


def configured_chain(board: list[Accelerator], delegate: str, library: str = "",
                     options: Mapping[str, str] | None = None,
                     allow_cpu_fallback: bool = False) -> list[Accelerator]:
    """What the config allows: the board's chain under "auto" (its options updated by the
    config's), else the named accelerator, followed by the CPU only if fallback is allowed."""
    if delegate == "auto":
        if not library and not options:
            return list(board)
        first = board[0]
        rest = board[1:]
        return [make(first.name, library or first.library, {**first.options, **(options or {})}), *rest]
    on_board = next((a for a in board if a.name == delegate), None)
    base = dict(on_board.options) if on_board else {}
    chosen = make(delegate, library or (on_board.library if on_board else ""), {**base, **(options or {})})
    if delegate == "cpu":
        return [chosen]
    return [chosen, make("cpu")] if allow_cpu_fallback else [chosen]


def plan(chain: list[Accelerator], target: str | None, target_profile: str | None = None) -> Plan:
    """CHAIN narrowed to what a bundle converted for TARGET (its manifest's runtime.delegate)
    can run on. TARGET None or "cpu": any accelerator that takes ordinary models."""
    target = target or "cpu"
    kept, skipped = [], []
    for acc in chain:
        if acc.compiled_only and acc.name != target:
            skipped.append((acc.name, f"the bundle was converted for {target}, not compiled for the "
                                      f"{KNOWN[acc.name].about}"))
        else:
            kept.append(acc)
    mismatch = None
    if target != "cpu" and target not in {a.name for a in chain}:
        what = f"target profile {target_profile!r}, " if target_profile else ""
        about = KNOWN[target].about if target in KNOWN else target
        mismatch = (f"the bundle was converted for {target} ({what}{about}) but this device tries "
                    f"{', '.join(a.name for a in chain) or 'nothing'}")
    return Plan(tuple(kept), tuple(skipped), mismatch)


def target_of(manifest: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(delegate, profile) a bundle or transfer manifest says it was converted for."""
    runtime = manifest.get("runtime") if isinstance(manifest.get("runtime"), dict) else {}
    target = manifest.get("target") if isinstance(manifest.get("target"), dict) else {}
    delegate = runtime.get("delegate", target.get("delegate"))
    profile = target.get("profile")
    return (delegate if isinstance(delegate, str) else None, profile if isinstance(profile, str) else None)
