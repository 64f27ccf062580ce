"""Model sources (every input kind and its errors) and calibration/evaluation data files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edgefleet.converter.data import Preprocess, load_dataset
from edgefleet.converter.errors import ConversionError

if importlib.util.find_spec("tensorflow") is None:  # find, not import: collection stays light
    pytest.skip("needs the converter extra (TensorFlow)", allow_module_level=True)


# --- Preprocess ------------------------------------------------------------------------------


def test_preprocess_parse_full_example() -> None:
    p = Preprocess.parse(
        "size=96x64, scale=1/255, mean=0.485:0.456:0.406, std=0.229:0.224:0.225, layout=NCHW, color=rgb"
    )
    assert p.size == (96, 64)
    assert p.scale == pytest.approx(1 / 255)
    assert p.mean == (0.485, 0.456, 0.406)
    assert p.std == (0.229, 0.224, 0.225)
    assert (p.layout, p.color) == ("nchw", "rgb")
    assert Preprocess.parse("") == Preprocess()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("size=96x96,zoom=2", r"unknown preprocess key 'zoom'; known keys: size, scale"),
        ("size=96", r"bad preprocess value size='96': expected HEIGHTxWIDTH"),
        ("scale=abc", r"bad preprocess value scale='abc'"),
        ("mean=0.5:x", r"bad preprocess value mean"),
        ("layout=chw", r"layout 'chw' is not one of nhwc, nchw"),
        ("color=cmyk", r"color 'cmyk' is not one of rgb, grayscale"),
        ("mean=0.1:0.2", r"mean has 2 values; give one, or one per channel \(3 for color=rgb\)"),
        ("std=0", r"std must not be zero"),
        ("size", r"is not key=value"),
        ("scale=1,scale=2", r"given twice"),
    ],
)
def test_preprocess_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ConversionError, match=message):
        Preprocess.parse(text)


# --- load_dataset ------------------------------------------------------------------------------


def _write_png(path: Path, value: int, size: tuple[int, int] = (12, 10), mode: str = "RGB") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    color = (value, value // 2, 255 - value) if mode == "RGB" else value
    Image.new(mode, size, color).save(path)


def test_npz_and_npy(tmp_path: Path) -> None:
    x = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4, 1)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(5))
    np.save(tmp_path / "d.npy", x)
    xs, ys = load_dataset(tmp_path / "d.npz", limit=3)
    assert xs.dtype == np.float32 and xs.shape == (3, 4, 4, 1)
    assert ys is not None and list(ys) == [0, 1, 2]
    xs, ys = load_dataset(tmp_path / "d.npy")
    assert xs.dtype == np.float32 and xs.shape == (5, 4, 4, 1) and ys is None
    np.testing.assert_array_equal(xs, x.astype(np.float32))


def test_data_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="does not exist"):
        load_dataset(tmp_path / "nope.npz")
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(ConversionError, match=r"unknown extension '.csv'.*\.npz.*\.npy.*folder of images"):
        load_dataset(tmp_path / "data.csv")
    np.save(tmp_path / "flat.npy", np.zeros(3))
    with pytest.raises(ConversionError, match=r"expected \(samples, \.\.\.\)"):
        load_dataset(tmp_path / "flat.npy")


def test_image_folder_without_labels(tmp_path: Path) -> None:
    for i, value in enumerate((0, 100, 255)):
        _write_png(tmp_path / "imgs" / f"{i}.png", value)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    x, y = load_dataset(tmp_path / "imgs", Preprocess(size=(6, 8)))
    assert y is None
    assert x.dtype == np.float32 and x.shape == (3, 6, 8, 3)
    np.testing.assert_allclose(x[2, 0, 0], [1.0, 127 / 255, 0.0], atol=1e-6)  # scale 1/255


def test_image_folder_with_class_subfolders(tmp_path: Path) -> None:
    for cls, count in (("b_dog", 2), ("a_cat", 3)):
        for i in range(count):
            _write_png(tmp_path / "imgs" / cls / f"{i}.jpg", 50 * i, mode="L")
    p = Preprocess.parse("size=4x4,scale=1,mean=10,std=2,color=grayscale,layout=nchw")
    x, y = load_dataset(tmp_path / "imgs", p)
    assert x.shape == (5, 1, 4, 4)
    assert y is not None and list(y) == [0, 0, 0, 1, 1]  # sorted sub-folders: a_cat=0, b_dog=1
    np.testing.assert_allclose(x[:3, 0, 0, 0], [(0 - 10) / 2, (50 - 10) / 2, (100 - 10) / 2], atol=1.0)
    x, y = load_dataset(tmp_path / "imgs", p, limit=4)
    assert x.shape == (4, 1, 4, 4) and y is not None and len(y) == 4


def test_image_folder_needs_a_size_and_images(tmp_path: Path) -> None:
    _write_png(tmp_path / "imgs" / "0.png", 10)
    with pytest.raises(ConversionError, match=r"folder of images: declare the preprocessing.*size=96x96"):
        load_dataset(tmp_path / "imgs")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match="holds no images"):
        load_dataset(tmp_path / "empty", Preprocess(size=(4, 4)))


# --- model sources: file errors (no TensorFlow needed) ------------------------------------------


def test_model_file_errors(tmp_path: Path) -> None:
    from edgefleet.converter.sources import load_model_source

    with pytest.raises(ConversionError, match=r"does not exist; supported inputs: \.keras"):
        load_model_source(tmp_path / "nope.keras")
    (tmp_path / "model.onnx").write_bytes(b"\0")
    supported = r"\.keras.*\.h5.*SavedModel.*\.tflite"
    with pytest.raises(ConversionError, match=r"extension '\.onnx'; supported inputs: " + supported):
        load_model_source(tmp_path / "model.onnx")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ConversionError, match=r"without saved_model\.pb"):
        load_model_source(tmp_path / "folder")
    (tmp_path / "bad.tflite").write_bytes(b"12345678 not a flatbuffer")
    with pytest.raises(ConversionError, match="no TFL3 identifier"):
        load_model_source(tmp_path / "bad.tflite")


# --- model sources: models the converter cannot take --------------------------------------------


def _tiny_keras():
    import keras

    inp = keras.Input((4, 4, 1))
    out = keras.layers.Dense(3)(keras.layers.Flatten()(inp))
    return keras.Model(inp, out, name="tiny")


@pytest.mark.slow
def test_op_without_tflite_kernel_is_named_with_its_layer() -> None:
    import keras
    import tensorflow as tf

    from edgefleet.converter.sources import source_from_keras

    inp = keras.Input((4, 4))
    # MatrixInverse has no TFLite builtin kernel (it would need TF Select / flex)
    inverted = keras.layers.Lambda(lambda t: tf.linalg.inv(t), name="inverse")(inp)
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(inverted)))
    source = source_from_keras(model)
    assert source.kind == "keras" and source.input_shape == (4, 4)
    with pytest.raises(ConversionError) as caught:
        source.float_tflite()
    message = str(caught.value)
    assert "MatrixInverse" in message
    assert "layer(s) inverse" in message
    assert "Replace those operations with TFLite-supported ones" in message


@pytest.mark.slow
def test_several_inputs_are_taken_and_dynamic_shapes_refused() -> None:
    import keras

    from edgefleet.converter.sources import source_from_keras

    a, b = keras.Input((4,), name="a"), keras.Input((2, 3), name="b")
    both = source_from_keras(keras.Model([a, b], keras.layers.Concatenate()([a, keras.layers.Flatten()(b)])))
    assert both.input_shapes == ((4,), (2, 3)) and both.input_shape == (4,)
    assert sorted(s.name for s in both.reference_model().inputs) == ["a", "b"]  # the Keras inputs' names
    with pytest.raises(ConversionError, match=r"dynamic input dimensions \(batch, \?, \?, 3\).*static shape"):
        inp = keras.Input((None, None, 3))
        source_from_keras(keras.Model(inp, keras.layers.GlobalAveragePooling2D()(inp)))
    with pytest.raises(ConversionError, match="not a Keras 3 or tf-keras model"):
        source_from_keras(object())


@pytest.mark.slow
def test_saved_model_without_serving_signature(tmp_path: Path) -> None:
    import tensorflow as tf

    from edgefleet.converter.sources import load_model_source

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def double(self, x):
            return x * 2

    module = Doubler()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"other": module.double})
    message = r"no 'serving_default' signature \(signatures: other\); export it with one"
    with pytest.raises(ConversionError, match=message):
        load_model_source(tmp_path / "sm")


@pytest.mark.slow
def test_tflite_source_must_be_float(tmp_path: Path) -> None:
    from edgefleet.converter.quantization import QuantOptions, quantize
    from edgefleet.converter.sources import load_model_source, source_from_keras
    from edgefleet.runtime import TFLiteModel

    keras_source = source_from_keras(_tiny_keras())
    (tmp_path / "float.tflite").write_bytes(keras_source.float_tflite())
    source = load_model_source(tmp_path / "float.tflite")
    assert (source.kind, source.input_shape, source.keras_model) == ("tflite", (4, 4, 1), None)
    x = np.random.default_rng(0).random((3, 4, 4, 1), dtype=np.float32)
    np.testing.assert_allclose(source.predict(x), keras_source.predict(x), atol=1e-5)
    with pytest.raises(ConversionError, match=r"\.tflite model already.*ai-edge-quantizer instead"):
        source.tflite_converter()

    quantized = quantize(keras_source, x, QuantOptions("int8"))
    assert TFLiteModel(quantized).inputs[0].dtype == "int8"
    (tmp_path / "int8.tflite").write_bytes(quantized)
    with pytest.raises(ConversionError, match=r"quantised already \(it has int8 tensors\); give the float"):
        load_model_source(tmp_path / "int8.tflite")
