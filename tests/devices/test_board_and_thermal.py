"""Board detection and thermal zones, read from fixture trees in the kernel's documented format."""

from pathlib import Path

from edgefleet.devices.detect import detect_board, profile_for_model
from edgefleet.devices.thermal import hottest, read_thermal_zones

FIXTURES = Path(__file__).parent / "fixtures"


def test_pi5_device_tree_model_maps_to_rpi5_profile():
    model = detect_board(FIXTURES / "pi5", "aarch64").model
    assert model == "Raspberry Pi 5 Model B Rev 1.0"
    assert profile_for_model(model, "aarch64") == "rpi5"


def test_x86_dmi_name_maps_to_generic_profile():
    assert detect_board(FIXTURES / "x86", "x86_64").model == "ThinkPad X1"
    assert profile_for_model("ThinkPad X1", "x86_64") == "generic-x86_64"


def test_missing_tree_gives_no_model():
    assert detect_board(FIXTURES / "nowhere").model is None


def test_thermal_zones_in_celsius_and_unreadable_zone_skipped():
    temps = read_thermal_zones(FIXTURES / "x86" / "sys/class/thermal")
    assert temps == {"x86_pkg_temp": 61.0, "acpitz": 27.8}
    assert hottest(temps) == 61.0


def test_pi_cpu_thermal():
    assert read_thermal_zones(FIXTURES / "pi5" / "sys/class/thermal") == {"cpu-thermal": 52.35}


def test_no_thermal_framework_gives_empty():
    assert read_thermal_zones(FIXTURES / "nowhere") == {}
    assert hottest({}) is None
