"""Power and energy: sensor readers, the profile estimate, and an energy meter for telemetry.

Every figure is labelled `measured:<sensor>` or `estimated:<model>` by the source that made it
(reading.py). One module per sensor kind, each taking an injectable root (a path prefix) or the
path of `vcgencmd`, so that tests run it against fixture trees or a stand-in script:

- pi5_pmic: Raspberry Pi 5 PMIC rails (`vcgencmd pmic_read_adc`)
- hwmon: INA219/220/226/230/231 and INA3221 power monitors on hwmon
- jetson: Jetson INA3221 (IIO on JetPack 4, hwmon on JetPack 5+)
- rapl: Intel RAPL package energy, wrap-around handled
- apex: the PCIe Edge TPU's temperature and trip points
- throttle: Raspberry Pi `vcgencmd get_throttled` flags
- estimate: power from a profile's sourced constants, scaled by CPU and accelerator busy time
- meter: energy windows (joules, average watts, mJ per inference, the part above idle)
- sources: the pick of the best source on this device

Standard library only. No reader was verified on real hardware: see each module's docstring.
"""

from __future__ import annotations

from edgefleet.devices.power.apex import EdgeTpuThermal, read_edgetpu_thermal
from edgefleet.devices.power.estimate import Estimator, PowerModel, read_cpu_ticks
from edgefleet.devices.power.hwmon import HwmonPower, find_hwmon
from edgefleet.devices.power.jetson import JetsonPower, read_jetson_rails
from edgefleet.devices.power.meter import EnergyMeter, EnergyWindow, IdleBaseline, measure_idle
from edgefleet.devices.power.pi5_pmic import Pi5Pmic, parse_pmic_adc
from edgefleet.devices.power.rapl import RaplEnergy, RaplMeter, find_rapl_zones
from edgefleet.devices.power.reading import PowerReading, Source, estimated, is_measured, measured
from edgefleet.devices.power.sources import find_sources, pick_source
from edgefleet.devices.power.throttle import ThrottleState, parse_throttled, read_throttled

__all__ = [
    "EdgeTpuThermal", "EnergyMeter", "EnergyWindow", "Estimator", "HwmonPower", "IdleBaseline",
    "JetsonPower", "Pi5Pmic", "PowerModel", "PowerReading", "RaplEnergy", "RaplMeter", "Source",
    "ThrottleState", "estimated", "find_hwmon", "find_rapl_zones", "find_sources", "is_measured",
    "measure_idle", "measured", "parse_pmic_adc", "parse_throttled", "pick_source", "read_cpu_ticks",
    "read_edgetpu_thermal", "read_jetson_rails", "read_throttled",
]
