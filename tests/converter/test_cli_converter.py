"""The converter's commands as a user runs them: convert with variants and pruning,
distill, inspect a .tflite; JSON for scripts."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgefleet.cli import main

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("needs the converter extra (TensorFlow)", allow_module_level=True)

pytestmark = pytest.mark.slow


def test_convert_variants_with_pruning_json(digits_files: dict[str, Path], session_keys: dict[str, Path],
                                            tmp_path: Path) -> None:
    out = tmp_path / "p.efb"
    result = CliRunner().invoke(main, [
        "convert", str(digits_files["model"]), "--calib", str(digits_files["calib"]),
        "--eval", str(digits_files["eval"]), "--train", str(digits_files["train"]), "--out", str(out),
        "--key", str(session_keys["private"]), "--variants", "int8,pruned-int8", "--sparsity", "0.5",
        "--prune-epochs", "1", "--pick", "pruned-int8", "--no-latency", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["chosen"] == "pruned-int8" and report["recommendation"].endswith("--pick")
    pruned = report["variants"][1]
    assert pruned["pruned"] and pruned["sparsity"] >= 0.45
    assert report["pruning"]["overall_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert pruned["xnnpack_sparse"]["applies"] is False  # int8: XNNPACK's sparse path is float only
    assert pruned["compressed_bytes"] < report["variants"][0]["compressed_bytes"]
    assert out.exists() and Path(f"{out.with_suffix('')}.report.md").exists()


def test_pruned_variant_needs_training_data(digits_files: dict[str, Path], session_keys: dict[str, Path],
                                            tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [
        "convert", str(digits_files["model"]), "--calib", str(digits_files["calib"]),
        "--out", str(tmp_path / "p.efb"), "--key", str(session_keys["private"]), "--mode", "pruned-int8"])
    assert result.exit_code == 1 and "--train" in result.output


def test_distill_command_reports_teacher_student_and_labels_only(digits_files: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "student.keras"
    result = CliRunner().invoke(main, [
        "distill", "--teacher", str(digits_files["model"]), "--width", "0.5",
        "--train", str(digits_files["train"]), "--eval", str(digits_files["eval"]), "--out", str(out),
        "--epochs", "2", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["student_params"] < figures["teacher_params"] * 0.4
    for key in ("teacher_top1", "student_top1", "baseline_top1"):
        assert 0.0 <= figures[key] <= 1.0
    assert out.exists()
    both = CliRunner().invoke(main, ["distill", "--teacher", str(digits_files["model"]), "--width", "0.5",
                                     "--student", str(out), "--train", str(digits_files["train"]),
                                     "--out", str(tmp_path / "x.keras")])
    assert both.exit_code != 0 and "one of them" in both.output


def test_inspect_tflite_lists_ops_quantisation_and_readiness(digits_files: dict[str, Path],
                                                              tmp_path: Path) -> None:
    from converter.quantize import QuantOptions, quantize
    from converter.sources import load_model_source

    source = load_model_source(digits_files["model"])
    source.batch_size = 1
    import numpy as np

    model = tmp_path / "m.tflite"
    model.write_bytes(quantize(source, np.load(digits_files["calib"])["x"], QuantOptions("int8", "uint8")))
    result = CliRunner().invoke(main, ["inspect", str(model), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["op_counts"]["CONV_2D"] == 2 and info["op_counts"]["FULLY_CONNECTED"] == 2
    assert info["inputs"][0]["dtype"] == "uint8" and info["inputs"][0]["scales"]
    assert info["edgetpu"]["fully_mappable"] and info["npu"]["ready"]
    text = CliRunner().invoke(main, ["inspect", str(model)]).output
    assert "Edge TPU (predicted, " in text and "fully mappable" in text
