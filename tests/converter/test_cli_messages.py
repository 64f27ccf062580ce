"""What a new user sees when the converter's commands are given the wrong thing (issue 8,
item 8): a sentence that names the file or setting at fault and what to do, never a
traceback, and, for the cheap checks, before TensorFlow loads."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgefleet.cli import main
from tests.support import ROOT, Keys

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("needs the converter extra (TensorFlow)", allow_module_level=True)


def _convert(model: Path, out: Path, keys: Keys, calib: Path, *extra: str) -> object:
    return CliRunner().invoke(main, ["convert", str(model), "--calib", str(calib), "--out", str(out),
                                     "--key", str(keys.private), *extra])


# --- cheap checks: no TensorFlow (the guard in tests/conftest.py fails these tests if it loads)

@pytest.mark.parametrize(("name", "content", "what"), [
    ("model.keras", b"hello, I am a text file\n", "a text file"),
    ("model.h5", b"hello, I am a text file\n", "a text file"),
    ("model.tflite", b"\x00\x01\x02\x03 not a flatbuffer", "a file of unknown format"),
    ("model.txt", b"hello\n", "a text file"),
])
def test_convert_of_a_file_that_is_not_a_model_says_what_it_is_and_what_is_accepted(
        tmp_path: Path, keys: Keys, tiny, name: str, content: bytes, what: str) -> None:
    model = tmp_path / name
    model.write_bytes(content)
    result = _convert(model, tmp_path / "o.efb", keys, tiny.eval)
    assert result.exit_code == 1, result.output
    assert f"{model} is not a model edgefleet can convert: it is {what}" in result.output, result.output
    assert "accepted: .keras (Keras 3), .h5/.hdf5 (tf-keras), a SavedModel folder" in result.output
    assert "File not found" not in result.output and "Traceback" not in result.output


def test_convert_of_a_bundle_says_it_is_a_bundle_already(tmp_path: Path, keys: Keys, tiny) -> None:
    result = _convert(tiny.bundle, tmp_path / "o.efb", keys, tiny.eval)
    assert result.exit_code == 1, result.output
    assert "is an edgefleet bundle, not a model" in result.output, result.output


def test_convert_refuses_to_overwrite_a_bundle_without_force(tmp_path: Path, keys: Keys, tiny) -> None:
    out = tmp_path / "digits.efb"
    shutil.copy(tiny.bundle, out)
    before = out.read_bytes()
    result = _convert(tiny.tflite, out, keys, tiny.eval)
    assert result.exit_code == 1, result.output
    assert f"--out {out} exists (a bundle); give --force to replace it" in result.output, result.output
    assert out.read_bytes() == before
    help_text = CliRunner().invoke(main, ["convert", "--help"]).output
    assert "--force" in help_text and "Replace an existing bundle" in help_text
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "| `--force` |" in readme  # the convert options table documents it


@pytest.mark.parametrize("command", ["convert", "pack"])
def test_a_version_devices_cannot_order_is_refused_before_any_work(tmp_path: Path, keys: Keys, tiny,
                                                                  command: str) -> None:
    out = tmp_path / "o.efb"
    if command == "convert":
        result = _convert(tiny.tflite, out, keys, tiny.eval, "--version", "2024-06-a")
    else:
        result = CliRunner().invoke(main, ["pack", str(tiny.tflite), "--out", str(out), "--key",
                                           str(keys.private), "--version", "2024-06-a"])
    assert result.exit_code == 1, result.output
    assert "version '2024-06-a' is not a PEP 440 version" in result.output, result.output
    assert "Traceback" not in result.output and not out.exists()


def test_the_coral_profile_io_choice_is_named_as_the_profile_s_with_the_way_out(
        tmp_path: Path, keys: Keys, tiny) -> None:
    # a .tflite source goes through ai-edge-quantizer, which makes int8 input/output only; the
    # coral-usb profile asks for uint8: the user set nothing, so the message must not blame them
    result = _convert(tiny.tflite, tmp_path / "o.efb", keys, tiny.eval, "--target", "coral-usb")
    assert result.exit_code == 1, result.output
    assert "the coral-usb profile chooses uint8 input/output" in result.output, result.output
    assert "--io-type int8" in result.output and "leave the input/output type unset" not in result.output


def test_preprocess_color_gray_reads_a_folder_of_real_photos_in_grayscale(tmp_path: Path) -> None:
    from PIL import Image
    from skimage import data as photos

    from edgefleet.converter.data import Preprocess, load_dataset

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut", "chelsea", "coffee", "camera"):  # three RGB photos, one grayscale
        Image.fromarray(getattr(photos, name)()).save(folder / f"{name}.png")
    preprocess = Preprocess.parse("size=32x48,scale=1/255,color=gray")
    x, y = load_dataset(folder, preprocess)
    assert x.shape == (4, 32, 48, 1) and y is None
    with Image.open(folder / "chelsea.png") as image:  # the cat, converted as Pillow does
        expected = np.asarray(image.convert("L").resize((48, 32), Image.Resampling.BILINEAR), np.float32)
    cat = sorted(p.name for p in folder.iterdir()).index("chelsea.png")  # files load in name order
    np.testing.assert_allclose(x[cat, ..., 0], expected / 255, atol=1e-6)
    assert Preprocess.parse("color=grey").channels == 1 and Preprocess.parse("color=grayscale").channels == 1


# --- with a real model (the digits CNN: TensorFlow) -------------------------------------------

@pytest.mark.slow
def test_inspect_and_publish_of_a_keras_h5_or_savedmodel_say_convert_it_first(
        digits_files: dict[str, Path], keys: Keys, tmp_path: Path) -> None:
    import keras

    model = keras.models.load_model(digits_files["model"])
    h5 = tmp_path / "model.h5"
    model.save(h5)
    saved = tmp_path / "saved_model"
    model.export(saved, verbose=False)
    for path, what in ((digits_files["model"], "a Keras 3 model (.keras)"), (h5, "an HDF5 file"),
                       (saved, "a TensorFlow SavedModel folder")):
        for args in (["inspect", str(path)],
                     ["publish", str(path), "--device", "d", "--key", str(keys.private),
                      "--broker", "127.0.0.1:1"]):
            result = CliRunner().invoke(main, args)
            assert result.exit_code == 1, (args, result.output)
            assert f"is {what}" in result.output and "not a bundle: run edgefleet convert first" in \
                result.output, (args, result.output)
            assert "manifest.json" not in result.output, (args, result.output)


@pytest.mark.slow
def test_a_bad_train_file_for_pruning_fails_before_tensorflow_loads(
        digits_files: dict[str, Path], keys: Keys, tmp_path: Path) -> None:
    train = np.load(digits_files["train"])
    np.savez(tmp_path / "nolabels.npz", x=train["x"])  # pruning fine-tunes: it needs y
    np.savez(tmp_path / "few.npz", x=train["x"][:8], y=train["y"][:8])  # too few steps
    for bad, words in (("nolabels.npz", "has no labels"), ("few.npz", "too few for mask updates")):
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "edgefleet", "convert", str(digits_files["model"]),
             "--calib", str(digits_files["calib"]), "--train", str(tmp_path / bad),
             "--out", str(tmp_path / "p.efb"), "--key", str(keys.private), "--mode", "pruned-int8"],
            capture_output=True, text=True, timeout=300)
        elapsed = time.monotonic() - started
        assert run.returncode == 1 and words in run.stderr, run.stderr
        # importing TensorFlow alone takes several seconds: a failure this fast came before it
        assert elapsed < 3.0, f"{bad}: failed after {elapsed:.1f} s"
        assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_distill_into_an_unwritable_place_fails_at_once_with_a_message(
        digits_files: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("a file where a folder is expected")
    started = time.monotonic()
    result = CliRunner().invoke(main, [
        "distill", "--teacher", str(digits_files["model"]), "--width", "0.5",
        "--train", str(digits_files["train"]), "--out", str(tmp_path / "plain" / "student.keras"),
        "--epochs", "1", "--no-baseline"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "cannot write --out" in result.output and "is not a folder" in result.output, result.output
    assert time.monotonic() - started < 2.0  # before any training


@pytest.mark.slow
def test_mode_float32_lists_float32_once_and_force_replaces_a_bundle(
        digits_files: dict[str, Path], keys: Keys, tmp_path: Path) -> None:
    out = tmp_path / "f.efb"
    args = ["--eval", str(digits_files["eval"]), "--mode", "float32", "--no-latency"]
    first = _convert(digits_files["model"], out, keys, digits_files["calib"], *args)
    assert first.exit_code == 0, first.output
    rows = [line for line in first.output.splitlines() if line[2:].startswith("float32 ")]
    assert len(rows) == 1 and rows[0].startswith("* float32"), first.output
    md = Path(f"{out.with_suffix('')}.report.md").read_text()
    assert len([line for line in md.splitlines() if line.startswith("| float32")]) == 1, md
    report = json.loads(Path(f"{out.with_suffix('')}.report.json").read_text())
    from edgefleet.converter.report import chart_figure

    figure = chart_figure(report)
    labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert [label for label in labels if label.startswith("float32")] == ["float32 (chosen)"], labels
    again = _convert(digits_files["model"], out, keys, digits_files["calib"], *args)
    assert again.exit_code == 1 and "--force" in again.output
    forced = _convert(digits_files["model"], out, keys, digits_files["calib"], *args, "--force")
    assert forced.exit_code == 0, forced.output


def _prelu_float_tflite(tmp_path: Path) -> Path:
    """A small CNN with PReLU activations, as a float .tflite (the path of ai-edge-quantizer)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.PReLU(shared_axes=[1, 2])(keras.layers.Conv2D(8, 3, padding="same")(inp))
    x = keras.layers.PReLU()(keras.layers.Dense(16)(keras.layers.Flatten()(x)))
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x))
    path = tmp_path / "prelu.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


@pytest.mark.slow
def test_an_int8_variant_with_float_prelu_islands_says_which_ops_stayed_float(
        digits_files: dict[str, Path], keys: Keys, tmp_path: Path) -> None:
    out = tmp_path / "prelu.efb"
    result = _convert(_prelu_float_tflite(tmp_path), out, keys, digits_files["calib"], "--mode", "int8",
                      "--eval", str(digits_files["eval"]), "--no-latency")
    assert result.exit_code == 0, result.output
    report = json.loads(Path(f"{out.with_suffix('')}.report.json").read_text())
    (variant,) = report["variants"]
    assert variant["name"] == "int8" and variant["float_ops"]["ops"] == {"PRELU": 2}, variant["float_ops"]
    note = variant["float_ops"]["note"]
    assert "PRELU x2" in note and "stayed float" in note and note in variant["notes"]
    assert f"note: int8: {note}" in result.output, result.output
    assert note in Path(f"{out.with_suffix('')}.report.md").read_text()


@pytest.mark.slow
def test_a_fully_int8_variant_has_no_float_ops_note(converted: dict) -> None:
    report = converted["result"].report
    int8 = next(v for v in report["variants"] if v["name"] == "int8")
    assert int8["float_ops"] is None and not any("stayed float" in n for n in int8["notes"])


@pytest.mark.slow
def test_coral_profile_with_a_float_tflite_names_the_profile_and_io_type_int8_works(
        digits_files: dict[str, Path], keys: Keys, tmp_path: Path) -> None:
    import keras
    import tensorflow as tf

    trained = keras.models.load_model(digits_files["model"])
    inp = keras.Input((8, 8, 1), batch_size=1)  # an Edge TPU needs every size fixed
    model = tmp_path / "digits.tflite"
    model.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, trained(inp))).convert())
    refused = _convert(model, tmp_path / "c.efb", keys, digits_files["calib"], "--target", "coral-usb")
    assert refused.exit_code == 1
    assert "the coral-usb profile chooses uint8 input/output" in refused.output, refused.output
    assert "leave the input/output type unset" not in refused.output
    way_out = _convert(model, tmp_path / "c.efb", keys, digits_files["calib"], "--target", "coral-usb",
                       "--io-type", "int8", "--no-latency", "--json")
    assert way_out.exit_code == 0, way_out.output
    assert json.loads(way_out.output)["model"]["inputs"][0]["dtype"] == "int8"
