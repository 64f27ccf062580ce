"""The `edgefleet` command line: help everywhere, JSON for scripts, errors that say what to do."""

from __future__ import annotations

import json
import re
import traceback
import zipfile

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


def _walk(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            found += _walk(sub, (*path, name))
    return found


def test_every_command_shows_an_example_and_every_option_says_what_it_does():
    missing_example, missing_help = [], []
    for path, command in _walk(main):
        text = CliRunner().invoke(main, [*path, "--help"]).output
        # an "Example:" (or "Examples:") line of its own, then the command itself, before the options
        section = re.search(r"^\s*Examples?:\s*$(.*?)^Options:", text, re.MULTILINE | re.DOTALL)
        if section is None or " ".join(("edgefleet", *path, "")) not in section.group(1):
            missing_example.append(" ".join(path))
        for param in command.params:
            if isinstance(param, click.Option) and not (param.help or "").strip():
                missing_help.append(f"{' '.join(path)} {param.opts[0]}")
    assert not missing_example, f"no example (an 'Examples:' section with the command) in: {missing_example}"
    assert not missing_help, f"options without help text: {missing_help}"


def _flipped(data: bytes, offset: int) -> bytes:
    damaged = bytearray(data)
    damaged[offset] ^= 0xFF
    return bytes(damaged)


def test_inspect_of_a_damaged_bundle_never_shows_a_traceback(tmp_path, keys, tiny):
    data = tiny.bundle.read_bytes()
    with zipfile.ZipFile(tiny.bundle) as zf:  # every byte of the zip's own headers, a stride elsewhere
        headers = {i.header_offset + k for i in zf.infolist() for k in range(30 + len(i.filename))}
        central = set(range(zf.start_dir, len(data)))  # the central directory and its end record
    offsets = sorted({*range(0, len(data), 97), *headers, *central})
    path = tmp_path / "damaged.efb"
    refused = 0
    for offset in offsets:
        path.write_bytes(_flipped(data, offset))
        for trust in ([], ["--trust", str(keys.trust_dir)]):
            result = CliRunner().invoke(main, ["inspect", str(path), *trust])
            where = f"byte {offset} flipped, inspect {' '.join(trust)}"
            assert result.exception is None or isinstance(result.exception, SystemExit), (
                where, "".join(traceback.format_exception(result.exception)))
            assert "Traceback" not in result.output, (where, result.output)
            if result.exit_code == 0:
                assert not trust or "signature and hashes: OK" in result.output, (where, result.output)
            else:
                assert result.exit_code == 1, (where, result.output)
                assert ("REFUSED" in result.output or "DAMAGED" in result.output
                        or "Error: " in result.output), (where, result.output)
                refused += bool(trust)
    assert refused > len(offsets) // 2  # most flips are caught: the check is not vacuous


def test_inspect_without_trust_says_a_damaged_bundle_is_damaged(tmp_path, tiny):
    data = tiny.bundle.read_bytes()
    with zipfile.ZipFile(tiny.bundle) as zf:
        model = zf.getinfo("model.tflite")
    # a byte in the middle of model.tflite's compressed data: the manifest still reads
    path = tmp_path / "damaged.efb"
    middle = model.header_offset + 30 + len(model.filename) + model.compress_size // 2
    path.write_bytes(_flipped(data, middle))
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 1, result.output
    assert "container and hashes: DAMAGED: model.tflite" in result.output, result.output
    as_json = json.loads(CliRunner().invoke(main, ["inspect", str(path), "--json"]).output)
    assert as_json["contents"]["ok"] is False and "model.tflite" in as_json["contents"]["reason"]


def test_publish_of_a_model_says_to_convert_it_first(keys, tiny):
    result = CliRunner().invoke(main, ["publish", str(tiny.tflite), "--device", "d", "--key",
                                       str(keys.private), "--broker", "127.0.0.1:1"])
    assert result.exit_code == 1, result.output
    assert "is a TFLite model, not a bundle: run edgefleet convert first" in result.output, result.output
    assert "manifest.json" not in result.output


def test_keys_generate_into_a_folder_under_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "plain").write_text("a file where a folder is expected")
    result = CliRunner().invoke(main, ["keys", "generate", "--dir", str(tmp_path / "plain" / "keys")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "cannot create the key folder" in result.output and "plain" in result.output, result.output
    assert "is not a folder" in result.output, result.output


def test_keys_list_of_a_missing_folder_fails(tmp_path):
    result = CliRunner().invoke(main, ["keys", "list", str(tmp_path / "nowhere")])
    assert result.exit_code == 1, result.output
    assert "does not exist" in result.output and "no public keys" not in result.output
