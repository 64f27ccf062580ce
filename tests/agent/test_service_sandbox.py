"""The agent works inside the unit's sandbox: the system call filter, MemoryDenyWriteExecute=
(no JIT in LiteRT/XNNPACK, no executable stack) and the socket families of
systemd/edgefleet-agent.service, applied by tests/agent/unit_sandbox.py as systemd would."""

from __future__ import annotations

import ctypes.util
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from edgefleet.protocol.bundle import open_bundle
from edgefleet.protocol.signing import TrustStore
from edgefleet.protocol.topics import Topics
from edgefleet.runtime import TFLiteModel
from tests.support import ROOT, AgentProcess, Watcher, http_infer, is_active, npy_bytes, publish_cli

pytestmark = pytest.mark.slow
UNIT = ROOT / "systemd" / "edgefleet-agent.service"
SANDBOX = Path(__file__).with_name("unit_sandbox.py")


def _sandboxed_python(folder: Path) -> str:
    """A `python` that runs under the unit's filters (AgentProcess takes an interpreter)."""
    wrapper = folder / "sandboxed-python"
    python = sys.executable
    wrapper.write_text(f'#!/bin/sh\nexec "{python}" "{SANDBOX}" "{UNIT}" -- "{python}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return str(wrapper)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None or ctypes.util.find_library("seccomp") is None,
                    reason="needs systemd-analyze (system call groups) and libseccomp")
def test_agent_installs_and_serves_under_the_units_seccomp_filters(tmp_path, broker, prefix, keys, tiny):
    agent = AgentProcess(tmp_path, "pi-sandbox", broker.address, prefix, keys.trust_dir,
                         python=_sandboxed_python(tmp_path))
    topics = Topics(prefix)
    watcher = Watcher(broker.address, [topics.reported("pi-sandbox")])
    try:
        agent.start()
        sent = publish_cli(tiny.bundle, broker.address, prefix, keys.private, "--device", "pi-sandbox")
        watcher.wait_for(topics.reported("pi-sandbox"), is_active(sent["bundle_id"]), 60)
        assert agent.proc is not None
        status_lines = Path(f"/proc/{agent.proc.pid}/status").read_text().splitlines()
        assert "Seccomp:\t2" in status_lines and "NoNewPrivs:\t1" in status_lines  # the filters are on
        status, answer = http_infer(agent.http_port, npy_bytes(tiny.x[:20]))
        assert status == 200, answer
        expected = TFLiteModel(open_bundle(tiny.bundle.read_bytes(),
                                           TrustStore.from_folder(keys.trust_dir)).model_bytes)
        (scores,) = expected.run(tiny.x[:20])[0].values()
        (top1,) = answer["top1"].values()
        assert top1 == np.argmax(scores, axis=-1).tolist()
        assert agent.stop() == 0, agent.log_text()
    finally:
        agent.stop()
        watcher.close()
    log = agent.log_text()
    assert "Traceback" not in log and "Operation not permitted" not in log, log
