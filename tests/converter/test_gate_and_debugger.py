"""The accuracy gate (metrics, gate verdicts) and the int8 QuantizationDebugger helpers."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from edgefleet.converter.errors import ConversionError
from edgefleet.converter.quantization.gate import GateError, GateResult, check_accuracy_drop, raise_if_failed
from edgefleet.converter.quantization.metrics import MAX_SNR_DB, compare, reference_metrics

HAS_TF = importlib.util.find_spec("tensorflow") is not None  # find, not import: collection stays light
needs_tf = pytest.mark.skipif(not HAS_TF, reason="needs the converter extra (TensorFlow)")


# --- metrics on hand-made arrays ------------------------------------------------------------

def test_identical_outputs() -> None:
    ref = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]], np.float32)
    m = compare(ref, ref.copy())
    assert m["agreement"] == 1.0
    assert m["cosine"] == pytest.approx(1.0)
    assert m["snr_db"] == MAX_SNR_DB
    assert "top1" not in m
    json.dumps(m, allow_nan=False)  # JSON-safe even for "infinite" SNR


def test_a_known_flip_and_noise() -> None:
    ref = np.eye(4, dtype=np.float32)  # sample i -> class i
    out = ref.copy()
    out[3] = [0, 0, 1, 0]  # one of four flips
    m = compare(ref, out)
    assert m["agreement"] == 0.75
    assert m["cosine"] == pytest.approx(0.75)  # three identical rows, one orthogonal
    # signal sum(ref^2) = 4, noise = 2 -> 10 log10(2) dB
    assert m["snr_db"] == pytest.approx(10 * np.log10(2.0))


def test_top1_and_topk_with_labels() -> None:
    out = np.array([
        [0.6, 0.3, 0.1, 0.0],  # label 0: top-1
        [0.6, 0.3, 0.1, 0.0],  # label 1: second
        [0.6, 0.3, 0.1, 0.0],  # label 2: third
        [0.6, 0.3, 0.1, 0.0],  # label 3: last
    ], np.float32)
    labels = np.array([0, 1, 2, 3])
    m = compare(out, out, labels, top_k=2)
    assert (m["top1"], m["topk"], m["k"]) == (0.25, 0.5, 2)
    assert compare(out, out, labels, top_k=3)["topk"] == 0.75
    big_k = reference_metrics(out, labels, top_k=5)  # k is capped at the class count
    assert (big_k["top1"], big_k["topk"], big_k["k"], big_k["samples"]) == (0.25, 1.0, 4, 4)


def test_metrics_reject_mismatched_input() -> None:
    a = np.zeros((3, 4), np.float32)
    with pytest.raises(ConversionError, match="shape"):
        compare(a, np.zeros((3, 5), np.float32))
    with pytest.raises(ConversionError, match="labels"):
        compare(a, a, np.array([0, 1]))
    with pytest.raises(ConversionError, match="not \\(samples, classes\\)"):
        compare(np.zeros(3), np.zeros(3))
    zero = compare(a, a)  # all-zero scores: identical, nothing to divide by
    assert (zero["cosine"], zero["snr_db"]) == (1.0, MAX_SNR_DB)


# --- the gate on hand-made figures ----------------------------------------------------------

def test_gate_message_carries_the_figures() -> None:
    failed = check_accuracy_drop({"top1": 0.994}, {"top1": 0.972, "agreement": 0.97}, 0.5, "int8")
    assert not failed.passed and failed.measure == "top1"
    assert failed.drop_pp == pytest.approx(2.2)
    assert failed.message == (
        "int8: top-1 97.2% vs float 99.4% is a drop of 2.2 pp, above the 0.5 pp allowed "
        "(--max-accuracy-drop)"
    )
    with pytest.raises(GateError, match=r"int8: top-1 97\.2% vs float 99\.4%") as caught:
        raise_if_failed(failed)
    assert isinstance(caught.value, ConversionError) and caught.value.result is failed


def test_gate_edges_and_agreement_without_labels() -> None:
    # 100 * (0.994 - 0.989) is 0.5000000000000004 in floats: still exactly the budget
    assert check_accuracy_drop({"top1": 0.994}, {"top1": 0.989}, 0.5, "int8").passed
    gained = check_accuracy_drop({"top1": 0.95}, {"top1": 0.96}, 0.0, "fp16")
    assert gained.passed and "a gain of 1.0 pp" in gained.message
    # a drop that prints like the budget with one decimal gets more decimals
    near = check_accuracy_drop({"top1": 0.9900}, {"top1": 0.9846}, 0.5, "int8")
    assert not near.passed and "drop of 0.54 pp" in near.message
    float_unlabelled = reference_metrics(np.eye(3, dtype=np.float32), None)
    assert float_unlabelled == {"samples": 3}
    unlabelled = check_accuracy_drop(float_unlabelled, {"agreement": 0.97, "top1": None}, 1.0, "int8")
    assert unlabelled.measure == "agreement" and not unlabelled.passed
    assert unlabelled.drop_pp == pytest.approx(3.0)
    assert "97.0%" in unlabelled.message and "no labels" in unlabelled.message
    with pytest.raises(ConversionError, match="neither top-1"):
        check_accuracy_drop({}, {}, 1.0, "int8")
    assert raise_if_failed(gained) is gained


# --- real conversions ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mlp() -> dict[str, Any]:
    """A small MLP on digits, and a copy whose first Dense layer cannot be quantised.

    The copy's weights from pixel (0, 0), which is 0 in every digits image, are set to +/-300:
    the float function does not change, but the per-channel int8 weight scale grows so much
    that every real weight of that layer rounds to zero.
    """
    if not HAS_TF:
        pytest.skip("needs the converter extra (TensorFlow)")
    import keras

    from edgefleet.converter.digits import digits_splits

    splits = digits_splits(seed=0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Flatten(),
        keras.layers.Dense(48, activation="relu", name="hidden"),
        keras.layers.Dense(10, activation="softmax", name="scores"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(*splits["train"], epochs=20, batch_size=32, verbose=0)
    assert not splits["train"][0][:, 0, 0, 0].any()

    outlier = keras.models.clone_model(model)
    outlier.set_weights(model.get_weights())
    kernel, bias = outlier.get_layer("hidden").get_weights()
    kernel[0, :] = 300.0 * np.where(np.arange(kernel.shape[1]) % 2, 1.0, -1.0)
    outlier.get_layer("hidden").set_weights([kernel, bias])
    return {"model": model, "outlier": outlier, "splits": splits}


def _gate_for(model: Any, splits: dict[str, Any], max_drop_pp: float) -> Callable[[bytes], GateResult]:
    """evaluate(model bytes) -> GateResult against MODEL's float figures on the eval split."""
    from edgefleet.converter.evaluate import class_scores, keras_outputs, tflite_outputs

    x_eval, y_eval = splits["eval"]
    reference = keras_outputs(model, x_eval)
    float_metrics = reference_metrics(reference, y_eval)

    def evaluate(model_bytes: bytes) -> GateResult:
        variant = compare(reference, class_scores(tflite_outputs(model_bytes, x_eval)), y_eval)
        return check_accuracy_drop(float_metrics, variant, max_drop_pp, "int8")

    return evaluate


def _factory(model: Any) -> Callable[[], Any]:
    import tensorflow as tf

    return lambda: tf.lite.TFLiteConverter.from_keras_model(model)


@needs_tf
@pytest.mark.slow
def test_gate_on_real_conversions(mlp: dict[str, Any]) -> None:
    from edgefleet.converter.quantization import QuantOptions, quantize
    from edgefleet.converter.sources import source_from_keras

    def convert_int8(model: Any, x: np.ndarray) -> bytes:
        return quantize(source_from_keras(model), x, QuantOptions("int8"))

    model, splits = mlp["model"], mlp["splits"]
    calib_x = splits["calib"][0]
    evaluate = _gate_for(model, splits, max_drop_pp=0.5)
    good = evaluate(convert_int8(model, calib_x))
    assert good.passed, good.message
    assert "within the 0.5 pp allowed" in good.message
    # calibrated on inputs 100x too large: the input step swallows the whole 0..1 pixel range
    bad = evaluate(convert_int8(model, calib_x * 100.0))
    assert not bad.passed and bad.measure == "top1"
    assert bad.drop_pp > 10
    assert bad.message.startswith("int8: top-1 ")
    assert "above the 0.5 pp allowed (--max-accuracy-drop)" in bad.message
    assert f"a drop of {bad.drop_pp:.1f} pp" in bad.message


@needs_tf
@pytest.mark.slow
def test_layer_errors_name_the_bad_layer_first(mlp: dict[str, Any]) -> None:
    from edgefleet.converter.quantization.debugger import layer_errors

    errors = layer_errors(_factory(mlp["outlier"]), mlp["splits"]["calib"][0], samples=50)
    assert len(errors) >= 3
    assert all(e.name and e.op for e in errors)
    ratios = [e.rmse_over_scale for e in errors]
    assert ratios == sorted(ratios, reverse=True)
    worst = errors[0]
    assert worst.op == "FULLY_CONNECTED" and "hidden" in worst.name
    assert worst.rmse_over_scale > 10 * errors[1].rmse_over_scale
    assert worst.scale > 0 and worst.mean_abs_error > 0
    # the healthy model's layers are off by about one rounding step at most
    healthy = layer_errors(_factory(mlp["model"]), mlp["splits"]["calib"][0], samples=50)
    assert max(e.rmse_over_scale for e in healthy) < 1.0


@needs_tf
@pytest.mark.slow
@pytest.mark.parametrize("io_dtype", ["int8", "uint8"])
def test_keep_float_layers_until_the_gate_passes(mlp: dict[str, Any], io_dtype: str) -> None:
    from edgefleet.converter.quantization.debugger import keep_float_layers_until
    from edgefleet.runtime import TFLiteModel

    lines: list[str] = []
    result = keep_float_layers_until(
        _factory(mlp["outlier"]), mlp["splits"]["calib"][0], _gate_for(mlp["outlier"], mlp["splits"], 0.5),
        io_dtype=io_dtype, progress=lines.append,
    )
    assert result.passed, result.message
    assert len(result.kept) >= 1 and "hidden" in result.kept[0]
    first_kept, first_gate = result.history[0]
    assert first_kept == [] and not first_gate.passed and first_gate.drop_pp > 10  # full int8 fails
    assert result.history[-1] == (result.kept, result.history[-1][1]) and result.history[-1][1].passed
    assert result.message.startswith(f"kept {len(result.kept)} layer") and "within 0.5 pp" in result.message
    assert any("RMSE/scale" in line for line in lines)
    json.dumps(result.as_dict(), allow_nan=False)

    loaded = TFLiteModel(result.model)  # the device's runtime takes the mixed model
    assert [s.dtype for s in loaded.inputs + loaded.outputs] == [io_dtype, io_dtype]
    x_eval, y_eval = mlp["splits"]["eval"]
    outputs, _ = loaded.predict(x_eval[:50])
    assert np.mean(outputs.argmax(axis=1) == y_eval[:50]) > 0.8


@needs_tf
@pytest.mark.slow
def test_keep_float_layers_says_when_it_cannot(mlp: dict[str, Any]) -> None:
    from edgefleet.converter.quantization.debugger import keep_float_layers_until, layer_errors

    factory, calib_x = _factory(mlp["outlier"]), mlp["splits"]["calib"][0]
    ranking = layer_errors(factory, calib_x, samples=50)
    impossible = keep_float_layers_until(
        factory, calib_x, _gate_for(mlp["outlier"], mlp["splits"], -1.0), samples=50
    )
    assert not impossible.passed
    # every measured layer could be kept in float (the softmax's output name ends in a digit,
    # which the debugger's own name for it drops), one more each attempt
    assert [len(kept) for kept, _gate in impossible.history] == list(range(len(ranking) + 1))
    assert impossible.message.startswith(
        f"could not reach the -1 pp accuracy budget with every layer the debugger measured in float "
        f"({len(ranking)} layers); best was "
    )
    best_drop = min(gate.drop_pp for _kept, gate in impossible.history)
    assert impossible.model and f"{best_drop:.1f} pp, above the -1 pp allowed" in impossible.message

    none_allowed = keep_float_layers_until(
        factory, calib_x, _gate_for(mlp["outlier"], mlp["splits"], 0.5), max_layers=0, samples=50
    )
    assert not none_allowed.passed and none_allowed.kept == [] and len(none_allowed.history) == 1
    assert "even with 0 layers in float (max_layers 0)" in none_allowed.message
    assert "int8: top-1" in none_allowed.message


@needs_tf
@pytest.mark.slow
def test_convert_keeps_the_broken_layer_in_float_to_pass_the_gate(
        mlp: dict[str, Any], tmp_path: Any) -> None:
    """`convert --max-accuracy-drop 0.5 --keep-float-layers auto` end to end: fails without
    the option, passes with it, and says which layer stayed in float."""
    from edgefleet.converter.build import convert
    from edgefleet.converter.quantization.gate import GateError
    from edgefleet.protocol.signing import generate_keypair

    splits = mlp["splits"]
    model_path = tmp_path / "outlier.keras"
    mlp["outlier"].save(model_path)
    np.savez(tmp_path / "calib.npz", x=splits["calib"][0])
    np.savez(tmp_path / "eval.npz", x=splits["eval"][0], y=splits["eval"][1])
    private, _ = generate_keypair(tmp_path / "keys")
    common = {"eval_path": tmp_path / "eval.npz", "mode": "int8", "max_accuracy_drop": 0.5,
              "measure_latency": False, "chart": False}
    with pytest.raises(GateError, match=r"above the 0\.5 pp allowed"):
        convert(model_path, tmp_path / "calib.npz", tmp_path / "a.efb", private, **common)
    result = convert(model_path, tmp_path / "calib.npz", tmp_path / "b.efb", private,
                     keep_float_layers="auto", **common)
    variant = result.report["variants"][0]
    assert variant["gate"]["passed"], variant
    assert variant["kept_float_layers"] and "hidden" in variant["kept_float_layers"][0]
    assert result.manifest["model"]["inputs"][0]["dtype"] == "int8"
