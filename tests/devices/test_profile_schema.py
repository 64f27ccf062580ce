"""The [power] and [detect] tables of the board profiles: every figure cited, bad tables refused."""

from __future__ import annotations

import pytest

from edgefleet.devices.profiles import POWER_KEYS, ProfileError, list_profiles, load_profile, parse_profile

BASE = {"name": "x", "arch": "aarch64", "accelerator": {"kind": "none", "delegate": "cpu"},
        "conversion": {"default_mode": "auto", "allowed_modes": ["int8"]}}
CITE = "https://example.org/datasheet"


@pytest.mark.parametrize("name", list_profiles())
def test_every_profile_loads_and_every_power_constant_has_a_source(name):
    p = load_profile(name)
    assert p.description and set(p.power) == set(p.power_figures) <= set(POWER_KEYS)
    for key, fig in p.power_figures.items():
        assert fig.source.strip() and fig.note.strip(), (name, key)
        assert fig.source.startswith("https://") or " " in fig.source  # a URL or a document's title
        if fig.amps is not None:
            assert fig.watts == pytest.approx(fig.amps * fig.volts)
    assert p.power_sources == {k: f.source for k, f in p.power_figures.items()}
    assert p.as_dict()["power"] == {k: f.as_dict() for k, f in p.power_figures.items()}


def test_the_cited_figures_are_the_published_ones():
    pi4 = load_profile("rpi4").power_figures  # Raspberry Pi docs: idle 0.6 A, stress 1.2 A, 5.1 V supply
    assert (pi4["idle_w"].amps, pi4["cpu_full_w"].amps, pi4["idle_w"].volts) == (0.6, 1.2, 5.1)
    assert load_profile("rpi4").power == {"idle_w": pytest.approx(3.06), "cpu_full_w": pytest.approx(6.12)}
    for name in ("coral-usb", "coral-pcie", "coral-devboard"):  # 4 TOPS at 2 TOPS per watt
        assert load_profile(name).power == {"accelerator_active_w": 2.0}
    for name in ("rpi5", "jetson-orin-nano", "imx8mp-npu", "generic-x86_64", "generic-aarch64"):
        assert load_profile(name).power == {}, "nothing citable was found: the constant stays out"


def test_jetson_profile_says_the_gpu_goes_unused():
    p = load_profile("jetson-orin-nano")
    assert (p.cpu_cores, p.cpu_model, p.accelerator.delegate) == (6, "Cortex-A78AE", "cpu")
    assert "GPU" in p.description and "PyPI" in p.description


@pytest.mark.parametrize(("power", "message"), [
    ({"idle_w": 3.0}, r"\[power.idle_w\] must be a table"),
    ({"idle_w": {"watts": 3.0}}, "needs its source"),
    ({"idle_w": {"watts": 3.0, "source": "  "}}, "needs its source"),
    ({"idle_w": {"source": CITE}}, "needs watts, or amps and volts"),
    ({"idle_w": {"amps": 0.6, "source": CITE}}, "needs watts, or amps and volts"),
    ({"idle_w": {"watts": 3.0, "amps": 0.6, "volts": 5.0, "source": CITE}}, "give one of them"),
    ({"idle_w": {"watts": -1.0, "source": CITE}}, "must be a number above 0"),
    ({"idle_w": {"watts": True, "source": CITE}}, "must be a number above 0"),
    ({"idle_w": {"watts": 3.0, "source": CITE, "typical": 2}}, r"unknown key.*typical"),
    ({"peak_w": {"watts": 3.0, "source": CITE}}, r"unknown key.*peak_w"),
])
def test_bad_power_tables_are_refused(power, message):
    with pytest.raises(ProfileError, match=message):
        parse_profile({**BASE, "power": power})


def test_power_in_amps_becomes_watts_and_keeps_the_cited_numbers():
    p = parse_profile({**BASE, "power": {"idle_w": {"amps": 0.5, "volts": 5.0, "source": CITE}}})
    assert p.power == {"idle_w": 2.5} and p.power_figures["idle_w"].amps == 0.5


@pytest.mark.parametrize(("detect", "message"), [
    ({"dt_compatible": "raspberrypi,5-model-b"}, "must be a list"),
    ({"dt_model": [""]}, "non-empty strings"),
    ({"usb_ids": ["18D1:9302"]}, "lower-case"),
    ({"usb_ids": ["18d1-9302"]}, "lower-case"),
    ({"pi_revision_type": [0x117]}, "8-bit"),
    ({"device_nodes": ["/dev/apex_0"]}, "relative to the root"),
    ({"serial": ["x"]}, r"unknown key.*serial"),
])
def test_bad_detect_tables_are_refused(detect, message):
    with pytest.raises(ProfileError, match=message):
        parse_profile({**BASE, "detect": detect})
