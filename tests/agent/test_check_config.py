"""`edgefleet agent check-config`: a config that would stop the agent is refused with what to
fix, before a unit is enabled; relative paths resolve against the config file's folder."""

from __future__ import annotations

import ctypes.util
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgefleet.agent import config_check
from edgefleet.agent.config import load_config
from edgefleet.cli import main
from tests.support import FIXTURES

GOOD = """\
device_id = "pi-1"
state_dir = "state"
trust_dir = "trusted"
[mqtt]
host = "{host}"
port = 1883
[serve]
http = "{http}"
{serve}
[runtime]
delegate = "{delegate}"
allow_cpu_fallback = {fallback}
"""


def _config(folder: Path, host: str = "broker.local", http: str = "127.0.0.1:8470", delegate: str = "cpu",
            fallback: str = "false", keys: bool = True, extra: str = "", serve: str = "") -> Path:
    (folder / "trusted").mkdir(exist_ok=True)
    if keys:
        shutil.copy(FIXTURES / "test-only-never-trust.pub", folder / "trusted")
    path = folder / "agent.toml"
    text = GOOD.format(host=host, http=http, delegate=delegate, fallback=fallback, serve=serve)
    path.write_text(text + extra)
    return path


def _check(path: Path, *args: str):
    return CliRunner().invoke(main, ["agent", "check-config", str(path), *args])


def test_good_config_passes_and_json_shows_paths_resolved_against_its_folder(tmp_path):
    path = _config(tmp_path)
    result = _check(path)
    assert result.exit_code == 0, result.output
    assert "OK" in result.output and "broker broker.local:1883" in result.output
    report = json.loads(_check(path, "--json").output)
    assert report["ok"] is True and report["problems"] == []
    assert report["resolved"]["state_dir"] == str(tmp_path / "state")
    assert report["resolved"]["trust_dir"] == str(tmp_path / "trusted")


@pytest.mark.parametrize("change, key, words", [
    ({"host": "broker.local:1883"}, "[mqtt] host", "write host = 'broker.local' and port = 1883"),
    ({"host": "mqtt://broker.local"}, "[mqtt] host", "is a URL"),
    ({"host": "broker local"}, "[mqtt] host", "not a host name"),
    ({"host": ""}, "[mqtt] host", "is empty"),
    ({"http": "unix:"}, "[serve] http", "socket's file name"),
    ({"delegate": "edgetpu"}, "[runtime] delegate", "libedgetpu.so.1 is not installed"),
    ({"extra": "[telemetry]\ninterval = 5\n"}, "file", "unknown key(s) ['interval']"),
    ({"extra": "[mqtt]\nport = 1\n"}, "file", "not valid TOML"),
])
def test_bad_config_fails_and_says_what_to_fix(tmp_path, monkeypatch, change, key, words):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)  # no Edge TPU here
    path = _config(tmp_path, **change)
    result = _check(path)
    assert result.exit_code == 1, result.output
    assert "error(s), the agent would not work" in result.output and words in result.output
    report = json.loads(_check(path, "--json").output)
    assert report["ok"] is False
    assert any(p["level"] == "error" and p["key"] == key and words in p["message"]
               for p in report["problems"])


def test_missing_trust_folder_and_damaged_key_are_errors_an_empty_one_a_warning(tmp_path):
    path = _config(tmp_path, keys=False)
    result = _check(path)
    assert result.exit_code == 0 and "holds no trusted .pub key" in result.output  # keys may come later
    (tmp_path / "trusted" / "bad.pub").write_text("not a key")
    result = _check(path)
    assert result.exit_code == 1 and "is not an Ed25519 PEM public key" in result.output
    shutil.rmtree(tmp_path / "trusted")
    result = _check(path)
    assert result.exit_code == 1 and f"{tmp_path / 'trusted'} does not exist" in result.output


def test_state_dir_that_is_a_file_and_missing_runtime_are_errors(tmp_path, monkeypatch):
    path = _config(tmp_path)
    (tmp_path / "state").write_text("oops")
    monkeypatch.setattr(config_check, "_installed", lambda module: False)
    report = json.loads(_check(path, "--json").output)
    errors = {p["key"] for p in report["problems"] if p["level"] == "error"}
    assert errors == {"state_dir", "[runtime] runtime"}
    assert any("pip install 'edgefleet[device]'" in p["message"] for p in report["problems"])


def test_warnings_do_not_fail_the_check(tmp_path, monkeypatch):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123456789abcdef\n")
    token.chmod(0o644)
    path = _config(tmp_path, http="0.0.0.0:8470", delegate="edgetpu", fallback="true",
                   serve='allow_remote = true\ntoken_file = "token"')
    result = _check(path)
    assert result.exit_code == 0, result.output
    assert "readable by other users" in result.output and "run on the CPU" in result.output
    token.write_text("short")
    result = _check(path)
    assert result.exit_code == 1 and "[serve] token_file" in result.output and "at least 16" in result.output


@pytest.mark.parametrize("host", ["192.168.1.10", "::1", "broker", "mqtt.example.com", "broker_1.lan."])
def test_broker_addresses_the_client_takes(host):
    assert config_check.broker_host_problem(host) is None


def test_relative_paths_resolve_against_the_config_folder_not_the_working_one(tmp_path, monkeypatch):
    folder = tmp_path / "etc"
    folder.mkdir()
    path = _config(folder, http="unix:run/agent.sock")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(Path("..") / "etc" / "agent.toml")
    assert cfg.state_dir == folder / "state" and cfg.state_dir.is_absolute()
    assert cfg.trust_dir == folder / "trusted"
    assert cfg.serve.http == f"unix:{folder / 'run' / 'agent.sock'}"
    absolute = path.read_text().replace('state_dir = "state"', f'state_dir = "{tmp_path / "abs"}"')
    path.write_text(absolute)
    assert load_config(path).state_dir == tmp_path / "abs"


def test_agent_run_exits_78_on_a_bad_config_so_systemd_does_not_restart_it(tmp_path):
    path = _config(tmp_path, extra="colour = 1\n")
    result = CliRunner().invoke(main, ["agent", "run", "--config", str(path)])
    assert result.exit_code == 78, result.output
    assert "check-config" in result.output
