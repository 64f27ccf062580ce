"""Every input format converts in every quantisation mode, and the result runs and agrees.

One small CNN on the 8x8 digits is trained once (module fixture) and written in every
input format; each (format, mode) pair is converted once and cached.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefleet.converter.errors import ConversionError
from edgefleet.converter.quantization import MODES, QuantOptions, quantize
from edgefleet.converter.sources import ModelSource
from edgefleet.runtime import TFLiteModel

if importlib.util.find_spec("tensorflow") is None:  # find, not import: collection stays light
    pytest.skip("needs the converter extra (TensorFlow)", allow_module_level=True)

FORMATS = ("keras", "h5", "saved_model", "tf_saved_model", "tflite")
MIN_AGREEMENT = 0.9
CALIBRATION_SAMPLES = 100


# --- option checks (no TensorFlow) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "int4"}, r"unknown quantisation mode 'int4'; choose one of float32, dynamic"),
        ({"mode": "float16", "io_dtype": "int8"}, r"'int8' does not go with mode float16"),
        ({"mode": "int8", "io_dtype": "int16"}, r"choose one of int8, uint8, float32"),
        ({"mode": "int16x8", "io_dtype": "uint8"}, r"choose one of float32, int16"),
        ({"mode": "dynamic", "denylisted_nodes": ("x",)}, "denylisted nodes apply to mode int8 only"),
        ({"mode": "int8", "calibration_samples": 0}, "at least one sample"),
    ],
)
def test_bad_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConversionError, match=message):
        QuantOptions(**kwargs)


@pytest.mark.parametrize("mode", ["int8", "int16x8"])
def test_calibrated_modes_need_data(mode: str) -> None:
    source = ModelSource("keras", None, None, (8, 8, 1))
    with pytest.raises(ConversionError, match=f"mode {mode} needs calibration data"):
        quantize(source, None, QuantOptions(mode))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (QuantOptions("int8", io_dtype="uint8"), r"ai-edge-quantizer.*int8 input/output only, not uint8"),
        (QuantOptions("int8", io_dtype="float32"), r"int8 input/output only, not float32"),
        (QuantOptions("int16x8", io_dtype="float32"), r"int16 input/output only, not float32"),
        (QuantOptions("dynamic", sparsity=True), r"sparsity.*not available for a \.tflite source"),
        (QuantOptions("int8", denylisted_nodes=("n",)), r"denylisted nodes.*not available for a \.tflite"),
    ],
)
def test_what_the_tflite_path_cannot_do(options: QuantOptions, message: str) -> None:
    source = ModelSource("tflite", Path("m.tflite"), None, (8, 8, 1), _tflite_bytes=b"")
    with pytest.raises(ConversionError, match=message):
        quantize(source, np.zeros((2, 8, 8, 1), np.float32), options)


# --- the model in every format ----------------------------------------------------------------


def _build(keras_module: Any) -> Any:
    layers = keras_module.layers
    return keras_module.Sequential([
        keras_module.Input((8, 8, 1)),
        layers.Conv2D(8, 3, padding="same", activation="relu"),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small digits CNN, trained once, written as .keras, .h5, two SavedModels and .tflite."""
    import keras
    import tensorflow as tf
    import tf_keras

    from edgefleet.converter.digits import digits_splits
    from edgefleet.converter.sources import source_from_keras

    folder = tmp_path_factory.mktemp("formats")
    splits = digits_splits(seed=0)
    keras.utils.set_random_seed(0)
    model = _build(keras)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(*splits["train"], epochs=8, batch_size=32, verbose=0)

    legacy = _build(tf_keras)  # the same network in tf-keras, same weights
    legacy.set_weights(model.get_weights())
    paths = {
        "keras": folder / "model.keras",
        "h5": folder / "model.h5",
        "saved_model": folder / "exported",  # Keras 3 model.export
        "tf_saved_model": folder / "tf_saved",  # tf.saved_model.save of a tf-keras model
        "tflite": folder / "model.tflite",
    }
    model.save(paths["keras"])
    legacy.save(paths["h5"])
    model.export(str(paths["saved_model"]), verbose=False)
    tf.saved_model.save(legacy, str(paths["tf_saved_model"]))
    paths["tflite"].write_bytes(source_from_keras(model).float_tflite())
    x_eval = splits["eval"][0][:100]
    reference = model.predict(x_eval, verbose=0)
    return {"paths": paths, "calib": splits["calib"][0], "x": x_eval, "reference": reference}


@pytest.fixture(scope="module")
def converted(model_files: dict[str, Any]) -> Any:
    """convert(format, mode, **options) -> TFLite bytes, cached per module."""
    from edgefleet.converter.sources import load_model_source

    sources: dict[str, ModelSource] = {}
    cache: dict[tuple[Any, ...], bytes] = {}

    def source(fmt: str) -> ModelSource:
        if fmt not in sources:
            sources[fmt] = load_model_source(model_files["paths"][fmt])
        return sources[fmt]

    def convert(fmt: str, mode: str, **options: Any) -> bytes:
        key = (fmt, mode, *sorted(options.items()))
        if key not in cache:
            opts = QuantOptions(mode, calibration_samples=CALIBRATION_SAMPLES, **options)
            cache[key] = quantize(source(fmt), model_files["calib"], opts)
        return cache[key]

    convert.source = source  # type: ignore[attr-defined]
    return convert


def _agreement(model_bytes: bytes, files: dict[str, Any]) -> float:
    outputs, _ = TFLiteModel(model_bytes).predict(files["x"])
    return float(np.mean(outputs.argmax(axis=1) == files["reference"].argmax(axis=1)))


def _tensor_types(model_bytes: bytes) -> set[str]:
    from edgefleet.runtime import find_runtime

    interpreter = find_runtime("auto").interpreter(model_content=model_bytes)
    return {np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_loads_with_its_kind(fmt: str, model_files: dict[str, Any], converted: Any) -> None:
    from edgefleet.converter.sources import load_model_source

    source = load_model_source(model_files["paths"][fmt])
    expected = {"keras": "keras", "h5": "tf_keras", "saved_model": "saved_model",
                "tf_saved_model": "saved_model", "tflite": "tflite"}[fmt]
    assert source.kind == expected
    assert source.input_shape == (8, 8, 1)
    assert (source.keras_model is not None) == (expected in ("keras", "tf_keras"))
    x, reference = model_files["x"][:20], model_files["reference"][:20]
    np.testing.assert_allclose(source.predict(x), reference, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", ["keras", "h5", "saved_model", "tflite"])
def test_every_format_converts_in_every_mode(
    fmt: str, mode: str, model_files: dict[str, Any], converted: Any
) -> None:
    model_bytes = converted(fmt, mode)
    assert _agreement(model_bytes, model_files) >= MIN_AGREEMENT
    loaded = TFLiteModel(model_bytes)
    expected_io = {"int8": "int8", "int16x8": "int16" if fmt == "tflite" else "float32"}.get(mode, "float32")
    assert loaded.inputs[0].dtype == expected_io
    assert loaded.outputs[0].dtype == expected_io


@pytest.mark.slow
def test_tf_saved_model_of_a_tf_keras_model_converts(model_files: dict[str, Any], converted: Any) -> None:
    assert _agreement(converted("tf_saved_model", "int8"), model_files) >= MIN_AGREEMENT


@pytest.mark.slow
@pytest.mark.parametrize("io_dtype", ["int8", "uint8", "float32"])
def test_int8_input_output_types(io_dtype: str, model_files: dict[str, Any], converted: Any) -> None:
    model_bytes = converted("keras", "int8", io_dtype=io_dtype)
    loaded = TFLiteModel(model_bytes)
    assert loaded.inputs[0].dtype == io_dtype and loaded.outputs[0].dtype == io_dtype
    assert _agreement(model_bytes, model_files) >= MIN_AGREEMENT


@pytest.mark.slow
@pytest.mark.parametrize(("fmt", "io_dtype"), [("keras", None), ("keras", "int16"), ("tflite", None)])
def test_int16x8_has_int16_activations(
    fmt: str, io_dtype: str | None, model_files: dict[str, Any], converted: Any
) -> None:
    model_bytes = converted(fmt, "int16x8", io_dtype=io_dtype)
    assert {"int16", "int8"} <= _tensor_types(model_bytes)  # int16 activations, int8 weights
    if io_dtype == "int16":
        assert TFLiteModel(model_bytes).inputs[0].dtype == "int16"
        assert _agreement(model_bytes, model_files) >= MIN_AGREEMENT


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["keras", "tflite"])
def test_sizes_per_mode(fmt: str, converted: Any) -> None:
    sizes = {mode: len(converted(fmt, mode)) for mode in MODES}
    assert sizes["float16"] <= 0.6 * sizes["float32"]
    assert sizes["dynamic"] <= 0.4 * sizes["float32"]
    assert sizes["int8"] <= 0.4 * sizes["float32"]
    assert "float16" in _tensor_types(converted(fmt, "float16"))


def _progress_calls(source: ModelSource, x: np.ndarray) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    quantize(source, x, QuantOptions("int8"), progress=lambda *args: calls.append(args))
    return calls


@pytest.mark.slow
def test_calibration_progress_is_reported(model_files: dict[str, Any], converted: Any) -> None:
    for fmt in ("keras", "tflite"):
        calls = _progress_calls(converted.source(fmt), model_files["calib"][:20])
        assert calls and calls[-1] == ("calibration", 20, 20)
        assert all(step == "calibration" and total == 20 for step, _, total in calls)


@pytest.mark.slow
def test_per_tensor_and_float_nodes(model_files: dict[str, Any], converted: Any) -> None:
    from edgefleet.runtime import find_runtime

    per_tensor = converted("keras", "int8", per_channel=False)
    assert per_tensor != converted("keras", "int8")
    assert _agreement(per_tensor, model_files) >= MIN_AGREEMENT

    # keep the first Dense layer in float: its output tensor name comes from the float model
    interpreter = find_runtime("auto").interpreter(model_content=converted("keras", "float32"))
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    dense = [names[op["outputs"][0]] for op in ops if op["op_name"] == "FULLY_CONNECTED"]
    for io_dtype in ("float32", "int8", "uint8"):
        mixed = converted("keras", "int8", io_dtype=io_dtype, denylisted_nodes=(dense[0],))
        loaded = TFLiteModel(mixed)
        assert loaded.inputs[0].dtype == io_dtype and loaded.outputs[0].dtype == io_dtype
        details = find_runtime("auto").interpreter(model_content=mixed)._get_ops_details()
        ops = [op["op_name"] for op in details]
        assert "DEQUANTIZE" in ops[1:-1]  # into the float island mid-graph
        assert _agreement(mixed, model_files) >= MIN_AGREEMENT
