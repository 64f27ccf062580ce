"""Figures per output, the per-output gate, task figures, data ranges, data by input name and
the speed-aware recommendation, on hand-made arrays (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgefleet.converter.data import load_inputs
from edgefleet.converter.data.arrays import Dataset
from edgefleet.converter.data.ranges import ExpectedRange, ValueRange, check_expected, compare_data
from edgefleet.converter.errors import ConversionError
from edgefleet.converter.quantization.gate import DEFAULT, check_outputs, gate_budget
from edgefleet.converter.quantization.metrics import (
    MAX_SNR_DB,
    compare_outputs,
    is_constant,
    reference_figures,
)
from edgefleet.converter.quantization.tasks import task_figures
from edgefleet.converter.variants import Measured, VariantResult, VariantSpec, choose, recommend
from edgefleet.tensors import TensorSpec

RNG = np.random.default_rng(0)


def _two_outputs() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    scores = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1, 2, 3]]  # sample i -> class i % 4
    boxes = RNG.normal(0, 1, (8, 6)).astype(np.float32)
    outputs = {"scores": scores.copy(), "boxes": boxes.copy()}
    return {"scores": scores, "boxes": boxes}, outputs, np.arange(8) % 4


# --- figures per output ---------------------------------------------------------------------

def test_every_output_gets_snr_cosine_and_max_error_and_class_outputs_top1() -> None:
    reference, outputs, labels = _two_outputs()
    outputs["boxes"] = outputs["boxes"] + 0.1  # noise of a known size on one output
    outputs["scores"][7] = [0, 0, 1, 0]  # one of eight top classes flips
    m = compare_outputs(reference, outputs, ["scores"], labels, "scores")
    boxes, scores = m["outputs"]["boxes"], m["outputs"]["scores"]
    expected_snr = 10 * np.log10(np.sum(reference["boxes"].astype(np.float64) ** 2) / (0.01 * 48))
    assert boxes["snr_db"] == pytest.approx(expected_snr, rel=1e-4)
    assert boxes["max_abs_error"] == pytest.approx(0.1, abs=1e-6) and not boxes["class_scores"]
    assert "agreement" not in boxes and "top1" not in boxes
    assert scores["class_scores"] and scores["agreement"] == 0.875 and scores["top1"] == 0.875
    # the headline: the labelled class output's figures, the lowest SNR of all
    assert m["top1"] == 0.875 and m["agreement"] == 0.875
    assert m["snr_db"] == min(boxes["snr_db"], scores["snr_db"]) and m["samples"] == 8


def test_a_constant_output_is_flagged() -> None:
    reference, _, labels = _two_outputs()
    reference["bias"] = np.ones((8, 3), np.float32)
    figures = reference_figures(reference, ["scores"], labels, "scores")
    assert figures["outputs"]["bias"]["constant"] and not figures["outputs"]["boxes"]["constant"]
    assert figures["top1"] == 1.0 and figures["outputs"]["scores"]["top1"] == 1.0
    assert not is_constant(np.ones((1, 3)))  # one sample proves nothing either way
    identical = compare_outputs(reference, {k: v.copy() for k, v in reference.items()}, ["scores"])
    assert identical["outputs"]["bias"]["snr_db"] == MAX_SNR_DB and identical["outputs"]["bias"]["constant"]


# --- the gate over every output ---------------------------------------------------------------

def test_gate_names_the_worst_output_with_its_figures() -> None:
    reference, outputs, labels = _two_outputs()
    float_figures = reference_figures(reference, ["scores"], labels, "scores")
    outputs["boxes"] = outputs["boxes"] + RNG.normal(0, 0.5, outputs["boxes"].shape).astype(np.float32)
    variant = compare_outputs(reference, outputs, ["scores"], labels, "scores")
    gate = check_outputs(float_figures, variant, 1.0, 20.0, "int8")
    assert not gate.passed and gate.output == "boxes" and gate.measure == "snr"
    snr = variant["outputs"]["boxes"]["snr_db"]
    assert snr < 20
    assert gate.message.startswith(f"int8: SNR {snr:.1f} dB against the float model is below the 20 dB "
                                   "floor (--min-snr-db), on output 'boxes', the worst of 2 outputs (1 fail)")
    assert gate.outputs["scores"]["passed"] and not gate.outputs["boxes"]["passed"]
    assert check_outputs(float_figures, variant, 1.0, snr - 1, "int8").passed  # a lower floor passes
    outputs["scores"][:4] = np.roll(outputs["scores"][:4], 1, axis=1)  # half the top classes flip
    both = check_outputs(float_figures, compare_outputs(reference, outputs, ["scores"], labels, "scores"),
                         1.0, 20.0, "int8")
    # a 50 pp drop is 49 budgets beyond its bound; the SNR's shortfall is smaller relative to its floor
    assert both.output == "scores" and "top-1 50.0% vs float 100.0%" in both.message
    assert "(2 fail)" in both.message and both.drop_pp == pytest.approx(50.0)


def test_gate_budget_defaults_and_none() -> None:
    assert gate_budget(DEFAULT, 20.0, has_eval=True) == 1.0
    assert gate_budget(DEFAULT, 20.0, has_eval=False) is None  # nothing to measure: no gate
    assert gate_budget(None, 20.0, has_eval=True) is None  # --max-accuracy-drop none
    assert gate_budget(0.5, 20.0, has_eval=True) == 0.5
    with pytest.raises(ConversionError, match="needs evaluation data"):
        gate_budget(0.5, 20.0, has_eval=False)
    with pytest.raises(ConversionError, match="--keep-float-layers auto needs the accuracy gate"):
        gate_budget(None, 20.0, has_eval=True, keep_float=True)
    with pytest.raises(ConversionError, match="--min-snr-db must be a number"):
        gate_budget(DEFAULT, float("nan"), has_eval=True)


# --- task figures ---------------------------------------------------------------------------

def test_detection_matches_boxes_anchor_by_anchor() -> None:
    boxes = np.zeros((2, 5, 18), np.float32)
    boxes[..., :4] = [10, 10, 8, 8]  # (x_center, y_center, width, height) on every anchor
    scores = np.full((2, 5, 1), -5.0, np.float32)  # logits: no detection ...
    scores[:, :2] = 5.0  # ... but on anchors 0 and 1
    out_boxes, out_scores = boxes.copy(), scores.copy()
    out_boxes[0, 1, 0] += 6  # shifted by 6 of 8: IoU 2/14, unmatched
    out_scores[1, 4] = 5.0  # an extra detection
    f = task_figures("detection", {"box": boxes, "score": scores},
                     {"box": out_boxes, "score": out_scores})["outputs"]["box"]
    assert f["scores"] == "score"
    assert (f["float_detections"], f["variant_detections"], f["matched"]) == (4, 5, 3)
    assert f["recall"] == 0.75 and f["precision"] == 0.6 and f["mean_iou"] == 1.0
    assert "logits" in f["layout"]


def test_landmarks_and_segmentation_figures() -> None:
    points = RNG.uniform(0, 100, (3, 63)).astype(np.float32)  # 21 points of (x, y, z)
    moved = points.copy()
    moved[:, 0::3] += 3.0
    moved[:, 1::3] += 4.0  # every point 5 away in (x, y); z ignored
    moved[:, 2::3] += 50.0
    f = task_figures("landmarks", {"pts": points, "flag": np.ones((3, 1))},
                     {"pts": moved, "flag": np.ones((3, 1))})
    assert set(f["outputs"]) == {"pts"}  # a one-value flag is no landmark
    pts = f["outputs"]["pts"]
    assert pts["points"] == 21 and pts["mean_point_error"] == pytest.approx(5.0)
    mask = np.zeros((2, 16, 16, 1), np.float32)
    mask[:, :8] = 0.9  # the top half
    other = np.zeros_like(mask)
    other[:, :4] = 0.9  # a quarter: IoU 0.5
    seg = task_figures("segmentation", {"m": mask}, {"m": other})["outputs"]["m"]
    assert seg["mask_iou"] == pytest.approx(0.5)
    assert "note" in task_figures("segmentation", {"pts": points}, {"pts": moved})


# --- data: ranges and names -----------------------------------------------------------------

def _data(name: str, x: np.ndarray, dtype: str = "float32") -> Dataset:
    return Dataset({"image": x}, None, {"image": dtype}, Path(name))


def test_calibration_and_evaluation_ranges_that_differ_are_called_out() -> None:
    x = RNG.uniform(0, 1, (10, 4, 4, 1)).astype(np.float32)
    (warning,) = compare_data(_data("calib.npz", x * 255), _data("eval.npz", x))
    assert "calibration data (calib.npz) runs" in warning and "but evaluation data (eval.npz) runs" in warning
    assert "spans 255x apart" in warning
    assert compare_data(_data("a.npz", x), _data("b.npz", x * 0.98 + 0.01)) == []  # preprocessed alike
    (dtype,) = compare_data(_data("a.npz", x, "uint8"), _data("b.npz", x))
    assert "stored as uint8 and evaluation data as float32" in dtype
    expected = {"image": ExpectedRange(ValueRange(0, 255), "its first layer Rescaling(...)")}
    (outside,) = check_expected(_data("eval.npz", x), expected, "evaluation")
    assert "the model expects about 0..255" in outside and "Rescaling" in outside
    assert check_expected(_data("calib.npz", x * 255), expected, "calibration") == []


def test_npz_by_input_name(tmp_path: Path) -> None:
    specs = [TensorSpec("image", 0, (1, 4, 4, 1), "float32", 0.0, 0, "serving_default_image:0"),
             TensorSpec("hint", 1, (1, 3), "float32", 0.0, 0, "serving_default_hint:0")]
    np.savez(tmp_path / "d.npz", image=np.zeros((5, 4, 4, 1), np.uint8), hint=np.ones((5, 3)), y=np.arange(5))
    data = load_inputs(tmp_path / "d.npz", specs)
    assert set(data.inputs) == {"image", "hint"} and data.count == 5 and list(data.labels) == [0, 1, 2, 3, 4]
    assert data.dtypes == {"image": "uint8", "hint": "float64"}
    assert all(a.dtype == np.float32 for a in data.inputs.values())
    # tensor names work too
    by_tensor = {"serving_default_image:0": np.zeros((2, 4, 4, 1)), "hint": np.ones((2, 3))}
    np.savez(tmp_path / "t.npz", **by_tensor)
    assert load_inputs(tmp_path / "t.npz", specs).count == 2
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 4, 4, 1)))
    with pytest.raises(ConversionError, match=r"no array for input\(s\) 'image', 'hint' \(it has: x\).*"
                                              r"np.savez\(path, image=\.\.\., hint=\.\.\., y=labels\)"):
        load_inputs(tmp_path / "x.npz", specs)
    assert set(load_inputs(tmp_path / "x.npz", specs[:1]).inputs) == {"image"}  # x: a one-input model
    np.savez(tmp_path / "uneven.npz", image=np.zeros((2, 4, 4, 1)), hint=np.ones((3, 3)))
    with pytest.raises(ConversionError, match="different numbers of samples: image 2, hint 3"):
        load_inputs(tmp_path / "uneven.npz", specs)
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 4, 1)))
    with pytest.raises(ConversionError, match="the model has 2 inputs"):
        load_inputs(tmp_path / "x.npy", specs)


# --- the recommendation ---------------------------------------------------------------------

def _variant(name: str, compressed: int, p50_ms: float, passed: bool = True) -> VariantResult:
    from edgefleet.converter.quantization.gate import GateResult

    spec = VariantSpec.parse(name)
    measured = Measured(compressed * 2, compressed, {}, {"1": p50_ms, "all": p50_ms}, 0.0, {})
    gate = GateResult(passed, 0.0, "top1", f"{name}: gate", name, 1.0)
    return VariantResult(spec, b"", measured, gate=gate)


def test_the_smallest_that_passes_and_is_not_much_slower_than_float32() -> None:
    results = [_variant("int8", 100, 3.0), _variant("float16", 200, 1.1), _variant("dynamic", 150, 1.2)]
    chosen, why = recommend(results, None, False, float_p50_ms=1.0)
    assert chosen.spec.name == "dynamic"  # int8 is smaller, but 3x slower than float32 here
    assert "smallest compressed size (150 bytes) among 2 eligible" in why and "int8 (3.0x)" in why
    assert recommend(results, None, False, float_p50_ms=1.0, prefer="size")[0].spec.name == "int8"
    assert recommend(results, None, False, float_p50_ms=1.0, prefer="speed")[0].spec.name == "float16"
    # microseconds: 1.5x of a tiny model is timer noise, not "much slower"
    tiny = [_variant("int8", 100, 0.018), _variant("dynamic", 150, 0.012)]
    assert recommend(tiny, None, False, float_p50_ms=0.011)[0].spec.name == "int8"


def test_when_every_variant_fails_the_gate_each_is_named() -> None:
    from edgefleet.converter.quantization.gate import GateError

    every = r"no variant passes the accuracy gate:\n  int8: gate\n  dynamic: gate"
    with pytest.raises(GateError, match=every):
        choose([_variant("int8", 100, 1.0, False), _variant("dynamic", 150, 1.0, False)], None, None, False,
               1.0, "balanced")
    with pytest.raises(GateError, match=r"^int8: gate$"):
        choose([_variant("int8", 100, 1.0, False), _variant("dynamic", 150, 1.0)], "int8", None, False, 1.0,
               "balanced")
