"""Raspberry Pi readers through `vcgencmd`: the Pi 5 PMIC rails and the throttling flags.

This machine has no vcgencmd, so each test writes a stand-in script into tmp_path that prints
the documented output, and hands its path to the reader: the real subprocess path is exercised.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.devices.power import EnergyMeter, Pi5Pmic, parse_pmic_adc, pick_source
from edgefleet.devices.power.throttle import ThrottleState, parse_throttled, read_throttled

FIXTURES = Path(__file__).parent / "fixtures" / "power"
PMIC_TEXT = (FIXTURES / "pi5" / "pmic_read_adc.txt").read_text()
WITHIN_1_PERCENT = 0.01

# What the fixture holds, rail by rail: volts x amps.
EXPECTED_RAILS = {
    "VDD_CORE": 0.8712 * 1.2345, "3V3_SYS": 3.3 * 0.05, "1V8_SYS": 1.8 * 0.2,
    "DDR_VDD2": 1.1 * 0.1, "0V8_SW": 0.8 * 0.4, "HDMI": 5.1 * 0.02,
}


def stand_in_vcgencmd(folder: Path, pmic: str = PMIC_TEXT, throttled: str = "throttled=0x50005",
                      exit_code: int = 0) -> Path:
    (folder / "pmic.txt").write_text(pmic)
    script = folder / "vcgencmd"
    script.write_text(f"""#!/bin/sh
case "$1" in
  pmic_read_adc) cat '{folder / "pmic.txt"}' ;;
  get_throttled) echo '{throttled}' ;;
  *) echo "unknown command" >&2; exit 2 ;;
esac
exit {exit_code}
""")
    script.chmod(0o755)
    return script


def test_pmic_rails_pair_amps_with_volts_and_leave_voltage_only_rails_out():
    rails = parse_pmic_adc(PMIC_TEXT)
    assert set(rails) == set(EXPECTED_RAILS)  # EXT5V_V and BATT_V have no current
    for rail, watts in EXPECTED_RAILS.items():
        assert rails[rail] == pytest.approx(watts, rel=WITHIN_1_PERCENT), rail


def test_pi5_pmic_total_through_the_stand_in_tool(tmp_path):
    reading = Pi5Pmic(stand_in_vcgencmd(tmp_path)).read()
    assert reading is not None and reading.label == "measured:pi5-pmic"
    assert reading.watts == pytest.approx(sum(EXPECTED_RAILS.values()), rel=WITHIN_1_PERCENT)
    assert reading.watts == pytest.approx(2.1325, rel=WITHIN_1_PERCENT)


def test_picker_takes_the_pmic_when_the_tool_answers(tmp_path):
    source = pick_source(root=tmp_path / "empty", vcgencmd=stand_in_vcgencmd(tmp_path))
    assert source is not None and source.label == "measured:pi5-pmic"
    clock = iter([0.0, 10.0]).__next__
    meter = EnergyMeter(source, clock=clock)
    assert meter.start()
    window = meter.stop(inferences=1000)
    assert window is not None and window.label == "measured:pi5-pmic"
    assert window.joules == pytest.approx(2.1325 * 10, rel=WITHIN_1_PERCENT)
    assert window.millijoules_per_inference == pytest.approx(21.325, rel=WITHIN_1_PERCENT)


@pytest.mark.parametrize("case", ["missing tool", "non-zero exit", "error text", "unit mismatch"])
def test_pmic_that_does_not_answer_gives_no_reading(tmp_path, case):
    if case == "missing tool":
        tool = tmp_path / "nowhere" / "vcgencmd"
    elif case == "non-zero exit":
        tool = stand_in_vcgencmd(tmp_path, exit_code=1)
    elif case == "error text":  # what an older Pi's firmware answers
        tool = stand_in_vcgencmd(tmp_path, pmic="error=1 error_msg=\"Command not registered\"\n")
    else:
        tool = stand_in_vcgencmd(tmp_path, pmic="VDD_CORE_A current(7)=1.2V\nVDD_CORE_V volt(15)=0.8V\n")
    assert Pi5Pmic(tool).read() is None
    assert not Pi5Pmic(tool).probe()


def test_throttled_bits_follow_the_documented_table():
    state = ThrottleState(0x50005)
    assert state.under_voltage and state.throttled
    assert not state.arm_frequency_capped and not state.soft_temperature_limit
    assert state.active == ["under_voltage", "throttled", "under_voltage_occurred", "throttled_occurred"]
    capped = ThrottleState(0xA000A)  # bits 1, 3, 17, 19
    assert capped.arm_frequency_capped and capped.soft_temperature_limit
    assert capped.active == ["arm_frequency_capped", "soft_temperature_limit",
                             "arm_frequency_capped_occurred", "soft_temperature_limit_occurred"]
    assert ThrottleState(0).active == []
    flags = ThrottleState(0x40000).as_dict()
    assert flags["throttled_occurred"] and not flags["throttled"] and flags["throttled_raw"] == 0x40000


def test_throttled_output_is_parsed_hex_or_decimal_and_junk_is_refused():
    assert parse_throttled("throttled=0x50005\n") == ThrottleState(0x50005)
    assert parse_throttled("throttled=0\n") == ThrottleState(0)
    assert parse_throttled("throttled=oops\n") is None
    assert parse_throttled("") is None


def test_throttled_through_the_stand_in_tool(tmp_path):
    state = read_throttled(stand_in_vcgencmd(tmp_path, throttled="throttled=0x80008"))
    assert state is not None and state.soft_temperature_limit and state.flag(19)
    assert not state.under_voltage and not state.throttled
    assert read_throttled(tmp_path / "nowhere") is None
