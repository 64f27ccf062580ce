"""Models others trained and published: MediaPipe 0.10.14's .tflite files (fetched once into
a cache outside the repository, tests/published_models.py), fed crops of scikit-image's
photos in the value range each model's MediaPipe graph feeds it.

What they brought to light (issue 8): float16 weights behind DEQUANTIZE (refused as
"quantised already"), op codes only in `deprecated_builtin_code` (ai-edge-quantizer read
every op as ADD and changed nothing), no signature (int8 and int16x8 could not calibrate),
sparse weights behind DENSIFY, custom ops LiteRT does not have.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from edgefleet.agent.selftest import run_selftest
from edgefleet.cli import main
from edgefleet.converter.pack import pack
from edgefleet.converter.quantization.checks import load_and_run_check, weights_changed
from edgefleet.converter.tflite_edit import float_equivalent, read_model
from edgefleet.inspect import analyse_model
from edgefleet.protocol.bundle import open_bundle
from edgefleet.protocol.signing import TrustStore
from edgefleet.runtime import TFLiteModel
from edgefleet.tflite_graph import read_graph
from tests.published_models import INPUT_RANGE, mediapipe_model, photo_batch

pytestmark = pytest.mark.slow

CALIBRATION_SAMPLES, EVAL_SAMPLES = 32, 16
# float16 weights (palm, hand, pose), sparse float16 weights (pose_detection), float32 weights
# with op codes in deprecated_builtin_code (iris); none has a signature
CONVERTED = ("palm_detection_lite", "hand_landmark_lite", "pose_detection", "iris_landmark")
MAX_RATIO = {"int8": 0.40, "dynamic": 0.40, "float16": 0.55}  # of the float32 equivalent
# int8 on the first (main) output, measured 10 to 30 dB on these photos; a broken
# quantisation (wrong range, no calibration) gives about 0
MIN_INT8_SNR_DB = 8.0


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _builtin_codes(data: bytes) -> set[int]:
    return {int(c.builtinCode) for c in read_model(data).operatorCodes}


def _photos(name: str, count: int, seed: int) -> np.ndarray:
    shape = TFLiteModel(mediapipe_model(name).read_bytes()).input_shape
    return photo_batch(shape, count, INPUT_RANGE[name], seed=seed)


@pytest.fixture(scope="module")
def conversions(tmp_path_factory: pytest.TempPathFactory, keys: Any) -> dict[str, Any]:
    """convert() of each published model, made once on first use."""
    from edgefleet.converter import convert

    done: dict[str, Any] = {}

    def converted(name: str) -> Any:
        if name not in done:
            folder = tmp_path_factory.mktemp(name)
            np.savez(folder / "calib.npz", x=_photos(name, CALIBRATION_SAMPLES, seed=1))
            np.savez(folder / "eval.npz", x=_photos(name, EVAL_SAMPLES, seed=2))
            model = mediapipe_model(name)
            before = _sha256(model)
            done[name] = convert(model, folder / "calib.npz", folder / f"{name}.efb", keys.private,
                                 eval_path=folder / "eval.npz", variants="int8,dynamic,float16",
                                 calibration_samples=CALIBRATION_SAMPLES, measure_latency=False, chart=False)
            assert _sha256(model) == before, "the user's file must never change"
        return done[name]

    return converted  # type: ignore[return-value]


@pytest.mark.parametrize("name", CONVERTED)
def test_published_model_converts_to_int8_dynamic_and_float16_that_run_in_litert(name, conversions, keys):
    result = conversions(name)
    report = result.report
    variants = {v["name"]: v for v in report["variants"]}
    failed = {f["name"]: f["error"] for f in report["failed_variants"]}
    assert "int8" in variants, failed
    for mode, bound in MAX_RATIO.items():
        if mode in variants:
            assert variants[mode]["size_ratio"] <= bound, (mode, variants[mode]["size_ratio"])
            # measured on the evaluation photos with LiteRT: the variant loads and runs
            assert variants[mode]["metrics"]["samples"] == EVAL_SAMPLES
        else:
            assert mode != "int8" and failed[mode].startswith("not quantised"), failed
    first_output = TFLiteModel(mediapipe_model(name).read_bytes()).outputs[0].name
    assert variants["int8"]["metrics"]["outputs"][first_output]["snr_db"] >= MIN_INT8_SNR_DB

    bundle = open_bundle(result.bundle_path.read_bytes(), TrustStore.from_folder(keys.trust_dir))
    assert bundle.manifest["model"]["variant"] in variants
    chosen = TFLiteModel(bundle.model_bytes)
    published = TFLiteModel(mediapipe_model(name).read_bytes())
    assert [s.name for s in chosen.outputs] == [s.name for s in published.outputs]
    selftest = run_selftest(chosen, bundle)
    assert selftest.passed, selftest.reason


def test_ops_coded_in_the_deprecated_field_are_quantised(conversions):
    # iris_landmark's op codes are in deprecated_builtin_code alone: ai-edge-quantizer saw
    # every op as ADD and left the model as it was (1.00x) until builtin_code was filled in
    assert _builtin_codes(mediapipe_model("iris_landmark").read_bytes()) == {0}
    variants = {v["name"]: v for v in conversions("iris_landmark").report["variants"]}
    assert set(variants) == {"int8", "dynamic", "float16"}
    assert variants["dynamic"]["size_ratio"] <= MAX_RATIO["dynamic"]
    assert variants["float16"]["size_ratio"] <= MAX_RATIO["float16"]


@pytest.mark.parametrize("name", ["palm_detection_lite", "pose_detection", "face_detection_short_range",
                                  "face_detection_full_range_sparse", "iris_landmark"])
def test_float32_equivalent_answers_exactly_as_the_published_model(name):
    data = mediapipe_model(name).read_bytes()
    original = read_graph(data)
    equivalent = float_equivalent(data)
    graph = read_graph(equivalent.model)
    counts = original.op_counts()
    assert equivalent.float16_weights == counts.get("DEQUANTIZE", 0)
    assert equivalent.sparse_weights == counts.get("DENSIFY", 0)
    assert equivalent.signature_added
    assert {t.dtype for ts in graph.tensors for t in ts} <= {"float32", "int32"}
    assert "DEQUANTIZE" not in graph.op_counts() and "DENSIFY" not in graph.op_counts()
    # each folded constant is named after the weight it was made from, not the removed op
    sources = [original.tensor(op.subgraph, op.inputs[0]) for op in original.ops
               if op.name in ("DEQUANTIZE", "DENSIFY")]
    weights = {t.name for t in sources if t.is_constant}
    assert weights <= {t.name for t in graph.tensors[0] if t.is_constant}
    x = _photos(name, 4, seed=3)
    before, _ = TFLiteModel(data).run(x)
    after, _ = TFLiteModel(equivalent.model).run(x)
    assert sorted(after) == sorted(before)  # the signature keeps the outputs' names
    for output, values in before.items():
        assert np.array_equal(after[output], values), output
    assert weights_changed(equivalent.model, data) == (equivalent.float16_weights > 0)


@pytest.mark.parametrize("name", ["face_detection_short_range", "iris_landmark"])
def test_inspect_names_the_ops_of_a_model_with_deprecated_op_codes_as_litert_does(name):
    path = mediapipe_model(name)
    data = path.read_bytes()
    assert _builtin_codes(data) == {0}  # the placeholder (ADD) everywhere
    from ai_edge_litert.interpreter import Interpreter

    litert = Counter(op["op_name"] for op in Interpreter(model_content=data)._get_ops_details())
    assert analyse_model(data)["op_counts"] == dict(litert)
    shown = CliRunner().invoke(main, ["inspect", str(path), "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["op_counts"] == dict(litert)
    assert litert["CONV_2D"] > 10 and litert["ADD"] < sum(litert.values()) / 4


def test_a_model_without_a_signature_converts_to_int8_and_int16x8_on_the_command_line(tmp_path, keys):
    model = mediapipe_model("iris_landmark")
    assert not read_model(model.read_bytes()).signatureDefs
    np.savez(tmp_path / "calib.npz", x=_photos("iris_landmark", 16, seed=4))
    out = tmp_path / "iris-int8.efb"
    result = CliRunner().invoke(main, ["convert", str(model), "--calib", str(tmp_path / "calib.npz"), "--out",
                                       str(out), "--key", str(keys.private), "--variants", "int8,int16x8",
                                       "--pick", "int8", "--no-latency", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["chosen"] == "int8" and report["failed_variants"] == []
    assert {v["name"] for v in report["variants"]} == {"int8", "int16x8"}
    bundle = open_bundle(out.read_bytes(), TrustStore.from_folder(keys.trust_dir))
    graph = read_graph(bundle.model_bytes)
    assert graph.model_inputs[0].dtype == "int8" and graph.model_inputs[0].is_quantized
    assert run_selftest(TFLiteModel(bundle.model_bytes), bundle).passed
    assert not read_model(model.read_bytes()).signatureDefs  # the file itself is as it was


def test_a_model_litert_cannot_run_is_refused_with_the_runtimes_reason():
    data = mediapipe_model("face_landmark_with_attention").read_bytes()
    reason = load_and_run_check(data, np.zeros((1, 192, 192, 3), np.float32))
    assert reason is not None and "Landmarks2TransformMatrix" in reason


def test_pack_ships_a_published_float16_model_byte_for_byte_with_a_golden_set_that_tells_models_apart(
        tmp_path, keys):
    model = mediapipe_model("palm_detection_lite")
    np.savez(tmp_path / "inputs.npz", x=_photos("palm_detection_lite", 48, seed=5))
    result = pack(model, tmp_path / "palm.efb", keys.private, data_path=tmp_path / "inputs.npz", name="palm")
    bundle = open_bundle(result.bundle_path.read_bytes(), TrustStore.from_folder(keys.trust_dir))
    assert bundle.model_bytes == model.read_bytes()
    assert bundle.manifest["model"]["quantization"] == "float16" and result.report["warnings"] == []
    selftest = run_selftest(TFLiteModel(bundle.model_bytes), bundle)
    assert selftest.passed, selftest.reason
    assert selftest.samples >= 4 and len(selftest.outputs) == 2
    # palm_detection_full has the same inputs and outputs, other weights: it must fail
    other = run_selftest(TFLiteModel(mediapipe_model("palm_detection_full").read_bytes()), bundle)
    assert not other.passed
