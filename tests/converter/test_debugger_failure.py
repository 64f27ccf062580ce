"""The QuantizationDebugger only ranks int8 layers: when it fails, the int8 variant is still
built and the report says why the ranking is missing; --keep-float-layers auto, which
needs the ranking, fails with a message instead of a traceback.

The failure is TensorFlow's own (2.21): its debugger takes an int8 input whose zero point
is 0 for an unquantised one and feeds it float32 samples. Inputs spanning -1..127/128
calibrate to exactly that zero point; so do MobileNetV2's -1..1 inputs, where it was found.
The converter sidesteps it by instrumenting the model with float input and output
(``debugger.INSTRUMENTED_INT8_IO``); these tests set that back to int8 to meet the real
failure: among some 35 architectures and ops tried, it was the only one where the debugger
fails and the int8 conversion itself succeeds.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from edgefleet.cli import main
from tests.support import Keys

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("needs the converter extra (TensorFlow)", allow_module_level=True)

pytestmark = pytest.mark.slow

TF_BUG = "Cannot set tensor: Got value of type FLOAT32 but expected type INT8"


@pytest.fixture(scope="module")
def zero_point_0(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small CNN and data in -1..127/128: its int8 input gets scale 1/128, zero point 0."""
    import keras

    folder = tmp_path_factory.mktemp("zero-point-0")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        keras.layers.Flatten(),
        keras.layers.Dense(3, activation="softmax", name="scores"),
    ])
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 127 / 128, (48, 8, 8, 1)).astype(np.float32)
    x[0, 0, 0, 0], x[0, 0, 1, 0] = -1.0, 127 / 128  # the range's ends, exactly
    paths = {"model": folder / "cnn.keras", "calib": folder / "calib.npz", "eval": folder / "eval.npz"}
    model.save(paths["model"])
    np.savez(paths["calib"], x=x[:32])
    np.savez(paths["eval"], x=x[32:])  # no labels: agreement with the float model
    return {"model": model, "x": x[:32], "paths": paths}


def _dataset(x: np.ndarray) -> Any:
    def samples() -> Any:
        for sample in x:
            yield [sample[None, ...]]
    return samples


def test_tensorflow_debugger_still_feeds_float_to_an_int8_input_with_zero_point_0(
        zero_point_0: dict[str, Any]) -> None:
    """Why the converter instruments with float I/O: when TensorFlow fixes this, this test
    fails and INSTRUMENTED_INT8_IO can go."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(zero_point_0["model"])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _dataset(zero_point_0["x"])
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=_dataset(zero_point_0["x"]),
        debug_options=tf.lite.experimental.QuantizationDebugOptions(fully_quantize=True))
    quant = debugger._quant_interpreter.get_input_details()[0]["quantization_parameters"]
    assert list(quant["zero_points"]) == [0] and list(quant["scales"]) == [pytest.approx(1 / 128)]
    with pytest.raises(ValueError, match=TF_BUG):
        debugger.run()


def test_layer_errors_rank_a_model_whose_int8_input_has_zero_point_0(zero_point_0: dict[str, Any]) -> None:
    import tensorflow as tf

    from edgefleet.converter.quantization.debugger import layer_errors

    errors = layer_errors(lambda: tf.lite.TFLiteConverter.from_keras_model(zero_point_0["model"]),
                          zero_point_0["x"], samples=16)
    assert {e.op for e in errors} >= {"CONV_2D", "FULLY_CONNECTED"}
    assert any("conv" in e.name for e in errors)
    assert all(np.isfinite(e.rmse_over_scale) for e in errors)


def _convert(paths: dict[str, Path], keys: Keys, out: Path, *extra: str) -> Any:
    return CliRunner().invoke(main, [
        "convert", str(paths["model"]), "--calib", str(paths["calib"]), "--eval", str(paths["eval"]),
        "--out", str(out), "--key", str(keys.private), "--mode", "int8", "--no-latency", *extra])


def test_a_debugger_failure_leaves_int8_built_and_the_report_says_why(
        zero_point_0: dict[str, Any], keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgefleet.converter.quantization import debugger

    monkeypatch.setattr(debugger, "INSTRUMENTED_INT8_IO", True)  # meet TensorFlow's bug
    out = tmp_path / "cnn.efb"
    result = _convert(zero_point_0["paths"], keys, out)
    assert result.exit_code == 0, result.output
    assert out.is_file()
    report = json.loads(out.with_suffix(".report.json").read_text())
    (variant,) = report["variants"]
    assert variant["name"] == "int8" and report["chosen"] == "int8" and report["failed_variants"] == []
    assert variant["worst_layers"] == []
    why = [n for n in variant["notes"] if n.startswith("no per-layer error ranking")]
    assert len(why) == 1 and "QuantizationDebugger failed" in why[0] and TF_BUG in why[0]
    assert f"int8: {why[0]}" in report["warnings"]
    assert why[0] in out.with_suffix(".report.md").read_text()
    assert f"warning: int8: {why[0]}" in result.output  # the CLI's summary
    assert report["model"]["inputs"][0]["dtype"] == "int8"

    # the same conversion without the bug: the ranking is there and nothing is missing
    fixed = tmp_path / "fixed.efb"
    monkeypatch.setattr(debugger, "INSTRUMENTED_INT8_IO", False)
    assert _convert(zero_point_0["paths"], keys, fixed).exit_code == 0
    ranked = json.loads(fixed.with_suffix(".report.json").read_text())["variants"][0]
    assert ranked["worst_layers"] and not any("ranking" in n for n in ranked["notes"])


def test_keep_float_auto_without_the_ranking_is_a_clear_error(
        zero_point_0: dict[str, Any], keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgefleet.converter.quantization import debugger

    monkeypatch.setattr(debugger, "INSTRUMENTED_INT8_IO", True)
    out = tmp_path / "cnn.efb"
    # no labels: the drop is 100 * (1 - agreement) >= 0, so a budget of -1 pp always fails
    result = _convert(zero_point_0["paths"], keys, out, "--max-accuracy-drop", "-1",
                      "--keep-float-layers", "auto")
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # click's error exit, not a crash
    assert "Traceback" not in result.output
    assert "Error: int8: --keep-float-layers auto chooses the layers to keep in float from the " \
           "QuantizationDebugger's ranking, and it has none" in result.output
    assert TF_BUG in result.output and "above the -1 pp allowed" in result.output
    assert not out.exists()
