"""Running Raspberry Pi's `vcgencmd`, whose path is a parameter so that tests run a stand-in script.

A board without the tool, a tool that fails, hangs or prints something undecodable all give
None: the readers built on it then report "no reading" instead of raising.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

DEFAULT_TIMEOUT_S = 2.0  # the firmware answers in milliseconds; a hung mailbox must not stall telemetry


def run_vcgencmd(args: Sequence[str], command: str | Path = "vcgencmd",
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> str | None:
    """Standard output of `command args...`, or None when it cannot be run or exits non-zero."""
    try:
        proc = subprocess.run([str(command), *args], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except (OSError, subprocess.SubprocessError, ValueError):  # missing, not executable, timeout, bad bytes
        return None
    return proc.stdout if proc.returncode == 0 else None
