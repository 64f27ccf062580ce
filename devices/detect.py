"""Which board this is and which accelerators are attached, with the evidence for each.

Everything is read below one root (default "/"), so that tests run against fixture trees:

- the device tree, `proc/device-tree/` (else `sys/firmware/devicetree/base/`): `model`, a
  NUL-terminated string, and `compatible`, NUL-separated strings, most specific first
  (e.g. ``raspberrypi,5-model-b\\0brcm,bcm2712\\0``);
- `proc/cpuinfo`: the `Model`, `Revision` and `Hardware` lines a Raspberry Pi kernel adds; a
  new-style revision code (bit 23 set) holds the board type in bits 4-11 (0x11 = 4B, 0x17 = 5);
  `Hardware` says BCM2835 on every Pi, so it is recorded, never matched;
- DMI, `sys/class/dmi/id/{sys_vendor,product_name,board_name}` (x86 and UEFI machines);
- USB devices, `sys/bus/usb/devices/*/idVendor` and `idProduct` (4 lower-case hex digits);
- device nodes such as `dev/apex_0` (the PCIe Edge TPU's apex driver).

What a match means is data, in each profile's `[detect]` table (devices/board-profiles/).
A file that is missing says nothing; one that cannot be read or does not parse is skipped
and named in the evidence, so that `reported` and telemetry can show why a board came out
as it did.

Verified against: Raspberry Pi's documentation (revision codes and their bit layout, the
`compatible` pairs, the cpuinfo example), mainline Linux device trees (imx8mq-phanbell,
imx8mp-evk, tegra234-p3768-0000+p3767-0005), google-coral issue threads (the Coral USB's
1a6e:089a / 18d1:9302), the kernel's USB sysfs attributes. Verified only against fixtures
written from those documents, as no such board is attached here: every reader on real
hardware, Mendel's "fsl,imx8mq-phanbell" string, the Jetson module SKUs other than
p3767-0005, DMI strings of any particular machine, and libedgetpu's pci:N numbering.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefleet.devices.profiles import Profile, all_profiles

__all__ = ["Detection", "Evidence", "FoundAccelerator", "detect_board", "generic_profile",
           "profile_for_model"]

_DT_DIRS = ("proc/device-tree", "sys/firmware/devicetree/base")
_DMI_KEYS = ("sys_vendor", "product_name", "board_name")
_MAX_READ = 64 * 1024  # these files are tiny; a larger one is not what we think it is
# How strongly each kind of match names a board: a compatible entry is the board's own id.
_RANK = {"dt_compatible": 4, "pi_revision_type": 3, "dt_model": 2, "dmi": 1}


@dataclass(frozen=True)
class Evidence:
    source: str  # the file, relative to the root, e.g. "proc/device-tree/compatible"
    value: str  # what it said (string lists joined with "; ")
    means: str = ""  # what detection took from it; "" when it was only recorded

    def as_dict(self) -> dict[str, str]:
        return {"source": self.source, "value": self.value, "means": self.means}


@dataclass(frozen=True)
class FoundAccelerator:
    profile: str  # the profile whose delegate settings apply (coral-usb, coral-pcie, the board's own)
    device: str  # the delegate's device option: "usb", "pci:0", ...
    firmware_loaded: bool | None  # a USB Edge TPU before libedgetpu first opens it: False; else None
    evidence: tuple[Evidence, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "device": self.device, "firmware_loaded": self.firmware_loaded,
                "evidence": [e.as_dict() for e in self.evidence]}


@dataclass(frozen=True)
class Detection:
    profile: str  # the board profile, generic-<arch> when nothing matched
    model: str | None  # the board's own name: device-tree model, cpuinfo Model or DMI product
    machine: str  # the architecture the generic fallback was chosen by
    accelerators: tuple[FoundAccelerator, ...] = ()
    evidence: tuple[Evidence, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "model": self.model, "machine": self.machine,
                "accelerators": [a.as_dict() for a in self.accelerators],
                "evidence": [e.as_dict() for e in self.evidence]}


@dataclass
class _Facts:
    """What the files said, before any profile is consulted."""

    compatible: list[str] = field(default_factory=list)
    model: str | None = None
    cpuinfo_model: str | None = None
    pi_type: int | None = None
    dmi: dict[str, str] = field(default_factory=dict)
    usb: list[tuple[str, str, str | None]] = field(default_factory=list)  # (id, sysfs dir, speed)
    evidence: list[Evidence] = field(default_factory=list)


def generic_profile(machine: str | None = None) -> str:
    """The CPU-only profile for an architecture: generic-aarch64, generic-x86_64, generic-<arch>."""
    arch = (machine or platform.machine()).lower()
    arch = {"arm64": "aarch64", "amd64": "x86_64"}.get(arch, arch)
    return f"generic-{arch}"


def _read(root: Path, rel: str, facts: _Facts) -> bytes | None:
    """A file's bytes; None when it is missing, or unreadable (then said in the evidence)."""
    try:
        with open(root / rel, "rb") as f:
            data = f.read(_MAX_READ + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a directory, no permission, an I/O error
        facts.evidence.append(Evidence(rel, "", f"skipped: unreadable ({type(exc).__name__})"))
        return None
    if len(data) > _MAX_READ:
        facts.evidence.append(Evidence(rel, "", f"skipped: larger than {_MAX_READ} bytes"))
        return None
    return data


def _text(root: Path, rel: str, facts: _Facts) -> str | None:
    data = _read(root, rel, facts)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        facts.evidence.append(Evidence(rel, repr(data[:40]), "skipped: not UTF-8 text"))
        return None


def _read_device_tree(root: Path, facts: _Facts) -> None:
    for base in _DT_DIRS:
        model, compat = _text(root, f"{base}/model", facts), _text(root, f"{base}/compatible", facts)
        if model is None and compat is None:
            continue
        if model and model.strip("\0 \n"):
            facts.model = model.strip("\0 \n")
            facts.evidence.append(Evidence(f"{base}/model", facts.model))
        if compat:
            facts.compatible = [s.strip() for s in compat.split("\0") if s.strip()]
            facts.evidence.append(Evidence(f"{base}/compatible", "; ".join(facts.compatible)))
        return  # /proc/device-tree links to the sysfs copy: one is enough


def _read_cpuinfo(root: Path, facts: _Facts) -> None:
    text = _text(root, "proc/cpuinfo", facts)
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not sep or key not in ("Model", "Revision", "Hardware"):
            continue
        if key == "Model" and value:
            facts.cpuinfo_model = value
            facts.evidence.append(Evidence("proc/cpuinfo", f"Model: {value}"))
        elif key == "Hardware":
            facts.evidence.append(Evidence("proc/cpuinfo", f"Hardware: {value}",
                                           "recorded only: every Raspberry Pi says BCM2835 here"))
        elif key == "Revision":
            try:
                code = int(value, 16)
            except ValueError:
                facts.evidence.append(Evidence("proc/cpuinfo", f"Revision: {value}",
                                               "skipped: not a hexadecimal revision code"))
                continue
            if code >> 23 & 1:  # new-style code: the type field is defined
                facts.pi_type = code >> 4 & 0xFF
                facts.evidence.append(Evidence("proc/cpuinfo", f"Revision: {value}",
                                               f"Raspberry Pi board type 0x{facts.pi_type:02x}"))
            else:
                facts.evidence.append(Evidence("proc/cpuinfo", f"Revision: {value}",
                                               "old-style code (no board-type field)"))


def _read_dmi(root: Path, facts: _Facts) -> None:
    for key in _DMI_KEYS:
        text = _text(root, f"sys/class/dmi/id/{key}", facts)
        if text and text.strip():
            facts.dmi[key] = text.strip()
            facts.evidence.append(Evidence(f"sys/class/dmi/id/{key}", facts.dmi[key]))


def _hex4(root: Path, rel: str, facts: _Facts) -> str | None:
    text = _text(root, rel, facts)
    if text is None:
        return None
    value = text.strip().lower()
    if len(value) == 4 and all(c in "0123456789abcdef" for c in value):
        return value
    facts.evidence.append(Evidence(rel, text.strip()[:40], "skipped: not 4 hexadecimal digits"))
    return None


def _read_usb(root: Path, facts: _Facts) -> None:
    base = root / "sys/bus/usb/devices"
    try:
        entries = sorted(p.name for p in base.iterdir())
    except OSError:
        return
    for name in entries:  # interfaces ("1-1:1.0") have no idVendor and drop out here
        rel = f"sys/bus/usb/devices/{name}"
        if not (root / rel / "idVendor").exists():
            continue
        vendor, product = _hex4(root, f"{rel}/idVendor", facts), _hex4(root, f"{rel}/idProduct", facts)
        if vendor and product:
            speed = _text(root, f"{rel}/speed", facts)  # Mb/s: 480 is a USB 2 port, 5000 USB 3
            facts.usb.append((f"{vendor}:{product}", rel, speed.strip() if speed else None))


def _read_facts(root: Path) -> _Facts:
    facts = _Facts()
    _read_device_tree(root, facts)
    _read_cpuinfo(root, facts)
    _read_dmi(root, facts)
    _read_usb(root, facts)
    return facts


def _board_match(profile: Profile, facts: _Facts) -> tuple[str, str] | None:
    """The strongest rule of the profile that the facts meet: (rule, what matched)."""
    d = profile.detect
    compat = {c.lower() for c in facts.compatible}
    for entry in d.dt_compatible:
        if entry.lower() in compat:
            return "dt_compatible", entry
    if facts.pi_type is not None and facts.pi_type in d.pi_revision_type:
        return "pi_revision_type", f"0x{facts.pi_type:02x}"
    for name in filter(None, (facts.model, facts.cpuinfo_model)):
        for sub in d.dt_model:
            if sub.casefold() in name.casefold():
                return "dt_model", sub
    for value in facts.dmi.values():
        for sub in d.dmi:
            if sub.casefold() in value.casefold():
                return "dmi", sub
    return None


def _match_board(facts: _Facts, profiles: Iterable[Profile], machine: str | None) -> tuple[str, Evidence]:
    """The board profile the facts name, else the generic one, and why."""
    found = [(p.name, m) for p in profiles if not p.attaches_to_host and p.detect
             if (m := _board_match(p, facts))]
    if not found:
        name = generic_profile(machine)
        return name, Evidence("machine", machine or platform.machine(), f"no board profile matched: {name}")
    found.sort(key=lambda item: (-_RANK[item[1][0]], item[0]))
    (name, (rule, what)), others = found[0], [n for n, _ in found[1:]]
    also = f" (also matched: {', '.join(others)})" if others else ""
    return name, Evidence(f"[detect] {rule}", what, f"board profile {name}{also}")


def _accelerators(root: Path, facts: _Facts, profiles: Sequence[Profile], board: Profile | None,
                  ) -> list[FoundAccelerator]:
    found: list[FoundAccelerator] = []
    for p in profiles:
        d = p.detect
        if not p.attaches_to_host or not d:
            continue
        for usb_id, rel, speed in facts.usb:
            if usb_id in d.usb_ids or usb_id in d.usb_ids_no_firmware:
                loaded = usb_id in d.usb_ids
                state = "firmware loaded" if loaded else "no firmware yet: libedgetpu loads it on first use"
                ev = [Evidence(f"{rel}/idVendor, idProduct", usb_id, f"{p.name}, {state}")]
                if speed:
                    ev.append(Evidence(f"{rel}/speed", speed, "Mb/s of the port it is plugged into"))
                found.append(FoundAccelerator(p.name, "usb", loaded, tuple(ev)))
        for pattern in d.device_nodes:
            for node in sorted(root.glob(pattern)):
                rel = node.relative_to(root).as_posix()
                index = "".join(c for c in node.name if c.isdigit()) or "0"  # apex_N -> pci:N
                owner = _owner(p, board)
                means = owner if owner == p.name else f"{owner} (built into the board)"
                ev = (Evidence(rel, "present", means),)
                found.append(FoundAccelerator(owner, f"pci:{index}", None, ev))
    return found


def _owner(accel: Profile, board: Profile | None) -> str:
    """The board's own profile when the accelerator is the one the board is built with."""
    if board is None:
        return accel.name
    def bus(p: Profile) -> str:  # "pci:0" -> "pci"
        return p.accelerator.options.get("device", "").split(":")[0]

    same = board.accelerator.kind == accel.accelerator.kind and bus(board) == bus(accel)
    return board.name if same else accel.name


def profile_for_model(model: str | None, machine: str | None = None,
                      profiles: Sequence[Profile] | None = None) -> str:
    """The board profile a model string alone names (its [detect] dt_model and dmi substrings)."""
    facts = _Facts(model=model or None, dmi={"product_name": model} if model else {})
    return _match_board(facts, all_profiles() if profiles is None else profiles, machine)[0]


def detect_board(root: str | Path = "/", machine: str | None = None,
                 profiles: Sequence[Profile] | None = None) -> Detection:
    """The board profile, the accelerators found, and the evidence, read below ROOT."""
    root = Path(root)
    profiles = all_profiles() if profiles is None else tuple(profiles)
    facts = _read_facts(root)
    name, why = _match_board(facts, profiles, machine)
    board = next((p for p in profiles if p.name == name), None)
    accelerators = _accelerators(root, facts, profiles, board)
    model = facts.model or facts.cpuinfo_model or facts.dmi.get("product_name")
    return Detection(name, model, generic_profile(machine).removeprefix("generic-"), tuple(accelerators),
                     (*facts.evidence, why))
