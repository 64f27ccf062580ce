"""The profile estimate and the energy meter: windows, mJ per inference, the part above idle, labels."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgefleet.devices.power import (
    EnergyMeter,
    Estimator,
    IdleBaseline,
    PowerModel,
    estimated,
    find_hwmon,
    is_measured,
    measure_idle,
    measured,
    read_cpu_ticks,
)

FIXTURES = Path(__file__).parent / "fixtures" / "power"
SOURCES = {"idle_w": "https://example.org/datasheet#idle", "cpu_full_w": "benchmarks/power.py --full",
           "accelerator_active_w": "https://coral.ai/docs/edgetpu/faq/"}
MODEL = PowerModel("test-board", idle_w=2.0, cpu_full_w=6.0, accelerator_active_w=2.0, sources=SOURCES)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write_stat(root: Path, busy: int, idle: int) -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice (proc_stat(5))
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc/stat").write_text(f"cpu  {busy - 20} 0 10 {idle} 0 0 10 0 0 0\ncpu0 1 0 0 1 0 0 0 0 0 0\n")


def test_labels_say_measured_or_estimated():
    assert measured("pi5-pmic") == "measured:pi5-pmic" and is_measured("measured:pi5-pmic")
    assert estimated("rpi4") == "estimated:rpi4" and not is_measured("estimated:rpi4")
    assert not is_measured(None) and not is_measured("")
    assert MODEL.label == "estimated:test-board" and not is_measured(Estimator(MODEL).label)


def test_every_constant_needs_its_source_and_sane_watts():
    with pytest.raises(ValueError, match="idle_w has no source"):
        PowerModel("b", idle_w=2.0, cpu_full_w=6.0, sources={"cpu_full_w": "x"})
    with pytest.raises(ValueError, match="accelerator_active_w has no source"):
        PowerModel("b", idle_w=2.0, cpu_full_w=6.0, accelerator_active_w=2.0,
                   sources={"idle_w": "x", "cpu_full_w": "y"})
    with pytest.raises(ValueError, match=">= 0"):
        PowerModel("b", idle_w=-1.0, cpu_full_w=6.0, sources=SOURCES)
    with pytest.raises(ValueError, match="below idle_w"):
        PowerModel("b", idle_w=5.0, cpu_full_w=4.0, sources=SOURCES)
    # no accelerator: nothing to cite for it
    bare = PowerModel("b", idle_w=2.0, cpu_full_w=6.0, sources={"idle_w": "x", "cpu_full_w": "y"})
    assert bare.accelerator_active_w == 0.0


def test_model_from_a_profiles_figures_and_what_it_lacks():
    # the shape of Profile.power (watts by constant) and Profile.power_sources (citations)
    watts = {"idle_w": 3.06, "cpu_full_w": 6.12}
    cited = {"idle_w": "https://www.raspberrypi.com/documentation/computers/raspberry-pi.html",
             "cpu_full_w": "https://www.raspberrypi.com/documentation/computers/raspberry-pi.html"}
    model = PowerModel.from_figures("rpi4", watts, cited)
    assert (model.label, model.idle_w, model.cpu_full_w, model.accelerator_active_w) == (
        "estimated:rpi4", 3.06, 6.12, 0.0)
    with pytest.raises(ValueError, match="no sourced idle_w, cpu_full_w"):
        PowerModel.from_figures("coral-usb", {"accelerator_active_w": 2.0}, {"accelerator_active_w": "x"})
    with pytest.raises(ValueError, match="unknown constant"):
        PowerModel.from_figures("b", {**watts, "gpu_w": 1.0}, cited)
    with pytest.raises(ValueError, match="has no source"):
        PowerModel.from_figures("b", watts, {"idle_w": "x"})


def test_model_scales_between_idle_and_full_load_plus_the_accelerator():
    assert MODEL.watts(0.0) == 2.0
    assert MODEL.watts(1.0) == 6.0
    assert MODEL.watts(0.25, 0.5) == pytest.approx(2.0 + 4.0 * 0.25 + 2.0 * 0.5)
    assert MODEL.watts(3.0, -1.0) == 6.0  # shares are clamped to 0..1


def test_cpu_ticks_from_proc_stat():
    busy, total = read_cpu_ticks(FIXTURES / "no-sensor")
    assert busy == 1350145 + 0 + 82520 + 0 + 9633 and total == busy + 1642046 + 3879 + 12381
    assert read_cpu_ticks("/") is not None  # this machine's own /proc/stat parses
    assert read_cpu_ticks(FIXTURES / "nowhere") is None


def test_estimated_window_uses_cpu_share_and_accelerator_busy_time(tmp_path):
    clock = Clock()
    write_stat(tmp_path, busy=1000, idle=1000)
    meter = EnergyMeter(Estimator(MODEL, tmp_path), clock=clock)
    assert meter.start()
    write_stat(tmp_path, busy=1300, idle=1100)  # 300 of 400 ticks busy: cpu share 0.75
    clock.now = 4.0
    window = meter.stop(inferences=100, accelerator_busy_s=2.0)  # accelerator share 0.5
    assert window is not None and window.label == "estimated:test-board"
    watts = 2.0 + 4.0 * 0.75 + 2.0 * 0.5
    assert window.average_watts == pytest.approx(watts, rel=0.01)
    assert window.joules == pytest.approx(watts * 4.0, rel=0.01)
    assert window.millijoules_per_inference == pytest.approx(1000 * watts * 4.0 / 100, rel=0.01)
    # the estimate's idle is its own constant, and the above-idle figure stays estimated
    assert window.idle == IdleBaseline(2.0, "estimated:test-board")
    assert window.above_idle_millijoules_per_inference == pytest.approx(1000 * (watts - 2.0) * 4.0 / 100)
    assert window.above_idle_label == "estimated:test-board"
    row = window.as_dict()
    assert row["power_source"] == "estimated:test-board" and row["energy_j"] == pytest.approx(24.0)
    assert row["energy_above_idle_source"] == "estimated:test-board"


def test_sampled_window_integrates_between_samples(tmp_path):
    root = Path(shutil.copytree(FIXTURES / "hwmon-ina219", tmp_path / "t"))
    power = root / "sys/class/hwmon/hwmon1/power1_input"
    clock = Clock()
    meter = EnergyMeter(find_hwmon(root)[0], clock=clock)
    power.write_text("2000000\n")
    assert meter.start()
    clock.now, _ = 1.0, power.write_text("4000000\n")
    meter.sample()
    clock.now = 3.0
    window = meter.stop(inferences=0)
    assert window is not None and window.label == "measured:hwmon:ina219"
    assert window.joules == pytest.approx(1.0 * (2 + 4) / 2 + 2.0 * 4, rel=0.01)  # trapezoids: 3 J + 8 J
    assert window.millijoules_per_inference is None  # no inferences, no per-inference figure
    assert window.above_idle_millijoules_per_inference is None


def test_measured_window_minus_an_estimated_idle_is_labelled_estimated():
    clock = Clock()
    idle = IdleBaseline(1.0, "estimated:test-board")
    meter = EnergyMeter(find_hwmon(FIXTURES / "hwmon-ina219")[0], idle=idle, clock=clock)
    assert meter.start()
    clock.now = 10.0
    window = meter.stop(inferences=200)
    assert window is not None and window.label == "measured:hwmon:ina219"
    assert window.millijoules_per_inference == pytest.approx(1000 * 2.5 * 10 / 200, rel=0.01)
    assert window.above_idle_millijoules_per_inference == pytest.approx(1000 * 1.5 * 10 / 200, rel=0.01)
    assert window.above_idle_label == "estimated:test-board"


def test_measured_idle_baseline_keeps_the_above_idle_figure_measured():
    clock = Clock()
    source = find_hwmon(FIXTURES / "hwmon-ina219")[0]

    def sleep(seconds: float) -> None:
        clock.now += seconds

    idle = measure_idle(source, 5.0, sleep=sleep, clock=clock)
    assert idle is not None and idle.label == "measured:hwmon:ina219"
    assert idle.watts == pytest.approx(2.5, rel=0.01)
    meter = EnergyMeter(source, idle=idle, clock=clock)
    meter.start()
    clock.now += 2.0
    window = meter.lap(inferences=10)
    assert window is not None and window.above_idle_label == "measured:hwmon:ina219"
    assert window.above_idle_millijoules_per_inference == pytest.approx(0.0, abs=1e-9)
    assert meter.running  # lap() opened the next window


def test_meter_without_a_readable_source_gives_no_window(tmp_path):
    meter = EnergyMeter(Estimator(MODEL, tmp_path / "no-proc"))
    assert not meter.start() and meter.stop(inferences=5) is None
    assert EnergyMeter(find_hwmon(FIXTURES / "hwmon-ina219")[0]).stop() is None  # never started
