"""The `edgefleet` command line: help everywhere, JSON for scripts, errors that say what to do."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from edgefleet.cli import main, need
from edgefleet.protocol.bundle import write_bundle

COMMANDS = [[], ["convert"], ["inspect"], ["keys"], ["keys", "generate"], ["keys", "list"],
            ["publish"], ["infer"], ["agent"], ["agent", "run"], ["monitor"], ["demo"]]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "edgefleet")
def test_every_command_has_help(args):
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_missing_extra_names_the_install_command():
    with pytest.raises(click.ClickException, match=r"pip install 'edgefleet\[converter\]'"):
        need("converter", "no_such_module_for_edgefleet")
    with pytest.raises(click.ClickException, match="paho_missing_parent"):
        need("device", "paho_missing_parent.mqtt")


def test_keys_generate_list_and_refuse_overwrite(tmp_path):
    runner = CliRunner()
    first = runner.invoke(main, ["keys", "generate", "--dir", str(tmp_path), "--json"])
    assert first.exit_code == 0, first.output
    info = json.loads(first.output)
    assert (tmp_path / "signing.key").stat().st_mode & 0o777 == 0o600
    listed = runner.invoke(main, ["keys", "list", str(tmp_path), "--json"])
    assert json.loads(listed.output)["key_ids"] == [info["key_id"]]
    again = runner.invoke(main, ["keys", "generate", "--dir", str(tmp_path)])
    assert again.exit_code != 0 and "exists" in again.output


def test_inspect_verifies_with_trust_folder_and_reports_damage(tmp_path, keys):
    path = tmp_path / "b.efb"
    write_bundle(path, {"name": "toy", "version": "1", "model": {"file": "model.tflite"}},
                 {"model.tflite": b"m" * 5000, "golden.npz": b"g"}, keys.key)
    ok = CliRunner().invoke(main, ["inspect", str(path), "--trust", str(keys.trust_dir), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["verification"] == {"checked": True, "ok": True,
                                                      "signed_by": keys.key.key_id}
    data = bytearray(path.read_bytes())
    data[60] ^= 0x01
    path.write_bytes(bytes(data))
    bad = CliRunner().invoke(main, ["inspect", str(path), "--trust", str(keys.trust_dir)])
    assert "REFUSED" in bad.output or bad.exit_code != 0


def test_inspect_reads_a_real_bundle_without_tensorflow(keys, tiny):
    result = CliRunner().invoke(main, ["inspect", str(tiny.bundle), "--trust", str(keys.trust_dir), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["verification"] == {"checked": True, "ok": True, "signed_by": keys.key.key_id}
    assert report["manifest"]["name"] == "tiny-digits"
    assert report["model"]["op_counts"]["CONV_2D"] == 2
    assert report["model"]["inputs"][0]["dtype"] == "int8"


def test_inspect_refuses_other_files(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "x.txt")])
    assert result.exit_code != 0 and "neither a bundle" in result.output


def test_monitor_json_needs_once():
    result = CliRunner().invoke(main, ["monitor", "--json"])
    assert result.exit_code != 0 and "--json goes with --once" in result.output


def test_publish_without_key_says_how_to_make_one(tmp_path, keys):
    path = tmp_path / "b.efb"
    write_bundle(path, {"name": "toy", "version": "1", "model": {"file": "model.tflite"}},
                 {"model.tflite": b"m", "golden.npz": b"g"}, keys.key)
    result = CliRunner().invoke(main, ["publish", str(path), "--device", "d", "--key",
                                       str(tmp_path / "none.key")])
    assert result.exit_code != 0 and "edgefleet keys generate" in result.output


def test_publish_chunk_size_outside_the_broker_safe_range_is_a_usage_error(tmp_path, keys):
    path = tmp_path / "b.efb"
    write_bundle(path, {"name": "toy", "version": "1", "model": {"file": "model.tflite"}},
                 {"model.tflite": b"m", "golden.npz": b"g"}, keys.key)
    for size in ("10", "999999"):
        result = CliRunner().invoke(main, ["publish", str(path), "--device", "d", "--chunk-size", size,
                                           "--key", str(keys.private), "--broker", "127.0.0.1:1"])
        assert result.exit_code == 2, result.output  # refused by click, before any connection
        assert "1024<=x<=122880" in result.output


def test_monitor_json_without_once_is_a_usage_error_even_without_the_fleet_extra(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "rich" else real_find_spec(name, *a))
    result = CliRunner().invoke(main, ["monitor", "--json"])
    assert result.exit_code == 2 and "--json goes with --once" in result.output
    assert "extra" not in result.output
