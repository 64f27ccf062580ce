"""The systemd unit: the copy in systemd/ is what install-service writes, systemd parses it,
its security score does not get worse, and install-service refuses what would not run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgefleet.agent import service_unit
from edgefleet.agent.service_unit import directories, exec_quote, hidden_by_sandbox, render_unit
from edgefleet.cli import main
from tests.support import FIXTURES, ROOT

UNIT = ROOT / "systemd" / "edgefleet-agent.service"
ANALYZE = shutil.which("systemd-analyze")
# docs/operations.md records this score; a change that raises it must say why there
MAX_EXPOSURE = 1.5


def _config(folder: Path, extra: str = "") -> Path:
    (folder / "trusted").mkdir()
    shutil.copy(FIXTURES / "test-only-never-trust.pub", folder / "trusted")
    path = folder / "agent.toml"
    path.write_text(f'device_id = "pi-1"\nstate_dir = "/var/lib/edgefleet"\n'
                    f'trust_dir = "{folder / "trusted"}"\n{extra}')
    return path


def _dry_run(config: Path, *args: str):
    return CliRunner().invoke(main, ["agent", "install-service", "--config", str(config), "--dry-run", *args])


def test_the_unit_in_the_repository_is_the_one_install_service_writes():
    assert UNIT.read_text() == render_unit(), (
        "systemd/edgefleet-agent.service differs from agent/service_unit.py: edit the template there, then "
        "python -c 'from edgefleet.agent.service_unit import render_unit; print(render_unit(), end=\"\")' "
        "> systemd/edgefleet-agent.service")


def test_dry_run_prints_the_unit_for_this_installation(tmp_path):
    config = _config(tmp_path)
    result = _dry_run(config, "--user", "agentuser")
    assert result.exit_code == 0, result.output
    unit = result.stdout
    assert unit.startswith("# systemd unit of the edgefleet agent") and "Type=notify\n" in unit
    exec_line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_line.endswith(f"agent run --config {config}")
    assert exec_line.split("=", 1)[1].split()[0] in (str(Path(sys.executable).with_name("edgefleet")),
                                                    sys.executable)
    assert "User=agentuser\n" in unit and "StateDirectory=edgefleet\n" in unit
    assert "hidden from the service by PrivateTmp=" in result.stderr  # pytest's tmp_path is in /tmp


def test_dry_run_refuses_a_bad_config_and_install_needs_root(tmp_path, monkeypatch):
    config = _config(tmp_path, '[mqtt]\nhost = "mqtt://broker"\n')
    result = _dry_run(config)
    assert result.exit_code == 1 and "is a URL" in result.output and "not printed" in result.output
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    result = CliRunner().invoke(main, ["agent", "install-service", "--config", str(config)])
    assert result.exit_code == 1 and "run it as root" in result.output


def test_writable_places_follow_the_config():
    assert directories("/var/lib/edgefleet") == ["StateDirectory=edgefleet", "StateDirectoryMode=0750",
                                                 "RuntimeDirectory=edgefleet"]
    assert directories("/srv/edgefleet", "/srv/sockets/agent.sock") == [
        "ReadWritePaths=/srv/edgefleet", "RuntimeDirectory=edgefleet", "ReadWritePaths=-/srv/sockets"]
    assert directories("/var/lib/edgefleet", "/run/edgefleet/agent.sock")[-1] == "RuntimeDirectory=edgefleet"
    assert hidden_by_sandbox("/home/pi/venv/bin/edgefleet") == "ProtectHome="
    assert hidden_by_sandbox("/tmp/agent.toml") == "PrivateTmp="
    assert hidden_by_sandbox("/opt/edgefleet/venv/bin/edgefleet") is None


def test_exec_arguments_survive_systemd_parsing():
    assert exec_quote("/opt/edgefleet/venv/bin/edgefleet") == "/opt/edgefleet/venv/bin/edgefleet"
    assert exec_quote("/etc/my agent/a%b$c.toml") == '"/etc/my agent/a%%b$$c.toml"'


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_parses_the_unit_without_a_warning(tmp_path):
    config = _config(tmp_path)
    unit = tmp_path / service_unit.UNIT_NAME  # verify wants the real name and an ExecStart that exists
    unit.write_text(_dry_run(config).stdout)
    done = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "", done.stderr + done.stdout


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_security_exposure_stays_at_the_recorded_score():
    done = subprocess.run([ANALYZE, "security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}",
                           str(UNIT)], capture_output=True, text=True, timeout=60)
    last = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, last
    recorded = f"exposure level for edgefleet-agent.service: {MAX_EXPOSURE} OK"
    assert recorded in last, last
    assert recorded in (ROOT / "docs" / "operations.md").read_text(), "record the new score there"


def test_install_writes_the_unit_then_reloads_and_enables_it(tmp_path, monkeypatch):
    """The root path, with systemctl and the user faked (no service manager runs the tests)."""
    import pwd
    import types

    from edgefleet.cli import agent as agent_cli

    config = _config(tmp_path)
    calls: list[list[str]] = []

    def fake_run(args, **kwargs):
        calls.append(list(args))
        return types.SimpleNamespace(returncode=0, stdout="active model x v1, broker connected\n", stderr="")

    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(pwd, "getpwnam", lambda name: types.SimpleNamespace(pw_uid=990, pw_gid=990))
    monkeypatch.setattr(service_unit, "hidden_by_sandbox", lambda path: None)  # tmp_path is in /tmp
    monkeypatch.setattr(agent_cli, "UNIT_DIR", tmp_path / "units")
    monkeypatch.setattr(agent_cli.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(agent_cli.subprocess, "run", fake_run)
    result = CliRunner().invoke(main, ["agent", "install-service", "--config", str(config)])
    assert result.exit_code == 0, result.output
    written = tmp_path / "units" / service_unit.UNIT_NAME
    assert written.read_text() == _dry_run(config).stdout and written.stat().st_mode & 0o777 == 0o644
    assert calls[:2] == [["systemctl", "daemon-reload"],
                         ["systemctl", "enable", "--now", service_unit.UNIT_NAME]]
    assert "active model x v1, broker connected" in result.output
