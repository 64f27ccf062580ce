"""agent.tflite_graph reads real converted models: ops, int8 tensors, sparsity; and stays TensorFlow-free."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgefleet.tflite_graph import read_graph
from tests.support import ROOT


def _keras_cnn(zero_half: bool):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3), batch_size=1)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(6, name="dense")(x)
    model = keras.Model(inp, out)
    if zero_half:  # first half of the dense kernel's output columns zero: known sparsity
        kernel, bias = model.get_layer("dense").get_weights()
        kernel[:, :3] = 0.0
        model.get_layer("dense").set_weights([kernel, bias])
    return model


def _convert(model, int8: bool) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(0)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([rng.random((1, 8, 8, 3), dtype=np.float32)] for _ in range(8))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    pytest.importorskip("tensorflow")
    return {"float": _convert(_keras_cnn(True), int8=False), "int8": _convert(_keras_cnn(True), int8=True)}


@pytest.mark.slow
def test_float_model_ops_and_known_sparsity(models):
    g = read_graph(models["float"])
    counts = g.op_counts()
    assert counts["CONV_2D"] == 1 and counts["FULLY_CONNECTED"] == 1, counts
    assert g.subgraphs == 1 and g.size_bytes == len(models["float"])
    assert g.model_inputs[0].dtype == "float32" and g.model_inputs[0].shape == (1, 8, 8, 3)
    assert g.min_runtime_version  # the converter writes it into the metadata
    layers = g.layer_sparsity()
    dense = next(v for k, v in layers.items() if "dense" in k)
    assert dense == pytest.approx(0.5)  # 3 of 6 output columns zeroed
    conv_weights = 4 * 3 * 3 * 3
    dense_weights = 8 * 8 * 4 * 6
    expected = (dense_weights / 2) / (conv_weights + dense_weights)
    assert g.weight_sparsity() == pytest.approx(expected, abs=0.01)
    d = g.as_dict()
    assert d["op_counts"] == counts and d["inputs"][0]["dtype"] == "float32"


@pytest.mark.slow
def test_int8_model_has_int8_tensors_with_scales_and_zero_points(models):
    g = read_graph(models["int8"])
    inp, out = g.model_inputs[0], g.model_outputs[0]
    assert inp.dtype == "int8" and out.dtype == "int8"
    assert len(inp.scales) == 1 and inp.scales[0] > 0 and len(inp.zero_points) == 1
    conv = next(op for op in g.ops if op.name == "CONV_2D")
    w = g.tensor(0, conv.inputs[1])
    assert w.is_constant and w.dtype == "int8" and len(w.scales) == 4  # per-channel
    assert g.tensor(0, conv.inputs[2]).dtype == "int32"  # bias
    # a quantised weight counts as zero when it equals its zero point: the zeroed half stays zero
    dense = next(v for k, v in g.layer_sparsity().items() if "dense" in k)
    assert dense >= 0.5
    assert all(not t.is_dynamic for t in g.tensors[0])


def test_non_tflite_bytes_give_a_clear_error():
    with pytest.raises(ValueError, match=r"not a TFLite model.*TFL3"):
        read_graph(b"PK\x03\x04 this is a zip, not a model")
    with pytest.raises(ValueError, match="not a TFLite model"):
        read_graph(b"")
    with pytest.raises(ValueError, match="damaged"):
        read_graph(b"\x00\x00\x00\x00TFL3" + b"\xff" * 8)


def test_graph_modules_import_without_tensorflow():
    script = textwrap.dedent("""
        import sys
        import edgefleet.tflite_graph
        from edgefleet.converter.targets import edgetpu, npu, xnnpack_sparse
        import edgefleet.devices.profiles
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
        assert not heavy, heavy
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr
