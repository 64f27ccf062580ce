"""The pick: a fixture root gives measured:<sensor>, no sensor gives estimated:<profile>,
broken sensors are skipped and nothing raises out of the picker."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgefleet.devices.power import EnergyMeter, JetsonPower, PowerModel, find_sources, pick_source

FIXTURES = Path(__file__).parent / "fixtures" / "power"
MODEL = PowerModel("test-board", idle_w=2.0, cpu_full_w=6.0,
                   sources={"idle_w": "https://example.org/idle", "cpu_full_w": "https://example.org/full"})


@pytest.fixture
def no_vcgencmd(tmp_path: Path) -> Path:
    return tmp_path / "no-such-tool" / "vcgencmd"  # this machine has none; a Pi running the tests might


def window_of(source, seconds: float = 10.0):
    times = iter([0.0, seconds])
    meter = EnergyMeter(source, clock=lambda: next(times))
    assert meter.start()
    return meter.stop(inferences=100)


@pytest.mark.parametrize(("tree", "label", "watts"), [
    ("hwmon-ina219", "measured:hwmon:ina219", 2.5),
    ("hwmon-ina3221", "measured:hwmon:ina3221", 5.04 * 0.812 + 3.3 * 0.15 + 1.8 * 0.09),
    ("jetson-jp4", "measured:jetson-ina3221", 3.456),
    ("jetson-jp5", "measured:jetson-ina3221", 5.08 * 1.336),
])
def test_fixture_root_gives_a_measured_source_matching_the_fixture(tree, label, watts, no_vcgencmd):
    source = pick_source(MODEL, root=FIXTURES / tree, vcgencmd=no_vcgencmd)
    assert source is not None and source.label == label
    window = window_of(source)
    assert window is not None and window.label == label
    assert window.average_watts == pytest.approx(watts, rel=0.01)
    assert window.millijoules_per_inference == pytest.approx(1000 * watts * 10 / 100, rel=0.01)


def test_rapl_root_gives_a_measured_source(no_vcgencmd):
    source = pick_source(MODEL, root=FIXTURES / "rapl", vcgencmd=no_vcgencmd)
    assert source is not None and source.label == "measured:rapl:package-0"


def test_no_sensor_gives_the_estimate_labelled_with_the_profile(no_vcgencmd):
    source = pick_source(MODEL, root=FIXTURES / "no-sensor", vcgencmd=no_vcgencmd)
    assert source is not None and source.label == "estimated:test-board"
    window = window_of(source)
    assert window is not None and window.label == "estimated:test-board"
    assert 2.0 <= window.average_watts <= 6.0  # the fixture's /proc/stat does not move: idle
    assert window.average_watts == pytest.approx(2.0)


def test_no_sensor_and_no_model_gives_no_source_rather_than_an_invented_figure(no_vcgencmd):
    assert pick_source(None, root=FIXTURES / "no-sensor", vcgencmd=no_vcgencmd) is None


def test_broken_sensors_are_skipped_and_the_estimate_is_taken(no_vcgencmd):
    broken = FIXTURES / "broken"
    assert [s.label for s in find_sources(broken, no_vcgencmd)] == [
        "measured:pi5-pmic", "measured:jetson-ina3221", "measured:hwmon:ina219", "measured:hwmon:ina3221",
        "measured:rapl:package-0"]
    source = pick_source(MODEL, root=broken, vcgencmd=no_vcgencmd)
    assert source is not None and source.label == "estimated:test-board"


def test_a_reader_that_raises_is_skipped_not_propagated(monkeypatch, no_vcgencmd, tmp_path):
    root = Path(shutil.copytree(FIXTURES / "jetson-jp5", tmp_path / "jetson"))
    shutil.copytree(FIXTURES / "no-sensor" / "proc", root / "proc")
    assert pick_source(MODEL, root=root, vcgencmd=no_vcgencmd).label == "measured:jetson-ina3221"

    def explode(self):
        raise RuntimeError("driver bug")

    monkeypatch.setattr(JetsonPower, "read", explode)
    source = pick_source(MODEL, root=root, vcgencmd=no_vcgencmd)
    assert source is not None and source.label == "estimated:test-board"


def test_jetson_goes_before_generic_hwmon_so_nested_rails_are_not_summed(no_vcgencmd):
    labels = [s.label for s in find_sources(FIXTURES / "hwmon-ina3221", no_vcgencmd)]
    assert labels.index("measured:jetson-ina3221") < labels.index("measured:hwmon:ina3221")
