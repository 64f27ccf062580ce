"""The dependency rule: a board installs edgefleet[device] only, and the agent never
imports TensorFlow. Proved twice: in the device-only environment scripts/test builds
(`.venvs/device`: `pip install '.[device,fleet]' pytest`, not editable, as on a board),
where this test file runs and an agent process fetches, self-tests and serves a model;
and in the full dev environment, where TensorFlow is importable but the agent's code
paths must still leave it alone."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import numpy as np
import pytest

import edgefleet
from edgefleet.protocol.topics import Topics
from tests.support import ROOT, AgentProcess, Watcher, http_infer, is_active, npy_bytes, publish_cli, top1

HEAVY = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization")
LIGHT = os.environ.get("EDGEFLEET_LIGHT") == "1"  # set by scripts/test for the device-only run


@pytest.mark.skipif(not LIGHT, reason="checks the device-only environment (EDGEFLEET_LIGHT=1, scripts/test)")
def test_device_environment_has_no_tensorflow_and_a_real_install():
    dists = sorted(d.metadata["Name"].lower() for d in importlib.metadata.distributions())
    assert [m for m in HEAVY if importlib.util.find_spec(m)] == [], dists
    assert not any(d.startswith(("tensorflow", "tf-keras", "tf_keras", "keras")) for d in dists), dists
    assert "edgefleet" in dists and "ai-edge-litert" in dists, dists
    # the installed copy, not the checkout: a board has no repository
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert Path(edgefleet.__file__).resolve().is_relative_to(site), edgefleet.__file__
    direct = importlib.metadata.distribution("edgefleet").read_text("direct_url.json") or "{}"
    assert '"editable": true' not in direct, direct


@pytest.mark.slow
def test_agent_from_device_install_fetches_verifies_and_serves(tmp_path, broker, prefix, keys, tiny):
    topics = Topics(prefix)
    watcher = Watcher(broker.address, [topics.reported("pi-lean")])
    agent = AgentProcess(tmp_path, "pi-lean", broker.address, prefix, keys.trust_dir).start()
    try:
        published = publish_cli(tiny.bundle, broker.address, prefix, keys.private, "--device", "pi-lean")
        watcher.wait_for(topics.reported("pi-lean"), is_active(published["bundle_id"]), 90)
        status, answer = http_infer(agent.http_port, npy_bytes(tiny.x))
        assert status == 200, answer
        top1_rate = float(np.mean(np.asarray(top1(answer)) == tiny.y))
        assert top1_rate >= 0.95, f"top-1 {top1_rate:.1%} on {len(tiny.y)} held-out digits"
    finally:
        code = agent.stop()
        watcher.close()
    assert code == 0, agent.log_text()
    assert "Traceback" not in agent.log_text(), agent.log_text()


def test_agent_code_paths_do_not_import_tensorflow_even_where_installed(tmp_path, keys, tiny):
    """Import the CLI and the daemon, build an agent, load and run a model in a Python that
    has TensorFlow (the dev environment: EDGEFLEET_DEV_PYTHON, else this one): no TensorFlow."""
    python = os.environ.get("EDGEFLEET_DEV_PYTHON") or sys.executable
    script = textwrap.dedent(f"""
        import importlib.util, sys
        assert importlib.util.find_spec("tensorflow"), (
            f"TensorFlow is not installed in {{sys.prefix}}: this check needs a Python that has it "
            "(set EDGEFLEET_DEV_PYTHON, as scripts/test does)")
        from pathlib import Path
        import numpy as np
        from click.testing import CliRunner
        from edgefleet.cli import main
        assert CliRunner().invoke(main, ["agent", "run", "--help"]).exit_code == 0
        from edgefleet.agent.config import parse_config
        from edgefleet.agent.daemon import Agent
        from edgefleet.runtime import TFLiteModel
        cfg = parse_config({{"device_id": "d", "state_dir": {str(tmp_path / "s")!r},
                             "trust_dir": {str(keys.trust_dir)!r}, "serve": {{"http": ""}}}})
        Agent(cfg)
        model = TFLiteModel(Path({str(tiny.tflite)!r}).read_bytes())
        outputs, _ = model.predict(np.load({str(tiny.eval)!r})["x"][:4])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        print(model.runtime.name, outputs.shape, heavy)
        assert not heavy, heavy
    """)
    proc = subprocess.run([python, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ai-edge-litert (4, 10) []"), proc.stdout
