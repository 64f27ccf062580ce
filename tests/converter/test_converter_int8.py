from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from agent.runtime import TFLiteModel
from converter.errors import ConversionError

if importlib.util.find_spec("tensorflow") is None:  # find, not import: collection stays light
    pytest.skip("needs the converter extra (TensorFlow)", allow_module_level=True)


def test_missing_model_file(tmp_path: Path) -> None:
    from converter.int8 import load_keras_model

    with pytest.raises(ConversionError, match="does not exist"):
        load_keras_model(tmp_path / "nope.keras")


@pytest.mark.parametrize("name", ["model.tflite", "model.onnx", "saved_model"])
def test_unsupported_model_formats_say_so(tmp_path: Path, name: str) -> None:
    from converter.int8 import load_keras_model

    path = tmp_path / name
    if name == "saved_model":
        path.mkdir()
    else:
        path.write_bytes(b"\0")
    with pytest.raises(ConversionError, match=r"only Keras models \(.keras, .h5\).*later"):
        load_keras_model(path)


def test_corrupt_keras_file(tmp_path: Path) -> None:
    from converter.int8 import load_keras_model

    path = tmp_path / "broken.keras"
    path.write_bytes(b"this is not a zip")
    with pytest.raises(ConversionError, match="could not load the Keras model"):
        load_keras_model(path)


@pytest.mark.slow
def test_h5_models_load(digits_files: dict[str, Path], tmp_path: Path) -> None:
    from converter.int8 import load_keras_model

    model = load_keras_model(digits_files["model"])
    h5 = tmp_path / "model.h5"
    model.save(h5)
    again = load_keras_model(h5)
    x = np.zeros((2, 8, 8, 1), np.float32)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.slow
def test_uint8_io_and_float_baseline(digits_files: dict[str, Path]) -> None:
    from converter.datasets import load_npz
    from converter.int8 import convert_float, convert_int8, load_keras_model

    model = load_keras_model(digits_files["model"])
    x, _ = load_npz(digits_files["calib"])
    uint8 = TFLiteModel(convert_int8(model, x, samples=50, io_dtype="uint8"))
    assert uint8.inputs[0].dtype == "uint8" and uint8.outputs[0].dtype == "uint8"
    float_bytes = convert_float(model)
    assert TFLiteModel(float_bytes).inputs[0].dtype == "float32"
    assert len(float_bytes) > 3 * len(convert_int8(model, x, samples=50))


@pytest.mark.slow
def test_bad_arguments_are_refused(digits_files: dict[str, Path]) -> None:
    from converter.int8 import convert_int8, load_keras_model

    model = load_keras_model(digits_files["model"])
    x = np.zeros((4, 8, 8, 1), np.float32)
    with pytest.raises(ConversionError, match="io_dtype"):
        convert_int8(model, x, io_dtype="int16")
    with pytest.raises(ConversionError, match="at least one sample"):
        convert_int8(model, x, samples=0)
    with pytest.raises(ConversionError, match=r"shape \(8, 8\) but the model expects \(8, 8, 1\)"):
        convert_int8(model, x[..., 0])
