"""Models of any signature end to end: several outputs, several inputs (data by input name),
a model others published, and data whose range does not fit (the default gate fails)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefleet.protocol import golden
from edgefleet.protocol.bundle import open_bundle
from edgefleet.protocol.signing import TrustStore
from edgefleet.runtime import TFLiteModel
from tests.support import Keys, run_cli

if importlib.util.find_spec("tensorflow") is None:  # find, not import: collection stays light
    pytest.skip("needs the converter extra (TensorFlow)", allow_module_level=True)

pytestmark = pytest.mark.slow


def _targets(x: np.ndarray) -> np.ndarray:
    """What the regression head learns: each digit image's mean ink and its ink's centre row."""
    ink = x[..., 0].reshape(len(x), 8, 8)
    rows = (ink.sum(axis=2) * np.arange(8)).sum(axis=1) / np.maximum(ink.sum(axis=(1, 2)), 1e-6)
    return np.stack([ink.mean(axis=(1, 2)) * 10, rows], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from edgefleet.converter.digits import digits_splits

    return digits_splits(seed=0)


def _bundle(path: Path, keys: Keys) -> Any:
    return open_bundle(path.read_bytes(), TrustStore.from_folder(keys.trust_dir))


def _passes_selftest(bundle: Any) -> list[golden.OutputResult]:
    g = golden.decode(bundle.files["golden.npz"], bundle.manifest["selftest"])
    outputs, _ = TFLiteModel(bundle.model_bytes).run(g.inputs)
    return golden.compare(g, outputs)


def test_two_outputs_get_figures_each_and_a_golden_set_with_both(
        splits: dict[str, Any], keys: Keys, tmp_path: Path) -> None:
    """A classifier head and a regression head on one input; data keyed by the input's name."""
    import keras

    from edgefleet.converter.build import convert

    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="digit")
    hidden = keras.layers.Dense(48, activation="relu")(keras.layers.Flatten()(image))
    model = keras.Model(image, {"scores": keras.layers.Dense(10, activation="softmax", name="scores")(hidden),
                                "shape": keras.layers.Dense(2, name="shape")(hidden)})
    model.compile("adam", {"scores": "sparse_categorical_crossentropy", "shape": "mse"})
    (x, y), (x_eval, y_eval) = splits["train"], splits["eval"]
    model.fit(x, {"scores": y, "shape": _targets(x)}, epochs=15, batch_size=32, verbose=0)
    model.save(tmp_path / "two.keras")
    np.savez(tmp_path / "calib.npz", digit=splits["calib"][0])
    np.savez(tmp_path / "eval.npz", digit=x_eval, y=y_eval)

    result = convert(tmp_path / "two.keras", tmp_path / "calib.npz", tmp_path / "two.efb", keys.private,
                     eval_path=tmp_path / "eval.npz", variants="int8,float16", measure_latency=False,
                     chart=False)
    report, manifest = result.report, result.manifest
    assert report["outputs"]["class_scores"] == ["scores"] and report["outputs"]["labelled"] == "scores"
    for v in report["variants"]:
        per = v["metrics"]["outputs"]
        assert set(per) == {"scores", "shape"}
        assert per["scores"]["class_scores"] and per["scores"]["top1"] >= 0.9
        assert per["scores"]["agreement"] >= 0.97
        assert not per["shape"]["class_scores"] and "top1" not in per["shape"]
        assert per["shape"]["snr_db"] > 20 and per["shape"]["cosine"] > 0.99
        assert per["shape"]["max_abs_error"] > 0
        verdicts = v["gate"]["outputs"]
        assert verdicts["scores"]["measure"] == "top1" and verdicts["shape"]["measure"] == "snr"
        assert v["gate"]["passed"] and v["gate"]["output"] in ("scores", "shape")
    assert sorted(s["name"] for s in manifest["model"]["outputs"]) == ["scores", "shape"]
    assert all(s["tensor"] for s in manifest["model"]["outputs"])
    assert set(manifest["metrics"]["outputs"]) == {"scores", "shape"}
    st = manifest["selftest"]
    assert set(st["outputs"]) == {"scores", "shape"}
    assert st["outputs"]["scores"]["class_scores"] and not st["outputs"]["shape"]["class_scores"]
    results = _passes_selftest(_bundle(result.bundle_path, keys))
    assert {r.name for r in results} == {"scores", "shape"} and all(r.passed for r in results)
    markdown = (tmp_path / "two.report.md").read_text()
    assert "| `scores` | class scores |" in markdown and "| `shape` | values |" in markdown


def test_two_inputs_calibrate_by_name_and_a_constant_output_is_flagged(
        splits: dict[str, Any], keys: Keys, tmp_path: Path) -> None:
    """An image and a vector of hints in another range: each input's int8 scale must come from
    its own calibration array (a mix-up would swap them); one head ignores its inputs."""
    import keras

    from edgefleet.converter.build import convert

    keras.utils.set_random_seed(0)
    image, hint = keras.Input((8, 8, 1), name="image"), keras.Input((4,), name="hint")
    joined = keras.layers.Concatenate()([keras.layers.Flatten()(image), keras.layers.Rescaling(0.01)(hint)])
    hidden = keras.layers.Dense(48, activation="relu")(joined)
    fixed = keras.layers.Dense(3, kernel_initializer="zeros", bias_initializer="ones", trainable=False,
                               name="fixed")(hidden)  # the same answer for every input
    model = keras.Model({"image": image, "hint": hint},
                        {"scores": keras.layers.Dense(10, activation="softmax", name="scores")(hidden),
                         "fixed": fixed})
    model.compile("adam", {"scores": "sparse_categorical_crossentropy", "fixed": None})
    rng = np.random.default_rng(0)

    def hints(n: int) -> np.ndarray:
        return rng.uniform(0, 100, (n, 4)).astype(np.float32)

    (x, y), (x_eval, y_eval), x_calib = splits["train"], splits["eval"], splits["calib"][0]
    model.fit({"image": x, "hint": hints(len(x))}, {"scores": y}, epochs=15, batch_size=32, verbose=0)
    model.save(tmp_path / "two_in.keras")
    np.savez(tmp_path / "calib.npz", image=x_calib, hint=hints(len(x_calib)))
    np.savez(tmp_path / "eval.npz", image=x_eval, hint=hints(len(x_eval)), y=y_eval)

    messages: list[str] = []
    result = convert(tmp_path / "two_in.keras", tmp_path / "calib.npz", tmp_path / "two_in.efb", keys.private,
                     eval_path=tmp_path / "eval.npz", mode="int8", measure_latency=False, chart=False,
                     progress=messages.append)
    inputs = {s["name"]: s for s in result.manifest["model"]["inputs"]}
    assert set(inputs) == {"image", "hint"}
    assert inputs["image"]["scale"] == pytest.approx(1 / 255, rel=0.05)  # calibrated on 0..1
    assert inputs["hint"]["scale"] == pytest.approx(100 / 255, rel=0.05)  # on 0..100
    int8 = result.report["variants"][0]
    assert int8["metrics"]["outputs"]["scores"]["top1"] >= 0.9 and int8["gate"]["passed"]
    assert result.report["float"]["metrics"]["outputs"]["fixed"]["constant"]
    constant = "output 'fixed' is the same for every evaluation input"
    flagged = [w for w in result.report["warnings"] if constant in w]
    assert flagged and any(m.startswith("warning: the float model's output 'fixed'") for m in messages)
    assert int8["gate"]["outputs"]["fixed"]["constant_reference"]
    g = golden.decode(_bundle(result.bundle_path, keys).files["golden.npz"], result.manifest["selftest"])
    assert set(g.inputs) == {"image", "hint"} and set(g.references) == {"scores", "fixed"}
    # the Rescaling(0.01) first on `hint` implies 0..100 there: these hints fit, 0..1 would not
    from edgefleet.converter.data import Dataset
    from edgefleet.converter.data.ranges import check_expected
    from edgefleet.converter.input_ranges import expected_input_ranges
    from edgefleet.converter.sources import load_model_source

    source = load_model_source(tmp_path / "two_in.keras")
    expected, note = expected_input_ranges(source, source.reference_model().inputs)
    assert set(expected) == {"hint"} and (expected["hint"].range.low, expected["hint"].range.high) == (0, 100)
    assert result.report["data"]["input_range_check"] == note and "Rescaling(scale=0.01" in note
    assert not any("the model expects about" in w for w in result.report["warnings"])
    small = Dataset({"hint": hints(8) / 100, "image": x_eval[:8]}, None, {}, Path("small.npz"))
    (outside,) = check_expected(small, expected, "evaluation")
    assert "the model expects about 0..100 for input 'hint'" in outside
    assert all(r.passed for r in _passes_selftest(_bundle(result.bundle_path, keys)))


def test_a_published_mediapipe_model_gets_snr_per_output_and_landmark_figures(
        keys: Keys, tmp_path: Path) -> None:
    """MediaPipe's hand landmark model (float16 weights, no signature, 4 outputs) on photos."""
    from edgefleet.converter.build import convert
    from tests.published_models import INPUT_RANGE, mediapipe_model, photo_batch

    path = mediapipe_model("hand_landmark_lite")
    x = photo_batch((224, 224, 3), 24, INPUT_RANGE["hand_landmark_lite"])
    np.savez(tmp_path / "calib.npz", x=x[:12])
    np.savez(tmp_path / "eval.npz", x=x[12:])
    result = convert(path, tmp_path / "calib.npz", tmp_path / "hand.efb", keys.private,
                     eval_path=tmp_path / "eval.npz", variants="float16,dynamic", task="landmarks",
                     measure_latency=False, chart=False)
    names = {"Identity", "Identity_1", "Identity_2", "Identity_3"}
    assert result.report["outputs"]["class_scores"] == []  # landmarks and flags, no class scores
    for v in result.report["variants"]:
        per = v["metrics"]["outputs"]
        assert set(per) == names and all(np.isfinite(f["snr_db"]) for f in per.values())
        verdicts = v["gate"]["outputs"]
        assert set(verdicts) == names and all(o["measure"] == "snr" for o in verdicts.values())
        landmarks = v["metrics"]["task"]["outputs"]
        assert set(landmarks) == {"Identity", "Identity_3"} and landmarks["Identity"]["points"] == 21
    float16 = next(v for v in result.report["variants"] if v["name"] == "float16")
    # the file's own weights are float16: its float16 variant is that model again
    assert min(f["snr_db"] for f in float16["metrics"]["outputs"].values()) > 60
    assert result.report["chosen"] == "float16"
    # the file's TFLite metadata gives the input's statistics: 0..1, which the photos fit
    implied = result.report["data"]["input_range_check"]
    assert "input_1: 0..1 (its TFLite metadata's input statistics)" in implied
    assert not any("the model expects about" in w for w in result.report["warnings"])
    bundle = _bundle(result.bundle_path, keys)
    assert set(bundle.manifest["selftest"]["outputs"]) == names
    assert all(r.passed for r in _passes_selftest(bundle))


def test_calibrating_on_0_255_and_evaluating_on_0_1_fails_the_default_gate(
        digits_files: dict[str, Path], keys: Keys, tmp_path: Path) -> None:
    """THE acceptance test: the range mix-up is called out before conversion, the default gate
    stops the bundle with the worst output's figures, and the report is written all the same."""
    calib = tmp_path / "calib255.npz"
    np.savez(calib, x=np.load(digits_files["calib"])["x"] * 255)
    out = tmp_path / "digits.efb"
    proc = run_cli("convert", str(digits_files["model"]), "--calib", str(calib), "--eval",
                   str(digits_files["eval"]), "--out", str(out), "--key", str(keys.private), "--mode", "int8",
                   "--no-latency", timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr
    warning = "warning: calibration data (calib255.npz) runs 0..255 but evaluation data (eval.npz) runs 0..1"
    assert warning in err and "spans 255x apart" in err
    assert err.index(warning) < err.index("building int8")  # before the conversion starts
    assert "Error: int8: top-1 " in err and "vs float 99.4%" in err
    assert "above the 1 pp allowed (--max-accuracy-drop), on output 'output_0'" in err
    assert not out.exists()
    report = json.loads((tmp_path / "digits.report.json").read_text())
    gate = report["variants"][0]["gate"]
    assert report["chosen"] is None and not gate["passed"] and gate["output"] == "output_0"
    assert gate["drop_pp"] > 50 and report["gate"]["max_accuracy_drop_pp"] == 1.0
    assert any("runs 0..255 but evaluation data" in w for w in report["warnings"])
    assert "no bundle was written: the accuracy gate failed" in (tmp_path / "digits.report.md").read_text()
    # with the gate off, the same conversion writes its bundle and still warns
    off = run_cli("convert", str(digits_files["model"]), "--calib", str(calib), "--eval",
                  str(digits_files["eval"]), "--out", str(out), "--key", str(keys.private), "--mode", "int8",
                  "--no-latency", "--quiet", "--max-accuracy-drop", "none", timeout=300)
    assert off.returncode == 0 and out.exists(), off.stderr
    assert warning in off.stderr  # --quiet keeps warnings
