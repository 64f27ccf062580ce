"""Board knowledge: detection, thermal and (later) power sensors, profiles.

Standard library and psutil only. Every reader takes its root path as a
parameter so that tests run it against fixture trees under tests/devices/.
"""

__all__ = ["board", "detect", "profiles", "thermal"]
