"""The converter's commands as a user runs them: convert with variants and pruning,
distill, inspect a .tflite; JSON for scripts."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgefleet.cli import main
from tests.support import Keys

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("needs the converter extra (TensorFlow)", allow_module_level=True)

pytestmark = pytest.mark.slow


def test_convert_variants_with_pruning_json(digits_files: dict[str, Path], keys: Keys,
                                            tmp_path: Path) -> None:
    out = tmp_path / "p.efb"
    result = CliRunner().invoke(main, [
        "convert", str(digits_files["model"]), "--calib", str(digits_files["calib"]),
        "--eval", str(digits_files["eval"]), "--train", str(digits_files["train"]), "--out", str(out),
        "--key", str(keys.private), "--variants", "int8,pruned-int8", "--sparsity", "0.5",
        "--prune-epochs", "1", "--pick", "pruned-int8", "--no-latency", "--json",
        # one epoch of fine-tuning loses 0.3 to 1.1 pp from run to run: this test is about the
        # pruning figures and --pick, the default 1 pp gate has tests of its own
        "--max-accuracy-drop", "none"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["chosen"] == "pruned-int8" and report["recommendation"].endswith("--pick")
    pruned = report["variants"][1]
    assert pruned["pruned"] and pruned["sparsity"] >= 0.45
    assert report["pruning"]["overall_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert pruned["xnnpack_sparse"]["applies"] is False  # int8: XNNPACK's sparse path is float only
    assert pruned["compressed_bytes"] < report["variants"][0]["compressed_bytes"]
    assert out.exists() and Path(f"{out.with_suffix('')}.report.md").exists()


def test_pruned_variant_needs_training_data(digits_files: dict[str, Path], keys: Keys,
                                            tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [
        "convert", str(digits_files["model"]), "--calib", str(digits_files["calib"]),
        "--out", str(tmp_path / "p.efb"), "--key", str(keys.private), "--mode", "pruned-int8"])
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
    from edgefleet.converter.quantization import QuantOptions, quantize
    from edgefleet.converter.sources import load_model_source

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


def test_bad_data_and_options_fail_early_with_what_to_do(
        digits_files: dict[str, Path], keys: Keys, tmp_path: Path) -> None:
    import numpy as np

    x = np.load(digits_files["calib"])["x"]
    np.savez(tmp_path / "nan.npz", x=np.where(x > 0.5, np.nan, x))
    ev = np.load(digits_files["eval"])
    np.savez(tmp_path / "labels.npz", x=ev["x"], y=ev["y"] + 5)
    (tmp_path / "text.npz").write_text("not data")
    base = ["convert", str(digits_files["model"]), "--out", str(tmp_path / "o.efb"),
            "--key", str(keys.private), "--no-latency", "--mode", "int8"]
    cases = [
        (["--calib", str(tmp_path / "nan.npz")], "NaN or infinite"),
        (["--calib", str(digits_files["calib"]), "--eval", str(tmp_path / "labels.npz")],
         "labels must be class indices 0..9"),
        (["--calib", str(tmp_path / "text.npz")], "not an .npz file"),
        (["--calib", str(digits_files["calib"]), "--max-accuracy-drop", "0.5"], "needs evaluation data"),
        (["--calib", str(digits_files["calib"]), "--pick", "fp16"], "not among the variants"),
    ]
    for extra, words in cases:
        result = CliRunner().invoke(main, [*base, *extra])
        assert result.exit_code == 1 and words in result.output, (extra, result.output)
        assert not (tmp_path / "o.efb").exists()
    victim = tmp_path / "victim.keras"
    victim.write_bytes(digits_files["model"].read_bytes())
    same = CliRunner().invoke(main, ["convert", str(victim), "--calib", str(digits_files["calib"]),
                                     "--out", str(victim), "--key", str(keys.private)])
    assert same.exit_code == 1 and "is the model being converted" in same.output
    assert victim.read_bytes() == digits_files["model"].read_bytes()


def test_inspect_trust_refusal_is_a_failed_check(
        digits_files: dict[str, Path], keys: Keys, tmp_path: Path) -> None:
    from edgefleet.converter.build import convert
    from edgefleet.protocol.signing import generate_keypair

    bundle = tmp_path / "b.efb"
    convert(digits_files["model"], digits_files["calib"], bundle, keys.private, mode="int8",
            measure_latency=False, chart=False)
    ok = CliRunner().invoke(main, ["inspect", str(bundle), "--trust", str(keys.trust_dir)])
    assert ok.exit_code == 0 and "signature and hashes: OK" in ok.output
    generate_keypair(tmp_path / "other")
    refused = CliRunner().invoke(main, ["inspect", str(bundle), "--trust", str(tmp_path / "other")])
    assert refused.exit_code == 1 and "REFUSED" in refused.output
    missing = CliRunner().invoke(main, ["inspect", str(bundle), "--trust", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "not a folder" in missing.output
