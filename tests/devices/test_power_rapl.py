"""Intel RAPL through powercap: package zones only, joules between samples, wrap-around."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgefleet.devices.power import EnergyMeter, RaplEnergy, RaplMeter, find_rapl_zones
from edgefleet.devices.power.rapl import energy_delta_uj

FIXTURES = Path(__file__).parent / "fixtures" / "power"
MAX_RANGE_UJ = 262143328850  # what the fixture's max_energy_range_uj holds
START_UJ = 123456789


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def rapl_root(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / "rapl", tmp_path / "rapl"))


def set_counter(root: Path, microjoules: int) -> None:
    (root / "sys/class/powercap/intel-rapl:0/energy_uj").write_text(f"{microjoules}\n")


def test_only_package_zones_count_not_subzones_or_psys():
    zones = find_rapl_zones(FIXTURES / "rapl")
    assert [(z.name, z.max_range_uj) for z in zones] == [("package-0", MAX_RANGE_UJ)]
    source = RaplEnergy.find(FIXTURES / "rapl")
    assert source is not None and source.label == "measured:rapl:package-0" and source.probe()


def test_delta_without_and_with_a_wrap():
    assert energy_delta_uj(1_000, 4_000, MAX_RANGE_UJ) == 3_000
    assert energy_delta_uj(MAX_RANGE_UJ - 1_000_000, 2_000_000, MAX_RANGE_UJ) == 3_000_000


def test_meter_gives_joules_between_samples_across_a_wrap(rapl_root):
    meter = RaplMeter(find_rapl_zones(rapl_root))
    assert meter.sample() == 0.0  # the first sample only sets the starting point
    set_counter(rapl_root, START_UJ + 5_000_000)
    assert meter.sample() == pytest.approx(5.0)
    set_counter(rapl_root, MAX_RANGE_UJ - 500_000)
    meter.sample()
    set_counter(rapl_root, 1_500_000)  # wrapped: 0.5 J to the top, 1.5 J after it
    assert meter.sample() == pytest.approx(2.0)


def test_energy_window_sums_samples_through_a_wrap(rapl_root):
    clock = Clock()
    meter = EnergyMeter(RaplEnergy(find_rapl_zones(rapl_root)), clock=clock)
    set_counter(rapl_root, MAX_RANGE_UJ - 2_000_000)
    assert meter.start()
    clock.now = 4.0
    set_counter(rapl_root, MAX_RANGE_UJ - 1_000_000)
    meter.sample()
    clock.now = 10.0
    set_counter(rapl_root, 4_000_000)  # wrapped between the sample and the stop
    window = meter.stop(inferences=50)
    assert window is not None and window.label == "measured:rapl:package-0"
    assert window.joules == pytest.approx(6.0, rel=0.01)  # 1 J, then 1 J to the top and 4 J after
    assert window.average_watts == pytest.approx(0.6, rel=0.01)
    assert window.millijoules_per_inference == pytest.approx(120.0, rel=0.01)


def test_unreadable_or_out_of_range_counters_give_no_reading(rapl_root):
    set_counter(rapl_root, MAX_RANGE_UJ + 1)  # beyond the documented range: not trusted
    source = RaplEnergy(find_rapl_zones(rapl_root))
    assert not source.probe() and source.open_window(0.0) is None
    broken = find_rapl_zones(FIXTURES / "broken")  # package-1's range is not a number: dropped
    assert [z.name for z in broken] == ["package-0"]
    assert not RaplEnergy(broken).probe() and RaplMeter(broken).sample() is None
    assert find_rapl_zones(FIXTURES / "nowhere") == [] and RaplEnergy.find(FIXTURES / "nowhere") is None
