from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefleet.converter.errors import ConversionError
from edgefleet.protocol.bundle import BundleError, open_bundle
from edgefleet.protocol.signing import TrustStore, generate_keypair
from edgefleet.runtime import TFLiteModel
from tests.support import Keys

if importlib.util.find_spec("tensorflow") is None:  # find, not import: collection stays light
    pytest.skip("needs the converter extra (TensorFlow)", allow_module_level=True)

SelftestRule = Callable[[dict[str, np.ndarray], Any], bool]
MANIFEST_KEYS = {"name", "version", "created_at", "target", "runtime", "requires", "model", "selftest",
                 "metrics", "converter", "format", "files"}


def _golden(bundle: Any) -> Any:
    from edgefleet.protocol import golden

    return golden.decode(bundle.files["golden.npz"], bundle.manifest["selftest"])


@pytest.fixture(scope="module")
def bundle(converted: dict[str, Any], keys: Keys) -> Any:
    data = converted["result"].bundle_path.read_bytes()
    return open_bundle(data, TrustStore.from_folder(keys.trust_dir))


@pytest.mark.slow
def test_bundle_verifies_only_with_the_matching_key(
    converted: dict[str, Any], bundle: Any, tmp_path: Path
) -> None:
    result = converted["result"]
    assert result.bundle_size == result.bundle_path.stat().st_size
    assert bundle.manifest == result.manifest
    assert set(bundle.files) == {"model.tflite", "golden.npz", "report.json", "report.md"}
    generate_keypair(tmp_path)
    with pytest.raises(BundleError, match="not in the trust store"):
        open_bundle(result.bundle_path.read_bytes(), TrustStore.from_folder(tmp_path))


@pytest.mark.slow
def test_manifest_has_the_agreed_shape(bundle: Any) -> None:
    m = bundle.manifest
    assert set(m) == MANIFEST_KEYS
    assert m["name"] == "model" and m["version"] == "1"  # name defaults to the file's stem
    created = datetime.fromisoformat(m["created_at"])
    assert created.utcoffset() == timedelta(0)
    assert datetime.now(timezone.utc) - created < timedelta(minutes=10)
    assert m["target"]["profile"].startswith("generic-") and m["target"]["accelerator"] == "none"
    assert m["runtime"] == {"delegate": "cpu", "delegate_library": "", "delegate_options": {},
                            "min_versions": {"ai-edge-litert": "1.2.0", "tflite-runtime": "2.14.0"}}
    assert m["requires"] == {"runtimes": {"ai-edge-litert": ">=1.2.0", "tflite-runtime": ">=2.14.0"},
                             "python": ">=3.10", "numpy": ">=1.23,<3"}
    model = m["model"]
    assert set(model) == {"file", "quantization", "variant", "size_bytes", "inputs", "outputs"}
    assert model["file"] == "model.tflite" and model["quantization"] == "int8"
    assert model["size_bytes"] == len(bundle.model_bytes)
    for spec in model["inputs"] + model["outputs"]:
        assert set(spec) == {"name", "tensor", "shape", "dtype", "scale", "zero_point"}
        assert spec["dtype"] == "int8" and spec["scale"] > 0
    assert model["inputs"][0]["shape"] == [1, 8, 8, 1]
    assert model["inputs"][0]["name"] == "image"  # the Keras input's name, as the signature has it
    assert model["outputs"][0]["shape"] == [1, 10]
    output = model["outputs"][0]["name"]
    st = m["selftest"]
    assert set(st) == {"file", "format", "samples", "budget_bytes", "inputs", "outputs"}
    assert st["file"] == "golden.npz" and st["format"] == "edgefleet.golden/2" and st["samples"] == 16
    assert set(st["inputs"]) == {"image"} and set(st["outputs"]) == {output}
    check = st["outputs"][output]
    assert check["class_scores"] and check["min_top1_agreement"] == 1.0
    assert check["max_mean_abs_error"] == pytest.approx(2 * model["outputs"][0]["scale"])
    metrics = m["metrics"]
    assert set(metrics) == {"float_top1", "quantized_top1", "agreement_with_float",
                            "eval_samples", "float_size_bytes", "model_size_bytes", "outputs"}
    assert set(metrics["outputs"]) == {output} and metrics["outputs"][output]["snr_db"] > 20
    assert metrics["eval_samples"] == 360
    assert metrics["model_size_bytes"] == model["size_bytes"]
    assert metrics["float_size_bytes"] > 3 * metrics["model_size_bytes"]
    assert set(m["converter"]) == {"edgefleet", "tensorflow", "keras"}


@pytest.mark.slow
def test_int8_accuracy_is_within_1_5_points_of_float(bundle: Any) -> None:
    metrics = bundle.manifest["metrics"]
    assert metrics["float_top1"] >= 0.97
    assert metrics["quantized_top1"] >= metrics["float_top1"] - 0.015
    assert metrics["agreement_with_float"] >= 0.98


@pytest.mark.slow
def test_golden_set_passes_the_selftest_on_this_runtime(
    bundle: Any, selftest_passes: SelftestRule
) -> None:
    golden = _golden(bundle)
    model = TFLiteModel(bundle.model_bytes)
    (inp,), (out,) = model.inputs, model.outputs
    assert set(golden.inputs) == {inp.name} and set(golden.references) == {out.name}
    # int8 input: the golden set keeps the quantised tensor as it is
    assert golden.inputs[inp.name].dtype == np.int8 and golden.inputs[inp.name].shape == (16, 8, 8, 1)
    assert golden.references[out.name].shape == (16, 10)
    outputs, _ = model.run(golden.inputs)
    assert selftest_passes(outputs, golden)


@pytest.mark.slow
def test_selftest_accepts_other_kernels_and_rejects_a_wrong_model(
    bundle: Any, digits_files: dict[str, Path], selftest_passes: SelftestRule
) -> None:
    import keras
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgefleet.converter.data import load_npz
    from edgefleet.converter.quantization import QuantOptions, quantize
    from edgefleet.converter.sources import source_from_keras

    golden = _golden(bundle)
    right = TFLiteModel(bundle.model_bytes)
    (in_spec,), (out_spec,) = right.inputs, right.outputs
    # The reference kernels are a different (correct) implementation of every op.
    interpreter = Interpreter(model_content=bundle.model_bytes,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    (out_scale, out_zero) = out["quantization"]
    outputs = []
    for q in golden.inputs[in_spec.name]:  # the quantised tensor, as stored
        interpreter.set_tensor(inp["index"], q[None])
        interpreter.invoke()
        outputs.append((interpreter.get_tensor(out["index"])[0].astype(np.float32) - out_zero)
                       * out_scale)
    assert selftest_passes({out_spec.name: np.stack(outputs)}, golden)

    # A model with damaged first-layer weights must not pass.
    model = keras.models.load_model(digits_files["model"], compile=False)
    weights = model.get_weights()
    weights[0] = weights[0] + np.random.default_rng(0).normal(0, 0.05, weights[0].shape)
    model.set_weights(weights)
    damaged = TFLiteModel(quantize(source_from_keras(model), load_npz(digits_files["calib"])[0],
                                   QuantOptions("int8")))
    assert not selftest_passes(damaged.run(golden.inputs)[0], golden)
    # Nor does the right model fed wrongly scaled inputs (the real values, 255 times too large).
    real = in_spec.dequantize(golden.inputs[in_spec.name])
    assert not selftest_passes(right.run(real * 255)[0], golden)


@pytest.mark.slow
def test_report_and_progress(converted: dict[str, Any], bundle: Any) -> None:
    result = converted["result"]
    report = result.report
    assert json.loads(bundle.files["report.json"]) == report
    assert report["warnings"] == []
    assert report["data"]["calibration_samples_used"] == 200
    # a CPU target without --mode builds the "auto" set and recommends the smallest that passes
    assert [v["name"] for v in report["variants"]] == ["int8", "float16", "dynamic"]
    assert report["chosen"] == "int8" and "smallest compressed size" in report["recommendation"]
    for v in report["variants"]:
        assert v["size_ratio"] < 0.6 and v["metrics"]["top1"] >= 0.97
        assert v["latency_p50_ms"]["1"] > 0 and v["gate"]["passed"]
    int8 = report["variants"][0]
    assert int8["worst_layers"] and int8["worst_layers"][0]["rmse_over_scale"] >= 0
    markdown = bundle.files["report.md"].decode()
    assert "| int8 |" in markdown and "| float32 (reference) |" in markdown
    assert set(result.report_paths) == {"json", "md", "png"}
    assert result.report_paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    messages = converted["messages"]
    assert messages[0].startswith("loading model") and messages[-1].startswith("writing")
    assert any(m == "building int8" for m in messages)


@pytest.mark.slow
def test_unlabelled_eval_data_gives_agreement_only(
    digits_files: dict[str, Path], keys: Keys, tmp_path: Path
) -> None:
    from edgefleet.converter.build import convert

    x_eval = np.load(digits_files["eval"])["x"]
    np.savez(tmp_path / "unlabelled.npz", x=x_eval)
    result = convert(digits_files["model"], digits_files["calib"], tmp_path / "b.efb",
                     keys.private, eval_path=tmp_path / "unlabelled.npz",
                     name="digits", version="2", target="rpi5", golden_samples=5)
    m = result.manifest
    assert (m["name"], m["version"], m["target"]["profile"]) == ("digits", "2", "rpi5")
    assert m["metrics"]["float_top1"] is None and m["metrics"]["quantized_top1"] is None
    assert m["metrics"]["agreement_with_float"] >= 0.98
    assert m["selftest"]["samples"] == 5
    assert any("no labels" in w for w in result.report["warnings"])


@pytest.mark.slow
def test_without_eval_data_golden_comes_from_calibration(
    digits_files: dict[str, Path], keys: Keys, tmp_path: Path
) -> None:
    from edgefleet.converter.build import convert

    result = convert(digits_files["model"], digits_files["calib"], tmp_path / "b.efb",
                     keys.private, calibration_samples=64)
    metrics = result.manifest["metrics"]
    assert metrics["eval_samples"] == 0 and metrics["agreement_with_float"] is None
    assert result.report["selftest"]["source"] == "calibration"
    assert result.report["data"]["calibration_samples_used"] == 64


# Errors that must be clear and come before any slow work.

@pytest.mark.parametrize(("mode", "message"), [
    ("fp8", "unknown variant 'fp8'"),
    ("pruned-int4", "unknown variant 'pruned-int4'"),
])
def test_unsupported_mode(tmp_path: Path, mode: str, message: str) -> None:
    from edgefleet.converter.build import convert

    private, _ = generate_keypair(tmp_path)
    with pytest.raises(ConversionError, match=message):
        convert(tmp_path / "m.keras", tmp_path / "c.npz", tmp_path / "b.efb", private, mode=mode)


def test_missing_model_file(tmp_path: Path) -> None:
    from edgefleet.converter.build import convert

    private, _ = generate_keypair(tmp_path)
    with pytest.raises(ConversionError, match=r"model .*missing\.keras does not exist"):
        convert(tmp_path / "missing.keras", tmp_path / "c.npz", tmp_path / "b.efb", private)
    assert not (tmp_path / "b.efb").exists()


def test_missing_signing_key(tmp_path: Path) -> None:
    from edgefleet.converter.build import convert

    with pytest.raises(ConversionError, match=r"signing key .* not found"):
        convert(tmp_path / "m.keras", tmp_path / "c.npz", tmp_path / "b.efb", tmp_path / "k.key")


@pytest.mark.slow
def test_calibration_file_without_x(
    digits_files: dict[str, Path], keys: Keys, tmp_path: Path
) -> None:
    from edgefleet.converter.build import convert

    calib = tmp_path / "calib.npz"
    np.savez(calib, images=np.zeros((4, 8, 8, 1)))
    with pytest.raises(ConversionError, match=r"calib.npz has no 'x' array \(it has: images\)"):
        convert(digits_files["model"], calib, tmp_path / "b.efb", keys.private)


@pytest.mark.slow
def test_eval_data_of_the_wrong_shape(
    digits_files: dict[str, Path], keys: Keys, tmp_path: Path
) -> None:
    from edgefleet.converter.build import convert

    bad = tmp_path / "eval.npz"
    np.savez(bad, x=np.zeros((4, 64)), y=np.zeros(4, np.int64))
    with pytest.raises(ConversionError, match=r"evaluation data has samples of shape \(64,\)"):
        convert(digits_files["model"], digits_files["calib"], tmp_path / "b.efb",
                keys.private, eval_path=bad)


# The full pipeline: targets, variants, the accuracy gate.

@pytest.mark.slow
def test_accuracy_gate_fails_the_conversion_with_the_figures(
    digits_files: dict[str, Path], keys: Keys, tmp_path: Path
) -> None:
    """Calibrated on inputs 100x too large, int8 loses most of its accuracy: the gate must
    stop the conversion with both figures and the budget, and write no bundle."""
    from click.testing import CliRunner

    from edgefleet.cli import main

    calib = tmp_path / "bad-calib.npz"
    np.savez(calib, x=np.load(digits_files["calib"])["x"] * 100.0)
    out = tmp_path / "b.efb"
    result = CliRunner().invoke(main, [
        "convert", str(digits_files["model"]), "--calib", str(calib), "--eval", str(digits_files["eval"]),
        "--out", str(out), "--key", str(keys.private), "--mode", "int8",
        "--max-accuracy-drop", "0.5", "--no-latency", "--quiet"])
    assert result.exit_code == 1, result.output
    assert "int8: top-1 " in result.output and "vs float 99.4%" in result.output
    assert "above the 0.5 pp allowed (--max-accuracy-drop)" in result.output
    assert not out.exists()
    # the report of the failed conversion is written all the same, and says why
    report = json.loads((tmp_path / "b.report.json").read_text())
    assert report["chosen"] is None and not report["variants"][0]["gate"]["passed"]
    assert "above the 0.5 pp allowed" in (tmp_path / "b.report.md").read_text()


@pytest.mark.slow
def test_edgetpu_target_gives_uint8_static_fully_mappable_model(
    digits_files: dict[str, Path], keys: Keys, tmp_path: Path
) -> None:
    from edgefleet.converter.build import convert

    result = convert(digits_files["model"], digits_files["calib"], tmp_path / "b.efb",
                     keys.private, eval_path=digits_files["eval"], target="coral-usb",
                     measure_latency=False, chart=False)
    m = result.manifest
    assert m["target"] == {"profile": "coral-usb", "accelerator": "edgetpu"}
    assert m["runtime"]["delegate"] == "edgetpu" and m["runtime"]["delegate_options"] == {"device": "usb"}
    assert [v["name"] for v in result.report["variants"]] == ["int8"]
    assert m["model"]["inputs"][0]["dtype"] == "uint8" and m["model"]["inputs"][0]["shape"] == [1, 8, 8, 1]
    assert result.report["variants"][0]["edgetpu"]["fully_mappable"]
    assert any("edgetpu_compiler is not installed" in w for w in result.report["warnings"])
    assert m["metrics"]["quantized_top1"] >= m["metrics"]["float_top1"] - 0.01


@pytest.mark.slow
def test_float_tflite_source_converts_through_ai_edge_quantizer(
    digits_files: dict[str, Path], keys: Keys, tmp_path: Path
) -> None:
    from edgefleet.converter.build import convert
    from edgefleet.converter.sources import load_model_source

    float_model = tmp_path / "digits.tflite"
    float_model.write_bytes(load_model_source(digits_files["model"]).float_tflite())
    result = convert(float_model, digits_files["calib"], tmp_path / "b.efb", keys.private,
                     eval_path=digits_files["eval"], variants="int8,dynamic", measure_latency=False,
                     chart=False)
    assert result.report["source"]["kind"] == "tflite"
    for v in result.report["variants"]:
        assert v["metrics"]["top1"] >= 0.97 and v["size_ratio"] < 0.4
