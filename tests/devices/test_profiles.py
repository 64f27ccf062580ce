"""Board profiles: every documented board loads, an unknown name lists the known ones."""

from __future__ import annotations

import pytest

from edgefleet.devices.profiles import Profile, ProfileError, list_profiles, load_profile, parse_profile

BOARDS = ("rpi4", "rpi5", "coral-usb", "coral-devboard", "imx8mp-npu", "generic-x86_64", "generic-aarch64")


def test_all_boards_are_listed():
    assert set(BOARDS) <= set(list_profiles())


@pytest.mark.parametrize("name", BOARDS)
def test_profile_loads(name):
    p = load_profile(name)
    assert isinstance(p, Profile) and p.name == name and p.description
    kind = p.accelerator.kind
    if kind == "edgetpu":
        assert p.accelerator.delegate == "edgetpu" and p.accelerator.library == "libedgetpu.so.1"
        assert p.conversion.default_mode == "int8" and p.conversion.io_dtype == "uint8"
        assert p.conversion.requires_edgetpu_compiler and p.accelerator.options["device"]
    elif kind == "npu":
        assert p.accelerator.delegate == "vx" and p.accelerator.library.endswith("libvx_delegate.so")
        assert p.conversion.default_mode == "int8" and p.conversion.io_dtype == "int8"
    else:
        assert p.accelerator.delegate == "cpu" and p.conversion.default_mode == "auto"
        assert p.conversion.io_dtype == "float32" and not p.conversion.requires_edgetpu_compiler
    for key, figure in p.power_figures.items():  # only sourced figures
        assert p.power[key] == figure.watts > 0 and figure.source.strip()
    assert p.as_dict()["accelerator"]["kind"] == kind


def test_board_detection_names_are_profiles():
    from edgefleet.devices.detect import profile_for_model

    for model in ("Raspberry Pi 5 Model B Rev 1.0", "Raspberry Pi 4 Model B Rev 1.4", "Coral Dev Board",
                  "NXP i.MX8MPlus EVK board"):
        assert profile_for_model(model) in list_profiles()


def test_unknown_profile_lists_the_known_names():
    with pytest.raises(ProfileError) as err:
        load_profile("jetson-nano")
    for name in BOARDS:
        assert name in str(err.value)


def test_bad_profile_documents_are_refused():
    base = {"name": "x", "arch": "aarch64", "accelerator": {"kind": "none", "delegate": "cpu"},
            "conversion": {"default_mode": "auto", "io_dtype": "float32", "allowed_modes": ["int8"]}}
    assert parse_profile(base).name == "x"
    with pytest.raises(ProfileError, match=r"unknown key.*colour"):
        parse_profile({**base, "colour": "red"})
    with pytest.raises(ProfileError, match=r"accelerator\.kind"):
        parse_profile({**base, "accelerator": {"kind": "gpu", "delegate": "cpu"}})
    with pytest.raises(ProfileError, match="not in allowed_modes"):
        parse_profile({**base, "conversion": {"default_mode": "float16", "allowed_modes": ["int8"]}})
