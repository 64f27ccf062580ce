"""Board and accelerator detection from fixture trees holding each file in its documented format.

Sources of the formats: Raspberry Pi's documentation (device-tree `compatible` pairs, revision
codes, the cpuinfo lines), mainline Linux device trees (imx8mq-phanbell, imx8mp-evk,
tegra234-p3768-0000+p3767-0005), google-coral issue threads for the Coral USB's two ids, the
kernel's USB sysfs attributes. No such board is attached here: these trees are all we test on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgefleet.devices.detect import Detection, detect_board, generic_profile, profile_for_model
from edgefleet.devices.profiles import list_profiles, parse_profile

BOARDS = Path(__file__).parent / "fixtures" / "boards"


def _detect(name: str, machine: str = "aarch64") -> Detection:
    return detect_board(BOARDS / name, machine=machine)


def _means(d: Detection) -> list[str]:
    return [e.means for e in d.evidence]


@pytest.mark.parametrize(("tree", "machine", "profile"), [
    ("rpi4", "aarch64", "rpi4"),
    ("rpi5", "aarch64", "rpi5"),
    ("rpi4-cpuinfo-only", "armv7l", "rpi4"),
    ("coral-devboard", "aarch64", "coral-devboard"),
    ("coral-devboard-mendel", "aarch64", "coral-devboard"),
    ("jetson-orin-nano", "aarch64", "jetson-orin-nano"),
    ("imx8mp", "aarch64", "imx8mp-npu"),
    ("arm64-unknown", "aarch64", "generic-aarch64"),
    ("arm64-unknown", "arm64", "generic-aarch64"),
    ("x86", "x86_64", "generic-x86_64"),
    ("x86", "AMD64", "generic-x86_64"),
])
def test_each_board_tree_names_its_profile(tree, machine, profile):
    d = _detect(tree, machine)
    assert d.profile == profile and d.profile in list_profiles()


def test_every_board_profile_with_detect_rules_is_found_by_some_fixture():
    found = {_detect(t.name).profile for t in BOARDS.iterdir()}
    found |= {a.profile for t in BOARDS.iterdir() for a in _detect(t.name).accelerators}
    assert set(list_profiles()) - found <= {"generic-x86_64"}  # x86 needs machine="x86_64"
    assert _detect("x86", "x86_64").profile == "generic-x86_64"


def test_compatible_is_split_on_nul_and_evidence_says_which_entry_matched():
    d = _detect("rpi5")
    assert d.model == "Raspberry Pi 5 Model B Rev 1.0"
    compat = next(e for e in d.evidence if e.source == "proc/device-tree/compatible")
    assert compat.value == "raspberrypi,5-model-b; brcm,bcm2712"
    verdict = d.evidence[-1]
    assert (verdict.source, verdict.value, verdict.means) == (
        "[detect] dt_compatible", "raspberrypi,5-model-b", "board profile rpi5")


def test_pi_revision_code_board_type_is_decoded_from_cpuinfo():
    d = _detect("rpi4-cpuinfo-only", "armv7l")
    assert "Raspberry Pi board type 0x11" in _means(d)  # c03111: new-style, type 0x11 = 4B
    assert d.evidence[-1].source == "[detect] pi_revision_type"
    hardware = next(e for e in d.evidence if e.value == "Hardware: BCM2835")
    assert hardware.means.startswith("recorded only")  # never used to tell Pis apart
    assert d.model is None and d.accelerators == ()


def test_sysfs_device_tree_is_read_when_proc_has_none():
    d = _detect("coral-devboard-mendel")
    assert d.evidence[0].source == "sys/firmware/devicetree/base/compatible"


def test_tegra234_without_an_orin_nano_module_id_is_not_an_orin_nano():
    assert _detect("jetson-orin-nx").profile == "generic-aarch64"


def test_coral_usb_before_its_firmware_loads():
    d = _detect("x86-coral-usb-no-firmware", "x86_64")
    assert d.profile == "generic-x86_64"
    (acc,) = d.accelerators
    assert (acc.profile, acc.device, acc.firmware_loaded) == ("coral-usb", "usb", False)
    assert acc.evidence[0].value == "1a6e:089a" and "no firmware yet" in acc.evidence[0].means
    assert acc.evidence[1].value == "5000"  # the USB 3 port it is on


def test_coral_usb_after_its_firmware_loads():
    (acc,) = _detect("x86-coral-usb", "x86_64").accelerators
    assert (acc.profile, acc.firmware_loaded, acc.evidence[0].value) == ("coral-usb", True, "18d1:9302")
    assert acc.evidence[0].source == "sys/bus/usb/devices/2-1/idVendor, idProduct"


def test_pi_with_a_coral_usb_is_the_pi_plus_the_accelerator():
    d = _detect("rpi4-coral-usb")
    assert d.profile == "rpi4"
    assert [(a.profile, a.device, a.firmware_loaded) for a in d.accelerators] == [("coral-usb", "usb", True)]
    assert d.accelerators[0].evidence[1].value == "480"  # a USB 2 port: worth showing


def test_apex_nodes_on_any_host_are_pcie_edge_tpus():
    d = _detect("x86-coral-m2", "x86_64")
    assert d.profile == "generic-x86_64"
    found = [(a.profile, a.device) for a in d.accelerators]
    assert found == [("coral-pcie", "pci:0"), ("coral-pcie", "pci:1")]
    assert d.accelerators[0].evidence[0].source == "dev/apex_0"


def test_apex_on_the_coral_dev_board_is_its_own_edge_tpu():
    (acc,) = _detect("coral-devboard").accelerators
    assert (acc.profile, acc.device, acc.firmware_loaded) == ("coral-devboard", "pci:0", None)
    assert "built into the board" in acc.evidence[0].means


def test_unreadable_and_malformed_files_are_skipped_and_named():
    d = _detect("malformed")
    assert d.profile == "generic-aarch64" and d.model is None and d.accelerators == ()
    skipped = {e.source: e.means for e in d.evidence if e.means.startswith("skipped")}
    assert skipped == {
        "proc/device-tree/compatible": "skipped: not UTF-8 text",
        "proc/device-tree/model": "skipped: unreadable (IsADirectoryError)",
        "proc/cpuinfo": "skipped: not a hexadecimal revision code",
        "sys/class/dmi/id/product_name": "skipped: larger than 65536 bytes",
        "sys/bus/usb/devices/3-2/idVendor": "skipped: not 4 hexadecimal digits",
    }


def test_missing_root_gives_the_generic_profile_and_no_accelerators(tmp_path):
    d = detect_board(tmp_path / "nowhere", machine="x86_64")
    assert (d.profile, d.model, d.machine, d.accelerators) == ("generic-x86_64", None, "x86_64", ())
    assert d.evidence[-1].means == "no board profile matched: generic-x86_64"


def test_detection_is_json_ready_for_reported_and_telemetry():
    data = json.loads(json.dumps(_detect("rpi4-coral-usb").as_dict()))
    assert data["profile"] == "rpi4" and data["accelerators"][0]["firmware_loaded"] is True
    assert {"source", "value", "means"} == set(data["evidence"][0])


def test_dmi_rules_match_and_compatible_outranks_model():
    base = {"arch": "x86_64", "accelerator": {"kind": "none", "delegate": "cpu"},
            "conversion": {"default_mode": "auto", "allowed_modes": ["int8"]}}
    lenovo = parse_profile({**base, "name": "lenovo", "detect": {"dmi": ["lenovo"]}})
    assert detect_board(BOARDS / "x86", "x86_64", [lenovo]).profile == "lenovo"
    pi = {**base, "arch": "aarch64"}
    by_model = parse_profile({**pi, "name": "a-by-model", "detect": {"dt_model": ["Raspberry Pi"]}})
    by_compat = parse_profile({**pi, "name": "z-by-compat", "detect": {"dt_compatible": ["brcm,bcm2712"]}})
    d = detect_board(BOARDS / "rpi5", "aarch64", [by_model, by_compat])
    assert d.profile == "z-by-compat" and d.evidence[-1].means.endswith("(also matched: a-by-model)")


def test_a_board_name_alone_gives_its_profile():
    assert detect_board(BOARDS / "jetson-orin-nano").model == "NVIDIA Jetson Orin Nano Developer Kit"
    assert profile_for_model("NVIDIA Jetson Orin Nano Developer Kit", "aarch64") == "jetson-orin-nano"
    assert profile_for_model("Google i.MX8MQ Phanbell") == "coral-devboard"
    # the Pi 400 has no profile of its own
    assert profile_for_model("Raspberry Pi 400 Rev 1.0", "aarch64") == "generic-aarch64"
    assert profile_for_model(None, "x86_64") == profile_for_model("", "x86_64") == "generic-x86_64"
    assert generic_profile("armv7l") == "generic-armv7l"


@pytest.mark.parametrize(("revision", "means"), [
    ("a02082", "Raspberry Pi board type 0x08"),  # 3B: bit 23 (new-style) set, bit 22 clear
    ("0010", "old-style code (no board-type field)"),  # B+ of 2014
])
def test_revision_codes_follow_the_new_style_flag(tmp_path, revision, means):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text(f"Hardware\t: BCM2835\nRevision\t: {revision}\n")
    d = detect_board(tmp_path, machine="armv7l")
    assert means in _means(d) and d.profile == "generic-armv7l"
