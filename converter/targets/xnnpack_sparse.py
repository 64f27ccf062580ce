"""Would XNNPACK's sparse inference apply to this .tflite model, and if not, why not.

Pure Python over `edgefleet.tflite_graph`. The conditions are those of the "Sparse Inference"
section of the XNNPACK delegate README (tensorflow/tensorflow,
tensorflow/lite/delegates/xnnpack/README.md), which the TensorFlow guide "Pruning for
on-device inference w/ XNNPACK" (tensorflow.org/model_optimization/guide/pruning/
pruning_for_on_device_inference) points to:

- a floating-point model (XNNPACK's sparse kernels are float; fp16 weights are dequantised),
- weights stored in sparse form (DENSIFY ops, i.e. converted with EXPERIMENTAL_SPARSITY),
- the sparse subgraph starts with a 3x3 stride-2 CONV_2D with padding 1, no dilation and
  3 input channels, and ends with a MEAN over the spatial axes or a DEPTH_TO_SPACE,
- in between only: 1x1 CONV_2D without padding; 3x3 or 5x5 DEPTHWISE_CONV_2D with stride 1
  or 2 and no dilation; RESIZE_BILINEAR; MEAN over spatial axes; ADD/MUL on 4D tensors;
  the unary elementwise ops listed below,
- at least 2/3 of the 1x1 CONV_2D filter weights are zeros.

XNNPACK also turned sparse rewriting off on x86 with AVX (its sparse micro-kernels target
SSE only; XNNPACK commit cfbed0a, Dec 2020), so the speed-up is an ARM matter.

"Padding 1 on each side" is what XNNPACK's node sees, after two rewrites of its own, read
in google/XNNPACK src/subgraph.c (xnn_subgraph_fusion, xnn_check_nchw_compatibility) and
src/subgraph/convolution-2d.c, depthwise-convolution-2d.c (commit 75db3c0, 2026-08), and in
tensorflow/lite/delegates/xnnpack/xnnpack_delegate.cc (VisitPadNode, CalculatePadding):

- TFLite's SAME padding reaches XNNPACK as a flag; at definition it becomes explicit padding
  ((k - 1) * dilation split top/left first) only for stride 1. With a larger stride the
  flag stays, the explicit padding is 0, and the node fails the padding check: a 3x3
  stride-2 convolution must get its padding from a PAD op (Keras: ZeroPadding2D(1)).
- A PAD (the delegate defines it as a constant pad of 0.0) is fused into the CONV_2D or
  DEPTHWISE_CONV_2D that alone consumes its output when the padding is 4-D, spatial only
  (batch and channel pads 0), the value is zero, and the convolution has no SAME flag left;
  its amounts are added to the convolution's padding and the PAD is gone from the graph.
"""

from __future__ import annotations

from typing import Any

from edgefleet.tflite_graph import Graph, OpInfo, read_graph

MIN_SPARSITY = 2 / 3
_UNARY = {"ABS", "CEIL", "ELU", "FLOOR", "HARD_SWISH", "LEAKY_RELU", "LOGISTIC", "NEG", "RELU", "RELU6",
          "RELU_N1_TO_1", "ROUND", "SIGMOID", "SQUARE"}
_WEIGHT_PREP = {"DENSIFY", "DEQUANTIZE"}  # turn stored constants into dense float weights
_SAME, _VALID = 0, 1  # schema Padding enum


def _opt(op: OpInfo, name: str, default: int = 0) -> int:
    return int(getattr(op.options, name, default) or default)


def _kernel(graph: Graph, op: OpInfo) -> tuple[int, int]:
    shape = graph.tensor(op.subgraph, op.inputs[1]).shape
    return (shape[1], shape[2]) if len(shape) == 4 else (0, 0)


def _spatial_mean(graph: Graph, op: OpInfo) -> bool:
    if op.name != "MEAN" or len(op.inputs) < 2:
        return False
    axes = graph.tensor_data(op.subgraph, op.inputs[1])
    rank = len(graph.tensor(op.subgraph, op.inputs[0]).shape)
    return axes is not None and rank == 4 and sorted(int(a) % 4 for a in axes.reshape(-1)) == [1, 2]


Padding = tuple[int, int, int, int]  # top, bottom, left, right


def _strides(op: OpInfo) -> tuple[int, int]:
    return _opt(op, "strideH", 1), _opt(op, "strideW", 1)


def _keeps_same_flag(op: OpInfo) -> bool:
    """XNNPACK turns TFLite's SAME padding into explicit padding for stride 1 only."""
    return _opt(op, "padding") == _SAME and _strides(op) != (1, 1)


def _fused_pads(graph: Graph, ops: list[OpInfo]) -> dict[int, tuple[int, Padding]]:
    """Convolution op index -> (PAD op index, its spatial padding) for the PADs XNNPACK fuses."""
    outputs = {t.index for t in graph.model_outputs}
    fused: dict[int, tuple[int, Padding]] = {}
    for pad in ops:
        if pad.name != "PAD" or len(pad.inputs) < 2 or not pad.outputs or pad.outputs[0] in outputs:
            continue
        amounts = graph.tensor_data(0, pad.inputs[1])
        if amounts is None or amounts.size != 8:  # constant paddings of a 4-D tensor
            continue
        (n0, n1), (top, bottom), (left, right), (c0, c1) = amounts.reshape(4, 2).tolist()
        consumers = [op for op in ops if pad.outputs[0] in op.inputs]
        if len(consumers) != 1 or n0 or n1 or c0 or c1:
            continue
        conv = consumers[0]
        if conv.name in ("CONV_2D", "DEPTHWISE_CONV_2D") and conv.inputs[0] == pad.outputs[0] \
                and not _keeps_same_flag(conv):
            fused[conv.index] = (pad.index, (int(top), int(bottom), int(left), int(right)))
    return fused


def _padding(graph: Graph, op: OpInfo, fused: dict[int, tuple[int, Padding]]) -> Padding | None:
    """The explicit padding XNNPACK's node gets; None while it keeps the SAME flag."""
    if _keeps_same_flag(op):
        return None
    base = (0, 0, 0, 0)
    if _opt(op, "padding") == _SAME:
        kh, kw = _kernel(graph, op)
        ph = (kh - 1) * _opt(op, "dilationHFactor", 1)
        pw = (kw - 1) * _opt(op, "dilationWFactor", 1)
        base = (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
    extra = fused.get(op.index, (0, (0, 0, 0, 0)))[1]
    return tuple(a + b for a, b in zip(base, extra, strict=True))  # type: ignore[return-value]


def _padding_text(padding: Padding | None) -> str:
    if padding is None:
        return "SAME padding with stride > 1, which XNNPACK keeps as a flag (no explicit padding)"
    return "padding top {}, bottom {}, left {}, right {}".format(*padding)


def _why_not_inner(graph: Graph, op: OpInfo, fused: dict[int, tuple[int, Padding]]) -> str | None:
    """None when XNNPACK may keep this op inside the sparse subgraph."""
    n = op.name
    dil = _opt(op, "dilationWFactor", 1) == 1 and _opt(op, "dilationHFactor", 1) == 1
    if n == "CONV_2D":
        kh, kw = _kernel(graph, op)
        padding = _padding(graph, op, fused)
        ok = (kh, kw) == (1, 1) and _strides(op) == (1, 1) and dil and padding == (0, 0, 0, 0)
        return None if ok else f"CONV_2D {kh}x{kw} ({_padding_text(padding)}) is not a plain 1x1 conv"
    if n == "DEPTHWISE_CONV_2D":
        kh, kw = _kernel(graph, op)
        strides = _strides(op)
        padding = _padding(graph, op, fused)
        wanted = {(3, 3): (1, 1, 1, 1), (5, 5): (2, 2, 2, 2)}.get((kh, kw))
        ok = wanted is not None and padding == wanted and strides in ((1, 1), (2, 2)) and dil \
            and _opt(op, "depthMultiplier", 1) == 1
        return None if ok else (f"DEPTHWISE_CONV_2D {kh}x{kw} stride {strides} ({_padding_text(padding)}) "
                                "is not 3x3 with padding 1 or 5x5 with padding 2 on each side, stride 1/2")
    if n in ("ADD", "MUL"):
        ranks = [len(graph.tensor(op.subgraph, i).shape) for i in op.inputs if i >= 0]
        consts = [graph.tensor(op.subgraph, i) for i in op.inputs if i >= 0
                  and graph.tensor(op.subgraph, i).is_constant]
        if all(r == 4 for r in ranks) or all(len([d for d in c.shape if d > 1]) <= 1 for c in consts):
            return None
        return f"{n} inputs are not 4D (nor a scalar/1D constant)"
    if n == "RESIZE_BILINEAR" or n in _UNARY or n in _WEIGHT_PREP or _spatial_mean(graph, op):
        return None
    return f"{n} is not an op XNNPACK keeps in a sparse subgraph"


def check_xnnpack_sparse(data: bytes | Graph) -> dict[str, Any]:
    """Each condition with ok/detail, plus `applies` (all hold) and the 1x1 conv sparsity."""
    graph = data if isinstance(data, Graph) else read_graph(data)
    ops = [op for op in graph.ops if op.subgraph == 0]
    fused = _fused_pads(graph, ops)
    gone = {pad for pad, _ in fused.values()}  # merged into their convolutions
    compute = [op for op in ops if op.name not in _WEIGHT_PREP and op.index not in gone]
    conditions: dict[str, dict[str, Any]] = {}

    acts = {graph.tensor(0, i).dtype for op in compute for i in (*op.inputs, *op.outputs)
            if i >= 0 and not graph.tensor(0, i).is_constant}
    conditions["float_model"] = {"ok": bool(acts) and acts <= {"float32", "int32"},
                                 "detail": f"activation types: {sorted(acts)}"}
    densify = [op.index for op in ops if op.name == "DENSIFY"]
    sparse_tensors = [t.name for t in graph.tensors[0] if t.is_sparse] if graph.tensors else []
    conditions["sparse_weights_stored"] = {
        "ok": bool(densify or sparse_tensors),
        "detail": f"{len(densify)} DENSIFY ops" if densify else
        "no DENSIFY ops: convert with converter.optimizations += [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]"}

    first = compute[0] if compute else None
    ok_first = False
    detail = "the model has no ops"
    if first is not None:
        detail = f"first op is {first.name}"
        if first.name == "CONV_2D":
            kh, kw = _kernel(graph, first)
            cin = graph.tensor(0, first.inputs[0]).shape[-1]
            groups_of_one = graph.tensor(0, first.inputs[1]).shape[-1] == cin
            strides = _strides(first)
            dil = (_opt(first, "dilationHFactor", 1), _opt(first, "dilationWFactor", 1))
            padding = _padding(graph, first, fused)
            ok_first = (kh, kw) == (3, 3) and strides == (2, 2) and dil == (1, 1) and cin == 3 \
                and groups_of_one and padding == (1, 1, 1, 1)
            pad = f" (a PAD, op {fused[first.index][0]}, fused into it)" if first.index in fused else ""
            detail = (f"first op CONV_2D {kh}x{kw}, stride {strides}, dilation {dil}, {cin} input channels, "
                      f"{_padding_text(padding)}{pad}")
    conditions["starts_with_3x3_s2_conv_3ch"] = {"ok": ok_first, "detail": detail}

    end = next((i for i, op in enumerate(compute) if _spatial_mean(graph, op) or op.name == "DEPTH_TO_SPACE"),
               None)
    conditions["ends_with_spatial_mean_or_depth_to_space"] = {
        "ok": end is not None,
        "detail": f"op {compute[end].index} ({compute[end].name})" if end is not None
        else "no MEAN over the spatial axes (GlobalAveragePooling2D) and no DEPTH_TO_SPACE"}

    inner = compute[1:end] if end is not None else compute[1:]
    bad = [f"op {op.index}: {why}" for op in inner if (why := _why_not_inner(graph, op, fused))]
    conditions["ops_in_between_supported"] = {"ok": not bad, "detail": bad[:10]}

    zeros = total = 0
    for op in inner:
        if op.name == "CONV_2D" and _kernel(graph, op) == (1, 1):
            w = graph.weight_tensor(op)
            if w is not None:
                z, n = graph.zero_count(op.subgraph, w)
                zeros, total = zeros + z, total + n
    sparsity = zeros / total if total else 0.0
    conditions["conv1x1_sparsity_at_least_2_3"] = {
        "ok": total > 0 and sparsity >= MIN_SPARSITY,
        "detail": f"{sparsity:.3f} of {total} 1x1 conv weights are zero" if total else "no 1x1 CONV_2D"}

    failed = [name for name, c in conditions.items() if not c["ok"]]
    summary = "applies" if not failed else "does not apply: " + ", ".join(failed)
    return {"applies": not failed, "summary": summary, "conv1x1_sparsity": sparsity,
            "conditions": conditions,
            "note": "XNNPACK disables sparse rewriting on x86 with AVX; the speed-up is expected on ARM",
            "source": "tensorflow/lite/delegates/xnnpack/README.md#sparse-inference"}
