"""Edge TPU readiness from the flatbuffer (issue 3 acceptance), the compiler log parser through a
stand-in `edgetpu_compiler`, the NPU check, and XNNPACK's sparse-inference conditions."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from edgefleet.converter.targets.edgetpu import EDGETPU_OPS, check_edgetpu
from edgefleet.converter.targets.edgetpu_compiler import parse_compiler_log, run_compiler
from edgefleet.converter.targets.npu import check_npu
from edgefleet.converter.targets.xnnpack_sparse import check_xnnpack_sparse

SHAPE = (32, 32, 3)


def _mobilenet_style(sin_in_the_middle: bool = False):
    """conv, depthwise, pointwise, relu6, global average pooling, dense, softmax; fixed batch 1."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input(SHAPE, batch_size=1)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    if sin_in_the_middle:  # SIN has no int8 kernel: the converter leaves it in float
        x = keras.layers.Lambda(lambda t: keras.ops.sin(t))(x)
    x = keras.layers.Conv2D(16, 1, use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(5, activation="softmax")(x)
    return keras.Model(inp, out)


def _int8_uint8_io(model, allow_float_fallback: bool = False) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    rng = np.random.default_rng(0)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rng.random((1, *SHAPE), dtype=np.float32)] for _ in range(8))
    if not allow_float_fallback:
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    return conv.convert()


@pytest.fixture(scope="module")
def mobilenet_int8() -> bytes:
    pytest.importorskip("tensorflow")
    return _int8_uint8_io(_mobilenet_style())


@pytest.fixture(scope="module")
def mobilenet_with_float_op() -> bytes:
    pytest.importorskip("tensorflow")
    return _int8_uint8_io(_mobilenet_style(sin_in_the_middle=True), allow_float_fallback=True)


@pytest.mark.slow
def test_full_int8_mobilenet_style_model_is_fully_mappable(mobilenet_int8):
    report = check_edgetpu(mobilenet_int8)
    names = [v.name for v in report.verdicts]
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"} <= set(names)
    assert report.fully_mappable, report.as_dict()
    assert report.ops_mapped == report.ops_total == len(names)
    assert report.first_unmapped is None
    assert report.split == f"the Edge TPU runs all {report.ops_total} ops"
    assert all(r["ok"] for r in report.requirements.values()), report.requirements
    d = report.as_dict()
    assert d["fully_mappable"] is True and len(d["ops"]) == report.ops_total
    assert check_npu(mobilenet_int8)["ready"]


@pytest.mark.slow
def test_split_is_predicted_at_the_float_op(mobilenet_with_float_op):
    report = check_edgetpu(mobilenet_with_float_op)
    names = [v.name for v in report.verdicts]
    assert "SIN" in names
    # the converter wraps the float op in DEQUANTIZE ... QUANTIZE: the first op off the table
    expected = names.index("DEQUANTIZE")
    assert expected < names.index("SIN") and expected > 0
    assert not report.fully_mappable
    index, name, reason = report.first_unmapped
    assert (index, name) == (expected, "DEQUANTIZE") and "not in Coral's supported-operations table" in reason
    assert report.ops_mapped == expected  # everything before the split, nothing after
    assert all(v.mapped for v in report.verdicts[:expected])
    assert not any(v.mapped for v in report.verdicts[expected:])
    prefix = f"the Edge TPU runs ops 0..{expected - 1}; from op {expected} (DEQUANTIZE: "
    assert report.split.startswith(prefix)
    assert report.split.endswith("on, the graph runs on the CPU")
    assert not report.requirements["8bit_quantized"]["ok"]
    assert set(report.requirements["ops_in_table"]["detail"]) == {"DEQUANTIZE", "SIN"}
    npu = check_npu(mobilenet_with_float_op)
    assert not npu["ready"] and "SIN" in npu["checks"]["full_integer"]["float_ops"]


@pytest.mark.slow
def test_dynamic_batch_and_float_model_are_not_mappable():
    pytest.importorskip("tensorflow")
    import keras
    import tensorflow as tf

    inp = keras.Input((8, 8, 3))  # batch None: a dynamic shape signature
    model = keras.Model(inp, keras.layers.Conv2D(4, 3)(inp))
    float_model = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    report = check_edgetpu(float_model)
    assert report.ops_mapped == 0 and report.first_unmapped[0] == 0
    assert "dynamic size" in report.first_unmapped[2] or "data type" in report.first_unmapped[2]
    assert not report.requirements["static_shapes"]["ok"] and not report.requirements["8bit_quantized"]["ok"]
    assert report.split.startswith("no op maps")


def test_op_table_covers_the_documented_core_ops():
    for name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D", "MAX_POOL_2D", "ADD",
                 "MUL", "CONCATENATION", "RESHAPE", "SOFTMAX", "LOGISTIC", "RELU", "RELU6", "TANH", "MEAN",
                 "PAD", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "L2_NORMALIZATION", "SQUEEZE",
                 "STRIDED_SLICE", "SPLIT", "TRANSPOSE_CONV", "QUANTIZE"):
        assert name in EDGETPU_OPS, name
    assert "DEQUANTIZE" not in EDGETPU_OPS and "HARD_SWISH" not in EDGETPU_OPS


# A log as edgetpu_compiler prints it (format from coral.ai/docs/edgetpu/compiler and published runs).
COMPILER_LOG = """\
Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 412 ms.

Input model: {model}
Input size: 24.31KiB
Output model: {out}/model_edgetpu.tflite
Output size: 61.02KiB
On-chip memory used for caching model parameters: 14.25KiB
On-chip memory remaining for caching model parameters: 7.98MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 11
Operation log: {out}/model_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of \
the model will instead run on the CPU, which is slower. If possible, consider updating your model to \
use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 3
Number of operations that will run on CPU: 8

Operator                       Count      Status

QUANTIZE                       1          Mapped to Edge TPU
QUANTIZE                       2          More than one subgraph is not supported
CONV_2D                        1          Mapped to Edge TPU
CONV_2D                        1          More than one subgraph is not supported
DEPTHWISE_CONV_2D              1          Mapped to Edge TPU
DEQUANTIZE                     1          Operation is working on an unsupported data type
SIN                            1          Operation not supported
MEAN                           1          More than one subgraph is not supported
FULLY_CONNECTED                1          More than one subgraph is not supported
SOFTMAX                        1          More than one subgraph is not supported
"""


def _stand_in_compiler(folder, log: str, code: int = 0) -> None:
    script = folder / "edgetpu_compiler"
    script.write_text(
        "#!/bin/sh\n"
        "# stand-in for Coral's edgetpu_compiler: prints a log in the documented format\n"
        'while getopts "so:" opt; do case $opt in o) OUT=$OPTARG;; s) ;; esac; done\n'
        "shift $((OPTIND-1))\n"
        f"cat <<'LOG' | sed \"s#{{model}}#$1#; s#{{out}}#$OUT#g\"\n{log}LOG\n"
        f"exit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_run_compiler_parses_the_documented_log(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stand_in_compiler(bin_dir, COMPILER_LOG)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    model = tmp_path / "model.tflite"
    model.write_bytes(b"")
    result = run_compiler(model, timeout=30, out_dir=tmp_path / "out")
    assert result is not None and result.ok
    assert result.version == "16.0.384591198"
    assert (result.ops_on_edgetpu, result.ops_on_cpu, result.total_ops) == (3, 8, 11)
    assert result.edgetpu_subgraphs == 1
    assert result.output_model == f"{tmp_path / 'out'}/model_edgetpu.tflite"
    assert len(result.table) == 10 and sum(r["count"] for r in result.table) == 11
    sin = next(r for r in result.table if r["op"] == "SIN")
    assert sin == {"op": "SIN", "count": 1, "status": "Operation not supported", "mapped": False}
    assert sum(r["count"] for r in result.table if r["mapped"]) == 3
    assert "documented log format" in result.as_dict()["note"]


def test_run_compiler_failure_and_absence(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stand_in_compiler(bin_dir, "Edge TPU Compiler version 16.0.384591198\nInvalid model: model.tflite\n", 1)
    monkeypatch.setenv("PATH", str(bin_dir))
    result = run_compiler(tmp_path / "model.tflite", timeout=30)
    assert result is not None and not result.ok and result.table == []
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert run_compiler(tmp_path / "model.tflite") is None


def test_parse_fully_mapped_log_without_cpu_lines():
    log = ("Edge TPU Compiler version 16.0.384591198\n\nModel compiled successfully in 100 ms.\n\n"
           "Number of Edge TPU subgraphs: 1\nTotal number of operations: 4\n\n"
           "Operator                       Count      Status\n\n"
           "CONV_2D                        3          Mapped to Edge TPU\n"
           "SOFTMAX                        1          Mapped to Edge TPU\n")
    result = parse_compiler_log(log)
    assert result.ok and (result.ops_on_edgetpu, result.ops_on_cpu, result.total_ops) == (4, 0, 4)


def _sparse_candidate(first: str, stride2_depthwise: str = "") -> bytes:
    """A float model XNNPACK's sparse inference is meant for (see xnnpack_sparse's docstring):
    FIRST: "zero-pad" (ZeroPadding2D(1) + a valid 3x3 stride-2 conv, as XNNPACK wants it),
    "same" (padding="same", which XNNPACK keeps as a flag at stride 2) or "pad-0-1" (the
    asymmetric ZeroPadding2D Keras' applications put before stride-2 convolutions)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), batch_size=1)
    if first == "same":
        x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu6")(inp)
    else:
        pad = 1 if first == "zero-pad" else ((0, 1), (0, 1))
        x = keras.layers.ZeroPadding2D(pad)(inp)
        x = keras.layers.Conv2D(16, 3, strides=2, padding="valid", activation="relu6")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    if stride2_depthwise == "same":
        x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu6")(x)
    elif stride2_depthwise == "zero-pad":
        x = keras.layers.ZeroPadding2D(1)(x)
        x = keras.layers.DepthwiseConv2D(3, strides=2, padding="valid", activation="relu6")(x)
    x = keras.layers.Conv2D(32, 1, activation="relu6", name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(4)(x))
    kernel, bias = model.get_layer("pw").get_weights()
    mask = np.random.default_rng(0).random(kernel.shape) < 0.8  # 80 % zeros
    kernel[mask] = 0.0
    model.get_layer("pw").set_weights([kernel, bias])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    return conv.convert()


@pytest.mark.slow
def test_xnnpack_sparse_conditions():
    pytest.importorskip("tensorflow")
    model = _sparse_candidate("zero-pad")
    assert check_edgetpu(model).verdicts[0].name == "PAD"  # the PAD is in the .tflite
    report = check_xnnpack_sparse(model)
    c = report["conditions"]
    assert c["float_model"]["ok"] and c["starts_with_3x3_s2_conv_3ch"]["ok"], c
    assert c["ends_with_spatial_mean_or_depth_to_space"]["ok"] and c["ops_in_between_supported"]["ok"], c
    assert c["conv1x1_sparsity_at_least_2_3"]["ok"] and report["conv1x1_sparsity"] >= 0.75, c
    assert c["sparse_weights_stored"]["ok"] and report["applies"], c  # DENSIFY traced to the weights


@pytest.mark.slow
def test_xnnpack_sparse_refuses_an_int8_model(mobilenet_int8):
    report = check_xnnpack_sparse(mobilenet_int8)
    assert not report["applies"] and not report["conditions"]["float_model"]["ok"]
    assert report["summary"].startswith("does not apply: float_model")
    assert not report["conditions"]["sparse_weights_stored"]["ok"]


@pytest.mark.slow
def test_xnnpack_sparse_fuses_a_zero_pad_into_the_first_conv_as_xnnpack_does():
    pytest.importorskip("tensorflow")
    first = check_xnnpack_sparse(_sparse_candidate("zero-pad"))["conditions"]["starts_with_3x3_s2_conv_3ch"]
    assert first["ok"] and "padding top 1, bottom 1, left 1, right 1" in first["detail"], first
    assert "(a PAD, op 0, fused into it)" in first["detail"], first
    # stride-2 depthwise: padded by a PAD it is kept, with SAME (a flag at stride 2) it is not
    padded = check_xnnpack_sparse(_sparse_candidate("zero-pad", stride2_depthwise="zero-pad"))
    assert padded["applies"], padded["conditions"]
    same = check_xnnpack_sparse(_sparse_candidate("zero-pad", stride2_depthwise="same"))
    assert not same["conditions"]["ops_in_between_supported"]["ok"]
    assert "keeps as a flag" in same["conditions"]["ops_in_between_supported"]["detail"][0]


@pytest.mark.slow
@pytest.mark.parametrize("first", ["same", "pad-0-1"])  # the converter folds pad-0-1 into SAME
def test_xnnpack_sparse_refuses_a_first_conv_without_padding_1_on_each_side(first):
    pytest.importorskip("tensorflow")
    report = check_xnnpack_sparse(_sparse_candidate(first))
    start = report["conditions"]["starts_with_3x3_s2_conv_3ch"]
    assert not report["applies"] and not start["ok"], start
    assert "SAME padding with stride > 1, which XNNPACK keeps as a flag" in start["detail"], start
