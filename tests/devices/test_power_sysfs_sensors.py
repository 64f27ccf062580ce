"""hwmon (INA219, INA3221), Jetson (JetPack 4 IIO, JetPack 5 hwmon) and Edge TPU readers
against fixture trees in the kernel's and the vendors' documented formats."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgefleet.devices.power import JetsonPower, find_hwmon, read_edgetpu_thermal, read_jetson_rails

FIXTURES = Path(__file__).parent / "fixtures" / "power"
WITHIN_1_PERCENT = 0.01


def copy_of(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def test_ina219_power_comes_from_power1_in_microwatts_and_other_chips_are_ignored():
    sources = find_hwmon(FIXTURES / "hwmon-ina219")
    assert [s.label for s in sources] == ["measured:hwmon:ina219"]  # cpu_thermal is not a power monitor
    reading = sources[0].read()
    assert reading is not None and reading.label == "measured:hwmon:ina219"
    assert reading.watts == pytest.approx(2.5, rel=WITHIN_1_PERCENT)


def test_ina219_without_power1_falls_back_to_bus_volts_times_amps_not_the_shunt(tmp_path):
    root = copy_of("hwmon-ina219", tmp_path)
    device = root / "sys/class/hwmon/hwmon1"
    (device / "power1_input").unlink()
    (device / "curr1_input").write_text("480\n")
    reading = find_hwmon(root)[0].read()
    assert reading is not None
    assert reading.watts == pytest.approx(5.0 * 0.48, rel=WITHIN_1_PERCENT)  # in1 (bus), not in0 (shunt)


def test_ina3221_sums_its_three_labelled_channels_and_skips_shunt_and_sum_attributes():
    (source,) = find_hwmon(FIXTURES / "hwmon-ina3221")
    reading = source.read()
    assert reading is not None and reading.label == "measured:hwmon:ina3221"
    expected = {"VDD_5V": 5.04 * 0.812, "VDD_3V3": 3.3 * 0.15, "VDD_1V8": 1.8 * 0.09}
    assert set(reading.rails_watts) == set(expected)
    for rail, watts in expected.items():
        assert reading.rails_watts[rail] == pytest.approx(watts, rel=WITHIN_1_PERCENT), rail
    assert reading.watts == pytest.approx(sum(expected.values()), rel=WITHIN_1_PERCENT)


def test_ina3221_disabled_channel_is_left_out(tmp_path):
    root = copy_of("hwmon-ina3221", tmp_path)
    (root / "sys/class/hwmon/hwmon2/in3_enable").write_text("0\n")
    reading = find_hwmon(root)[0].read()
    assert reading is not None and "VDD_1V8" not in reading.rails_watts
    assert reading.watts == pytest.approx(5.04 * 0.812 + 3.3 * 0.15, rel=WITHIN_1_PERCENT)


def test_jetpack4_iio_rails_in_milliwatts_and_the_input_rail_is_the_total():
    rails = read_jetson_rails(FIXTURES / "jetson-jp4")
    assert rails == pytest.approx({"POM_5V_IN": 3.456, "POM_5V_GPU": 0.412, "POM_5V_CPU": 1.103},
                                  rel=WITHIN_1_PERCENT)
    reading = JetsonPower(FIXTURES / "jetson-jp4").read()
    assert reading is not None and reading.label == "measured:jetson-ina3221"
    assert reading.watts == pytest.approx(3.456, rel=WITHIN_1_PERCENT)  # not the sum: the rails nest


def test_jetpack4_rail_without_power_file_uses_volts_times_amps(tmp_path):
    root = copy_of("jetson-jp4", tmp_path)
    (root / "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0/in_power1_input").unlink()
    rails = read_jetson_rails(root)
    assert rails["POM_5V_GPU"] == pytest.approx(5.024 * 0.082, rel=WITHIN_1_PERCENT)


def test_jetpack5_hwmon_rails_and_vdd_in_total():
    reading = JetsonPower(FIXTURES / "jetson-jp5").read()
    assert reading is not None and reading.label == "measured:jetson-ina3221"
    assert reading.rails_watts == pytest.approx(
        {"VDD_IN": 5.08 * 1.336, "VDD_CPU_GPU_CV": 5.08 * 0.32, "VDD_SOC": 5.08 * 0.48}, rel=WITHIN_1_PERCENT)
    assert reading.watts == pytest.approx(5.08 * 1.336, rel=WITHIN_1_PERCENT)


def test_jetson_rails_without_an_input_rail_are_summed(tmp_path):
    root = copy_of("jetson-jp5", tmp_path)
    (root / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1/in1_label").write_text("VDD_GPU\n")
    reading = JetsonPower(root).read()
    assert reading is not None
    assert reading.watts == pytest.approx(5.08 * (1.336 + 0.32 + 0.48), rel=WITHIN_1_PERCENT)


def test_edgetpu_temperature_and_trip_points_in_celsius():
    (tpu,) = read_edgetpu_thermal(FIXTURES / "apex")  # apex_1's empty temp is skipped
    assert tpu.device == "apex_0" and tpu.label == "measured:apex:apex_0"
    assert tpu.celsius == pytest.approx(87.3, rel=WITHIN_1_PERCENT)
    assert tpu.trip_points_c == pytest.approx((85.0, 90.0, 95.0), rel=WITHIN_1_PERCENT)
    assert tpu.trip_points_reached == 1
    assert tpu.as_dict()["temperature_source"] == "measured:apex:apex_0"


def test_broken_and_missing_trees_give_no_readings_and_never_raise():
    broken = FIXTURES / "broken"
    sources = find_hwmon(broken)
    assert [s.label for s in sources] == ["measured:hwmon:ina219", "measured:hwmon:ina3221"]
    assert all(s.read() is None and not s.probe() for s in sources)
    assert JetsonPower(broken).read() is None
    assert read_jetson_rails(broken) == {}
    assert read_edgetpu_thermal(broken) == []  # temp is a folder there, not a file
    nowhere = FIXTURES / "nowhere"
    assert find_hwmon(nowhere) == [] and JetsonPower(nowhere).read() is None
    assert read_edgetpu_thermal(nowhere) == []
