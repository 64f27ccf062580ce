"""Edge TPU readiness predicted without the compiler, from Coral's documented requirements.

Pure Python over `edgefleet.tflite_graph` (no TensorFlow import), so `edgefleet inspect` can
run it on a board too. The compiler's own verdict, when `edgetpu_compiler` is installed, comes
from :mod:`converter.targets.edgetpu_compiler` and is attached to the report.

Source of the rules: Coral, "TensorFlow models on the Edge TPU",
https://coral.ai/docs/edgetpu/models-intro/ , sections "Model requirements" and
"Supported operations". The op names, the limitation texts and the general requirements
below follow that page; they were cross-checked against Axis's copy of the same table for
its Edge-TPU-based ARTPEC-7 chip (developer.axis.com/computer-vision/on-device/system-on-chip/
artpec-7/supported-ops/ and .../optimization-tips/). The minimum Edge TPU runtime per op
(Coral's "runtime version" column) is NOT checked against Coral's table: see the comment at
EDGETPU_OPS.

How the compiler splits a graph (the same pages): "The Edge-TPU compiler cannot partition
the model more than once, so if the model has an operator that can't be run on the [Edge
TPU] and instead must run on the CPU, the graph will be split into two partitions where the
unsupported operator and every operator after it runs on the CPU." (Axis, optimization tips;
Coral's "Compiling" section says the same: "as soon as an unsupported operation occurs, that
operation and everything after it executes on the CPU, even if supported operations occur
later.") The one exception seen in published compiler logs (e.g. google-coral/edgetpu#490,
#342, #356): a QUANTIZE at the very start that converts a float model input, and a DEQUANTIZE
at the very end that produces a float model output, run on the CPU without splitting the
graph; this check treats them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgefleet.converter.targets.edgetpu_compiler import CompilerResult
from edgefleet.tflite_graph import Graph, OpInfo, TensorInfo, read_graph

DEFAULT_RUNTIME_VERSION = 14  # the newest Edge TPU runtime (libedgetpu) release
EIGHT_BIT = ("int8", "uint8")


@dataclass(frozen=True)
class OpSupport:
    coral_name: str  # as Coral's table spells it
    min_runtime: int  # 0 for "All"
    limitations: str = ""


# TFLite builtin name -> Coral's "Supported operations" table row (see the module docstring).
# min_runtime: looked for on 2026-12-02 and NOT found. Coral's table ("TensorFlow models on the
# Edge TPU", https://coral.ai/docs/edgetpu/models-intro/#supported-operations) has a "Runtime
# version" column, but the copies of that page reachable from this project's machines hold its
# opening sections only, and no other copy of the table with that column turned up (Axis's
# ARTPEC-7 copy, which the names and limitations below agree with, has no such column). So the
# numbers stay as first written, from memory, and unverified; the one with outside support is
# TRANSPOSE = 14: a Coral maintainer wrote that Transpose came with Edge TPU compiler 16
# (google-coral/edgetpu#193, 2021-08-03), whose models need runtime 14 (Coral's "Compiler and
# runtime versions" table, as quoted in jsk-ros-pkg/coral_usb_ros#78). With the default runtime
# 14 no entry below limits a prediction; they matter only for an older runtime_version.
EDGETPU_OPS: dict[str, OpSupport] = {
    "ADD": OpSupport("Add", 0),
    "AVERAGE_POOL_2D": OpSupport("AveragePool2d", 0, "No fused activation function."),
    "CONCATENATION": OpSupport(
        "Concatenation", 0, "No fused activation function. If any input is a compile-time constant "
        "tensor, there must be only 2 inputs, and this constant tensor must be all zeroes."),
    "CONV_2D": OpSupport("Conv2d", 0, "Must use the same dilation in x and y dimensions."),
    "DEPTHWISE_CONV_2D": OpSupport("DepthwiseConv2d", 0, "Must use the same dilation in x and y dimensions."),
    "EXPAND_DIMS": OpSupport("ExpandDims", 13),
    "FULLY_CONNECTED": OpSupport(
        "FullyConnected", 0, "Only the default format is supported for fully-connected weights. "
        "Output tensor is one-dimensional."),
    "L2_NORMALIZATION": OpSupport("L2Normalization", 0),
    "LOGISTIC": OpSupport("Logistic", 0),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": OpSupport("LSTM", 14, "Unidirectional LSTM only."),
    "LSTM": OpSupport("LSTM", 14, "Unidirectional LSTM only."),
    "MAXIMUM": OpSupport("Maximum", 0),
    "MAX_POOL_2D": OpSupport("MaxPool2d", 0, "No fused activation function."),
    "MEAN": OpSupport("Mean", 0, "No reduction in batch dimension. If a z-reduction, the z-dimension "
                      "must be multiple of 4."),
    "MINIMUM": OpSupport("Minimum", 0),
    "MUL": OpSupport("Mul", 0),
    "PACK": OpSupport("Pack", 13, "No packing in batch dimension."),
    "PAD": OpSupport("Pad", 0, "No padding in batch dimension."),
    "PRELU": OpSupport("PReLU", 13, "Alpha must be 1-dimensional (only the innermost dimension can be "
                       ">1 size)."),
    "QUANTIZE": OpSupport("Quantize", 13),
    "REDUCE_MAX": OpSupport("ReduceMax", 14, "Cannot operate on the batch dimension."),
    "REDUCE_MIN": OpSupport("ReduceMin", 14, "Cannot operate on the batch dimension."),
    "RELU": OpSupport("ReLU", 0),
    "RELU6": OpSupport("ReLU6", 0),
    "RELU_N1_TO_1": OpSupport("ReLUN1To1", 0),
    "RESHAPE": OpSupport("Reshape", 0, "Certain reshapes might not be mapped for large tensor sizes."),
    "RESIZE_BILINEAR": OpSupport(
        "ResizeBilinear", 0, "Input/output is a 3-dimensional tensor. Depending on input/output size, "
        "this operation may not be mapped to the Edge TPU to avoid loss in precision."),
    "RESIZE_NEAREST_NEIGHBOR": OpSupport(
        "ResizeNearestNeighbor", 0, "Input/output is a 3-dimensional tensor. Depending on input/output "
        "size, this operation may not be mapped to the Edge TPU to avoid loss in precision."),
    "RSQRT": OpSupport("Rsqrt", 14),
    "SLICE": OpSupport("Slice", 0),
    "SOFTMAX": OpSupport("Softmax", 0, "Supports only 1-D input tensor with a max of 16,000 elements."),
    "SPACE_TO_DEPTH": OpSupport("SpaceToDepth", 0),
    "SPLIT": OpSupport("Split", 0, "No splitting in batch dimension."),
    "SQUARED_DIFFERENCE": OpSupport("SquaredDifference", 14),
    "SQUEEZE": OpSupport("Squeeze", 0),
    "STRIDED_SLICE": OpSupport("StridedSlice", 0),
    "SUB": OpSupport("Sub", 0),
    "SUM": OpSupport("Sum", 13, "Cannot operate on the batch dimension."),
    "TANH": OpSupport("Tanh", 0),
    "TRANSPOSE": OpSupport("Transpose", 14),
    "TRANSPOSE_CONV": OpSupport("TransposeConv", 13),
}
# Weight and bias inputs that must be compile-time constants ("model parameters").
_PARAM_INPUTS = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2),
                 "TRANSPOSE_CONV": (1, 3), "PRELU": (1,)}
_NO_FUSED_ACTIVATION = ("AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION")
# Ops whose axis/shape operand is a constant int32 tensor but which must not be 8-bit.
_INDEX_INPUTS = {"MEAN": (1,), "SUM": (1,), "REDUCE_MAX": (1,), "REDUCE_MIN": (1,), "PAD": (1,),
                 "RESHAPE": (1,), "TRANSPOSE": (1,), "SLICE": (1, 2), "STRIDED_SLICE": (1, 2, 3),
                 "SPLIT": (0,), "EXPAND_DIMS": (1,), "RESIZE_BILINEAR": (1,),
                 "RESIZE_NEAREST_NEIGHBOR": (1,), "TRANSPOSE_CONV": (0,)}


@dataclass(frozen=True)
class OpVerdict:
    index: int
    name: str
    mapped: bool
    reason: str  # "Mapped to Edge TPU" or why not
    note: str = ""  # a documented caveat that the compiler may still apply

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "mapped": self.mapped, "reason": self.reason,
                "note": self.note}


@dataclass
class EdgeTpuReport:
    ops_total: int
    ops_mapped: int
    first_unmapped: tuple[int, str, str] | None  # (op index, op name, reason)
    split: str
    verdicts: list[OpVerdict]
    requirements: dict[str, dict[str, Any]] = field(default_factory=dict)
    runtime_version: int = DEFAULT_RUNTIME_VERSION
    compiler: CompilerResult | None = None

    @property
    def fully_mappable(self) -> bool:
        return self.ops_total > 0 and self.ops_mapped == self.ops_total

    def as_dict(self) -> dict[str, Any]:
        first = None
        if self.first_unmapped is not None:
            i, n, r = self.first_unmapped
            first = {"index": i, "name": n, "reason": r}
        return {
            "ops_total": self.ops_total, "ops_mapped": self.ops_mapped, "fully_mappable": self.fully_mappable,
            "first_unmapped": first, "split": self.split, "runtime_version": self.runtime_version,
            "requirements": self.requirements, "ops": [v.as_dict() for v in self.verdicts],
            "source": "prediction from Coral's documented op table (coral.ai/docs/edgetpu/models-intro)",
            "compiler": self.compiler.as_dict() if self.compiler is not None else None,
        }


def _effective_dims_ok(shape: tuple[int, ...]) -> bool:
    """1-, 2- or 3-D, or more dims with only the 3 innermost larger than 1."""
    return len(shape) <= 3 or all(d == 1 for d in shape[:-3])


def _leading_ones(shape: tuple[int, ...]) -> bool:
    return all(d == 1 for d in shape[:-1])


def _axes(graph: Graph, op: OpInfo, pos: int, rank: int) -> list[int] | None:
    if len(op.inputs) <= pos or op.inputs[pos] < 0:
        return None
    values = graph.tensor_data(op.subgraph, op.inputs[pos])
    if values is None:
        return None
    return sorted({int(a) % rank for a in values.reshape(-1)}) if rank else []


def _fused_activation(op: OpInfo) -> int:
    return int(getattr(op.options, "fusedActivationFunction", 0) or 0)


def _op_specific(graph: Graph, op: OpInfo, t: dict[int, TensorInfo]) -> str | None:
    """Coral's per-op limitations that can be read off the flatbuffer; None when they hold."""
    name, opts = op.name, op.options
    first_in = t.get(op.inputs[0]) if op.inputs and op.inputs[0] >= 0 else None
    out = t.get(op.outputs[0]) if op.outputs else None
    if name in _NO_FUSED_ACTIVATION and _fused_activation(op):
        return "fused activation function is not supported on this op"
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D") and opts is not None \
            and getattr(opts, "dilationWFactor", 1) != getattr(opts, "dilationHFactor", 1):
        return "different dilation in x and y"
    if name == "FULLY_CONNECTED":
        if int(getattr(opts, "weightsFormat", 0) or 0) != 0:
            return "only the default format is supported for fully-connected weights"
        if out is not None and not _leading_ones(out.shape):
            return f"output tensor {list(out.shape)} is not one-dimensional"
    if name == "SOFTMAX" and first_in is not None and (
            not _leading_ones(first_in.shape) or (first_in.shape and first_in.shape[-1] > 16000)):
        return f"softmax input {list(first_in.shape)} is not 1-D with at most 16,000 elements"
    if name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN") and first_in is not None:
        axes = _axes(graph, op, 1, len(first_in.shape))
        if axes is None:
            return "reduction axes are not a compile-time constant"
        if len(first_in.shape) > 1 and 0 in axes and first_in.shape[0] > 1:
            return "reduction in the batch dimension"
        if name == "MEAN" and len(first_in.shape) >= 1 and len(first_in.shape) - 1 in axes \
                and first_in.shape[-1] % 4:
            return f"z-reduction over {first_in.shape[-1]} channels, not a multiple of 4"
    if name == "PAD" and first_in is not None and len(op.inputs) > 1:
        pads = graph.tensor_data(op.subgraph, op.inputs[1])
        if pads is None:
            return "padding is not a compile-time constant"
        if len(first_in.shape) == 4 and pads.size >= 2 and (pads.reshape(-1)[:2] != 0).any():
            return "padding in the batch dimension"
    if name == "CONCATENATION":
        consts = [i for i in op.inputs if i >= 0 and t[i].is_constant]
        if consts:
            data = graph.tensor_data(op.subgraph, consts[0])
            zp = t[consts[0]].zero_points[0] if t[consts[0]].zero_points else 0
            if len(op.inputs) != 2 or len(consts) != 1 or data is None or (data != zp).any():
                return "a constant input is allowed only as one all-zero input of a 2-input concatenation"
    if name == "PRELU" and len(op.inputs) > 1 and op.inputs[1] in t \
            and not _leading_ones(t[op.inputs[1]].shape):
        return "alpha is not 1-dimensional"
    return None


def _check_op(graph: Graph, op: OpInfo, runtime_version: int) -> tuple[bool, str, str]:
    support = EDGETPU_OPS.get(op.name)
    if op.subgraph != 0:
        return False, "More than one subgraph is not supported", ""
    if support is None:
        what = "custom op" if op.custom else "op"
        return False, (f"Operation not supported ({what} {op.name} is not in Coral's "
                       "supported-operations table)"), ""
    if support.min_runtime > runtime_version:
        return False, (f"Operation version not supported ({support.coral_name} needs Edge TPU runtime "
                       f">= {support.min_runtime}, target is {runtime_version})"), ""
    ts = {i: graph.tensor(op.subgraph, i) for i in (*op.inputs, *op.outputs) if i >= 0}
    index_inputs = {op.inputs[p] for p in _INDEX_INPUTS.get(op.name, ()) if p < len(op.inputs)}
    params = {op.inputs[p] for p in _PARAM_INPUTS.get(op.name, ())
              if p < len(op.inputs) and op.inputs[p] >= 0}
    for i, tensor in ts.items():
        if i in params and not tensor.is_constant:
            return False, f"model parameter {tensor.name!r} is not a compile-time constant", ""
        if tensor.is_dynamic:
            return False, (f"tensor {tensor.name!r} has a dynamic size {list(tensor.shape_signature)}; "
                           "sizes must be constant at compile time (give the model a fixed batch size)"), ""
        if i in index_inputs:
            continue
        is_bias = i in params and tensor.dtype == "int32" and tensor.is_constant
        if tensor.dtype not in EIGHT_BIT and not is_bias:
            return False, (f"Operation is working on an unsupported data type ({tensor.dtype} tensor "
                           f"{tensor.name!r}; the Edge TPU needs 8-bit quantised tensors)"), ""
        if not tensor.is_constant and not _effective_dims_ok(tensor.shape):
            return False, (f"Tensor has unsupported rank ({list(tensor.shape)}; up to 3 innermost "
                           "dimensions may be larger than 1)"), ""
    specific = _op_specific(graph, op, ts)
    if specific:
        return False, f"{support.coral_name}: {specific}", ""
    return True, "Mapped to Edge TPU", support.limitations if op.name in (
        "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR") else ""


def _is_io_conversion(graph: Graph, op: OpInfo) -> bool:
    """QUANTIZE of a float model input / DEQUANTIZE to a float model output: CPU, no split."""
    ins = {t.index for t in graph.model_inputs}
    outs = {t.index for t in graph.model_outputs}
    if op.subgraph != 0 or not op.inputs or not op.outputs:
        return False
    src, dst = graph.tensor(0, op.inputs[0]), graph.tensor(0, op.outputs[0])
    if op.name == "QUANTIZE":
        return op.inputs[0] in ins and src.dtype.startswith("float")
    if op.name == "DEQUANTIZE":
        return op.outputs[0] in outs and dst.dtype.startswith("float")
    return False


def _requirements(graph: Graph) -> dict[str, dict[str, Any]]:
    """Coral's general model requirements, each with pass/fail and what failed."""
    acts = [t for t in graph.tensors[0] if not t.is_constant] if graph.tensors else []
    not8 = sorted({f"{t.name} ({t.dtype})" for t in acts if t.dtype not in EIGHT_BIT})
    dynamic = sorted({t.name for ts in graph.tensors for t in ts if t.is_dynamic})
    rank = sorted({f"{t.name} {list(t.shape)}" for t in acts if not _effective_dims_ok(t.shape)})
    outside = sorted({op.name for op in graph.ops if op.name not in EDGETPU_OPS})
    return {
        "8bit_quantized": {"ok": not not8, "detail": not8[:10]},
        "static_shapes": {"ok": not dynamic, "detail": dynamic[:10]},
        "rank_at_most_3_inner_dims": {"ok": not rank, "detail": rank[:10]},
        "single_subgraph": {"ok": graph.subgraphs <= 1, "detail": graph.subgraphs},
        "ops_in_table": {"ok": not outside, "detail": outside},
    }


def check_edgetpu(data: bytes | Graph, runtime_version: int = DEFAULT_RUNTIME_VERSION) -> EdgeTpuReport:
    """Predict which ops the Edge TPU compiler maps, from the flatbuffer alone."""
    graph = data if isinstance(data, Graph) else read_graph(data)
    verdicts: list[OpVerdict] = []
    first: tuple[int, str, str] | None = None
    for op in graph.ops:
        if first is not None:
            verdicts.append(OpVerdict(op.index, op.name, False,
                                      f"after the split at op {first[0]} ({first[1]}): runs on the CPU"))
            continue
        if _is_io_conversion(graph, op):
            verdicts.append(OpVerdict(op.index, op.name, False,
                                      "float model input/output conversion: runs on the CPU, no split"))
            continue
        mapped, reason, note = _check_op(graph, op, runtime_version)
        verdicts.append(OpVerdict(op.index, op.name, mapped, reason, note))
        if not mapped:
            first = (op.index, op.name, reason)
    mapped = sum(v.mapped for v in verdicts)
    if not graph.ops:
        split = "the model has no ops"
    elif first is None and mapped == len(graph.ops):
        split = f"the Edge TPU runs all {len(graph.ops)} ops"
    elif first is None:
        split = (f"the Edge TPU runs {mapped} of {len(graph.ops)} ops; the float input/output "
                 "conversions run on the CPU")
    elif first[0] == 0:
        split = f"no op maps: from op 0 ({first[1]}: {first[2]}) on, the graph runs on the CPU"
    else:
        split = (f"the Edge TPU runs ops 0..{first[0] - 1}; from op {first[0]} ({first[1]}: {first[2]}) on, "
                 "the graph runs on the CPU")
    return EdgeTpuReport(ops_total=len(graph.ops), ops_mapped=mapped, first_unmapped=first, split=split,
                         verdicts=verdicts, requirements=_requirements(graph),
                         runtime_version=runtime_version)
