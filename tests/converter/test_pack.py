"""`edgefleet pack` on the committed tiny int8 model: shipped byte for byte in a signed
bundle whose golden set the agent's self-test passes, and which a different model fails.
No TensorFlow: pack converts nothing. (Published float16 models: test_published_models.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgefleet.agent.selftest import run_selftest
from edgefleet.cli import main
from edgefleet.converter.errors import ConversionError
from edgefleet.converter.pack import GENERATED_WARNING, pack, stored_mode
from edgefleet.converter.sources import load_model_source
from edgefleet.converter.tflite_edit import read_model, write_model
from edgefleet.protocol.bundle import BundleError, open_bundle
from edgefleet.protocol.signing import TrustStore
from edgefleet.runtime import TFLiteModel
from edgefleet.tflite_graph import read_graph


def _other_weights(data: bytes) -> bytes:
    """The same graph with its largest weight tensor negated: another model, same I/O."""
    model = read_model(data)
    graph = read_graph(data)
    int8 = [t for t in graph.tensors[0] if t.is_constant and t.dtype == "int8"]
    weights = max(int8, key=lambda t: t.size_bytes)
    buffer = model.buffers[model.subgraphs[0].tensors[weights.index].buffer]
    values = np.asarray(buffer.data, np.uint8).view(np.int8).astype(np.int16)
    buffer.data = np.clip(-values, -127, 127).astype(np.int8).view(np.uint8)
    return write_model(model)


def test_pack_ships_the_tiny_int8_model_unchanged_with_a_golden_set_the_agent_passes(tiny, keys, tmp_path):
    out = tmp_path / "tiny.efb"
    args = ["pack", str(tiny.tflite), "--out", str(out), "--data", str(tiny.eval), "--key", str(keys.private),
            "--name", "tiny", "--version", "3", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    bundle = open_bundle(out.read_bytes(), TrustStore.from_folder(keys.trust_dir))
    assert bundle.model_bytes == tiny.tflite.read_bytes()
    model = bundle.manifest["model"]
    assert (model["quantization"], model["variant"]) == ("int8", "as-is")
    assert (bundle.name, bundle.version) == ("tiny", "3")
    assert report["golden"]["inputs"] == "data" and report["warnings"] == []
    assert report["inspection"]["op_counts"]["CONV_2D"] == 2  # edgefleet inspect's analysis
    assert sorted(bundle.files) == ["golden.npz", "model.tflite", "report.json", "report.md"]
    assert (tmp_path / "tiny.report.json").is_file() and (tmp_path / "tiny.report.md").is_file()

    selftest = run_selftest(TFLiteModel(bundle.model_bytes), bundle)
    assert selftest.passed, selftest.reason
    assert selftest.samples >= 4 and selftest.top1_agreement == 1.0
    # the golden set tells models apart: the same graph with other weights fails it
    other = run_selftest(TFLiteModel(_other_weights(bundle.model_bytes)), bundle)
    assert not other.passed


def test_pack_without_data_generates_inputs_and_says_what_the_selftest_then_checks(tiny, keys, tmp_path):
    result = pack(tiny.tflite, tmp_path / "t.efb", keys.private)
    assert result.report["warnings"] == [GENERATED_WARNING]
    assert result.report["golden"]["inputs"] == "generated"
    bundle = open_bundle((tmp_path / "t.efb").read_bytes(), TrustStore.from_folder(keys.trust_dir))
    assert bundle.model_bytes == tiny.tflite.read_bytes()
    assert run_selftest(TFLiteModel(bundle.model_bytes), bundle).passed


def test_pack_refuses_data_that_does_not_fit_and_never_overwrites(tiny, keys, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((4, 8, 8, 1), np.float32))
    with pytest.raises(ConversionError, match="missing"):
        pack(tiny.tflite, tmp_path / "a.efb", keys.private, data_path=bad)
    np.savez(bad, x=np.zeros((4, 9, 9, 1), np.float32))
    with pytest.raises(ConversionError, match="does not fit"):
        pack(tiny.tflite, tmp_path / "a.efb", keys.private, data_path=bad)
    pack(tiny.tflite, tmp_path / "a.efb", keys.private)
    with pytest.raises(ConversionError, match="--force"):
        pack(tiny.tflite, tmp_path / "a.efb", keys.private)
    pack(tiny.tflite, tmp_path / "a.efb", keys.private, force=True)
    with pytest.raises(ConversionError, match="is the model"):
        pack(tiny.tflite, tiny.tflite, keys.private, force=True)


def test_pack_has_help_with_an_example():
    result = CliRunner().invoke(main, ["pack", "--help"])
    assert result.exit_code == 0 and "edgefleet pack" in result.output and "--data" in result.output


def test_convert_sends_a_quantised_tflite_to_pack(tiny):
    with pytest.raises(ConversionError, match="edgefleet pack"):
        load_model_source(tiny.tflite)
    assert stored_mode(read_graph(tiny.tflite.read_bytes())) == "int8"


def test_pack_unsigned_makes_a_bundle_only_an_agent_allowing_unsigned_takes(tiny, keys, tmp_path):
    out = tmp_path / "u.efb"
    result = CliRunner().invoke(main, ["pack", str(tiny.tflite), "--out", str(out), "--unsigned", "--quiet"])
    assert result.exit_code == 0, result.output
    with pytest.raises(BundleError, match=r"unsigned .*allow_unsigned = true"):
        open_bundle(out.read_bytes(), TrustStore.from_folder(keys.trust_dir))
    bundle = open_bundle(out.read_bytes(), TrustStore.from_folder(keys.trust_dir, allow_unsigned=True))
    assert bundle.signed_by == "unsigned"
