"""The dependency rule: a board installs edgefleet[device] only, and the agent never
imports TensorFlow. Proved twice: in a virtual environment made with nothing but
`pip install .[device]`, where an agent process fetches, self-tests and serves a
model; and in the full dev environment, where TensorFlow is importable but the
agent's code paths must still leave it alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgefleet.protocol.topics import Topics
from tests.support import ROOT, AgentProcess, Watcher, http_infer, is_active, npy_bytes, publish_cli

HEAVY = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization")


@pytest.fixture(scope="session")
def device_python() -> str:
    """Python of a venv holding only edgefleet[device] (made once, refreshed each session)."""
    given = os.environ.get("EDGEFLEET_DEVICE_PYTHON")
    if given:
        return given
    venv = ROOT / ".venvs" / "device"
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([*pip, f"{ROOT}[device]"], check=True, timeout=900)
    # our own code changes between runs: reinstall it (not editable, as on a board)
    subprocess.run([*pip, "--no-deps", "--force-reinstall", str(ROOT)], check=True, timeout=300)
    return str(python)


@pytest.mark.slow
def test_device_environment_has_no_tensorflow(device_python):
    script = textwrap.dedent(f"""
        import importlib.metadata as md, importlib.util, json
        names = sorted(d.metadata["Name"].lower() for d in md.distributions())
        print(json.dumps({{"dists": names,
                           "found": [m for m in {HEAVY!r} if importlib.util.find_spec(m)]}}))
        """)
    probe = subprocess.run([device_python, "-c", script], capture_output=True, text=True, check=True)
    env = json.loads(probe.stdout)
    assert env["found"] == [], env
    assert "edgefleet" in env["dists"] and "ai-edge-litert" in env["dists"]
    assert not any(d.startswith(("tensorflow", "tf-keras", "keras")) for d in env["dists"])


@pytest.mark.slow
def test_agent_from_device_install_fetches_verifies_and_serves(
        tmp_path, device_python, broker, prefix, keys, digits):
    topics = Topics(prefix)
    watcher = Watcher(broker.address, [topics.reported("pi-lean")])
    agent = AgentProcess(tmp_path, "pi-lean", broker.address, prefix, keys.trust_dir,
                         python=device_python).start()
    try:
        published = publish_cli(digits.bundle, broker.address, prefix, keys.private, "--device", "pi-lean")
        watcher.wait_for(topics.reported("pi-lean"), is_active(published["bundle_id"]), 90)
        x = np.load(digits.eval)["x"][:50]
        status, answer = http_infer(agent.http_port, npy_bytes(x))
        assert status == 200 and len(answer["top1"]) == 50
    finally:
        code = agent.stop()
        watcher.close()
    assert code == 0, agent.log_text()
    assert "Traceback" not in agent.log_text(), agent.log_text()


def test_agent_code_paths_do_not_import_tensorflow_even_where_installed(tmp_path, keys):
    """Import the CLI and the daemon, build an agent, load and run a model: no TensorFlow."""
    script = textwrap.dedent(f"""
        import sys
        from click.testing import CliRunner
        from edgefleet.cli import main
        assert CliRunner().invoke(main, ["agent", "run", "--help"]).exit_code == 0
        from edgefleet.agent.config import parse_config
        from edgefleet.agent.daemon import Agent
        from edgefleet.runtime import find_runtime
        cfg = parse_config({{"device_id": "d", "state_dir": {str(tmp_path / "s")!r},
                             "trust_dir": {str(keys.trust_dir)!r}, "serve": {{"http": ""}}}})
        Agent(cfg)
        runtime = find_runtime("auto")
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        print(runtime.name, heavy)
        assert not heavy, heavy
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ai-edge-litert []")
