"""Which power source this device has, best first, and the pick: first that reads, else the estimate.

Order: the Pi 5 PMIC (every rail of the board), the Jetson module's INA3221 (its rails nest, so
it goes before the generic hwmon reader, which would sum them), hwmon power monitors, then RAPL
(the CPU package only). The estimate from the profile comes last and only when a `PowerModel`
is given; without one (a profile with no sourced `[power]` constants) there is no figure at all
rather than an invented one.

A source that fails in any way is logged and skipped: nothing raises out of `pick_source`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edgefleet.devices.power.estimate import Estimator, PowerModel
from edgefleet.devices.power.hwmon import find_hwmon
from edgefleet.devices.power.jetson import JetsonPower
from edgefleet.devices.power.pi5_pmic import Pi5Pmic
from edgefleet.devices.power.rapl import RaplEnergy
from edgefleet.devices.power.reading import Source

log = logging.getLogger(__name__)


def find_sources(root: str | Path = "/", vcgencmd: str | Path = "vcgencmd") -> list[Source]:
    """The measured sources that may exist here, best first (none of them is read yet)."""
    found: list[Source] = [Pi5Pmic(vcgencmd), JetsonPower(root)]
    try:
        found.extend(find_hwmon(root))
        rapl = RaplEnergy.find(root)
    except Exception as exc:  # a reader bug must not stop the daemon: report it and go on
        log.warning("power sensors under %s: discovery failed: %r", root, exc)
        return found
    if rapl is not None:
        found.append(rapl)
    return found


def _reads(source: Source) -> bool:
    try:
        return source.probe()
    except Exception as exc:
        log.warning("power source %s skipped: %r", getattr(source, "label", source), exc)
        return False


def pick_source(model: PowerModel | None = None, *, root: str | Path = "/",
                vcgencmd: str | Path = "vcgencmd") -> Source | None:
    """The first measured source that reads now, else the estimate from MODEL, else None.

    ROOT prefixes every sysfs and /proc path (a fixture tree in tests); VCGENCMD is the tool's
    path (a stand-in script in tests).
    """
    for source in find_sources(root, vcgencmd):
        if _reads(source):
            return source
    if model is not None:
        estimate = Estimator(model, root)
        if _reads(estimate):
            return estimate
    return None
