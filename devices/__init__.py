"""Board knowledge: detection, thermal zones, power and energy sensors, profiles.

Standard library only. Every reader takes its root path as a
parameter so that tests run it against fixture trees under tests/devices/.
"""

__all__ = ["detect", "power", "profiles", "thermal"]
