"""The one exception type the converter raises for problems a user can fix."""

from __future__ import annotations


class ConversionError(Exception):
    """Bad input (a file, a key, a mode) or a conversion that cannot go on.

    The message names the file or setting at fault and what to do, so the CLI can print
    it as is instead of a traceback.
    """
