"""`edgefleet demo` runs the whole path, prints the telemetry table and leaves nothing running."""

from __future__ import annotations

import os
import re

import pytest

from tests.support import run_cli

pytestmark = pytest.mark.slow


def test_demo_exits_zero_prints_telemetry_and_stops_its_agent():
    proc = run_cli("demo", "--requests", "60", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "telemetry (as the agent measured it)" in out
    count = re.search(r"│ inferences\s+│\s+(\d+) │", out)
    assert count and int(count.group(1)) >= 60, out
    assert re.search(r"latency p50\s+│\s+[\d.]+ ms", out), out
    pid = int(re.search(r"agent pid (\d+)", out).group(1))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the agent process is gone
