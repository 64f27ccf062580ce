"""What a .tflite file holds, read straight from its flatbuffer: ops, tensors, quantisation, sparsity.

Device-safe: numpy, flatbuffers and the TFLite schema module that ai-edge-litert ships
(`ai_edge_litert/schema_py_generated.py`); never TensorFlow. tflite-runtime does not ship
the schema, so on a board with only tflite-runtime this module says what to install.

Weight sparsity counts a quantised weight as zero when its raw stored value equals the
zero point of its channel (that is exactly when the dequantised value is 0.0); a float
weight is zero when it is 0.0. Weights stored in sparse form (tensors with sparsity
parameters, the output of the converter's EXPERIMENTAL_SPARSITY) count every element the
sparse form leaves out as a zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

try:
    from ai_edge_litert import schema_py_generated as _schema
except ImportError:  # pragma: no cover - boards with tflite-runtime only
    _schema = None

FILE_IDENTIFIER = b"TFL3"  # bytes 4..8 of every TFLite flatbuffer
# Ops whose weights are counted by weight_sparsity(), with the input index of the weights.
WEIGHT_OPS = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1}
# Ops that only change the storage of a constant (sparse -> dense, fp16/int8 -> fp32):
# weights behind them are still the layer's weights.
_PASS_THROUGH = ("DENSIFY", "DEQUANTIZE")


def _require_schema() -> Any:
    if _schema is None:
        raise ImportError(
            "reading .tflite files needs the TFLite schema module that ships with LiteRT: "
            "pip install ai-edge-litert (tflite-runtime does not include it)")
    return _schema


def builtin_code(op_code: Any) -> int:
    """The builtin operator of a schema OperatorCode(T).

    builtin_code (int32) was added when the int8 deprecated_builtin_code ran out of room
    (BuiltinOperator 127, PLACEHOLDER_FOR_GREATER_OP_CODES). Old writers (MediaPipe's
    keras2tflite models, for one) fill only the deprecated field and leave builtin_code at
    its default 0, which reads as ADD; new ones fill both. LiteRT's schema utils take the
    larger of the two, and so does this.
    """
    if hasattr(op_code, "builtinCode"):  # the object API (OperatorCodeT)
        return max(int(op_code.builtinCode or 0), int(op_code.deprecatedBuiltinCode or 0))
    return max(int(op_code.BuiltinCode()), int(op_code.DeprecatedBuiltinCode()))


def _enum_names(cls: type) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    dtype: str  # numpy-style name: "int8", "float32", ...
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]  # -1 where the dimension is dynamic
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()
    quantized_dimension: int = 0
    is_constant: bool = False  # has a non-empty buffer
    size_bytes: int = 0  # the buffer's size for constants, shape x item size otherwise
    is_sparse: bool = False  # stored with sparsity parameters

    @property
    def is_quantized(self) -> bool:
        return bool(self.scales)

    @property
    def is_dynamic(self) -> bool:
        return any(d < 0 for d in self.shape_signature)

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "dtype": self.dtype, "shape": list(self.shape),
                "shape_signature": list(self.shape_signature), "scales": list(self.scales),
                "zero_points": list(self.zero_points), "quantized_dimension": self.quantized_dimension,
                "is_constant": self.is_constant, "size_bytes": self.size_bytes, "is_sparse": self.is_sparse}


@dataclass(frozen=True)
class OpInfo:
    index: int  # position in Graph.ops (execution order, subgraph 0 first)
    subgraph: int
    name: str  # builtin op name ("CONV_2D") or the custom code of a CUSTOM op
    version: int
    inputs: tuple[int, ...]  # tensor indices in its subgraph; -1 for an omitted optional input
    outputs: tuple[int, ...]
    options: Any = field(default=None, compare=False, repr=False)  # the schema's builtin options object
    custom: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "subgraph": self.subgraph, "name": self.name, "version": self.version,
                "inputs": list(self.inputs), "outputs": list(self.outputs), "custom": self.custom}


@dataclass
class Graph:
    subgraphs: int
    ops: list[OpInfo]
    tensors: list[list[TensorInfo]]  # per subgraph
    model_inputs: list[TensorInfo]
    model_outputs: list[TensorInfo]
    size_bytes: int
    description: str = ""
    min_runtime_version: str | None = None
    # tensor index -> the signature's name for a model input or output (what the runtime and
    # the agent call it; the same signature, serving_default else the first, and only when
    # it names every input and output, as edgefleet.runtime decides)
    io_names: dict[int, str] = field(default_factory=dict)
    _data: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)

    def tensor(self, subgraph: int, index: int) -> TensorInfo:
        return self.tensors[subgraph][index]

    def tensor_data(self, subgraph: int, index: int) -> np.ndarray | None:
        """A constant tensor's stored values (flat; for sparse tensors only the stored values)."""
        return self._data.get((subgraph, index))

    def producer(self, subgraph: int, tensor_index: int) -> OpInfo | None:
        for op in self.ops:
            if op.subgraph == subgraph and tensor_index in op.outputs:
                return op
        return None

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.name] = counts.get(op.name, 0) + 1
        return counts

    def weight_tensor(self, op: OpInfo) -> TensorInfo | None:
        """The constant holding an op's weights, looking through DENSIFY/DEQUANTIZE."""
        pos = WEIGHT_OPS.get(op.name)
        if pos is None or len(op.inputs) <= pos or op.inputs[pos] < 0:
            return None
        index = op.inputs[pos]
        for _ in range(4):
            t = self.tensor(op.subgraph, index)
            if t.is_constant:
                return t
            prod = self.producer(op.subgraph, index)
            if prod is None or prod.name not in _PASS_THROUGH or not prod.inputs:
                return None
            index = prod.inputs[0]
        return None

    def zero_count(self, subgraph: int, t: TensorInfo) -> tuple[int, int]:
        """(zeros, elements) of a constant weight tensor."""
        values = self.tensor_data(subgraph, t.index)
        total = int(np.prod(t.shape)) if t.shape else 1
        if values is None:
            return 0, total
        if t.is_quantized and values.dtype.kind in "iu":
            zero = _zero_points_for(t, values)
            zeros = int(np.count_nonzero(values == zero))
        else:
            zeros = int(np.count_nonzero(values == 0))
        if t.is_sparse:  # elements not stored are zeros
            zeros += max(total - values.size, 0)
        return zeros, total

    def _weights(self) -> list[tuple[int, TensorInfo]]:
        seen: dict[tuple[int, int], TensorInfo] = {}
        for op in self.ops:
            w = self.weight_tensor(op)
            if w is not None:
                seen.setdefault((op.subgraph, w.index), w)
        return [(s, w) for (s, _), w in seen.items()]

    def weight_sparsity(self) -> float:
        """Share of zeros across the constant weights of CONV_2D, DEPTHWISE_CONV_2D and
        FULLY_CONNECTED (a quantised weight is zero when its raw value equals its zero point)."""
        zeros = total = 0
        for s, w in self._weights():
            z, n = self.zero_count(s, w)
            zeros, total = zeros + z, total + n
        return zeros / total if total else 0.0

    def layer_sparsity(self) -> dict[str, float]:
        """Share of zeros per weight tensor, keyed by the tensor's name."""
        out: dict[str, float] = {}
        for s, w in self._weights():
            z, n = self.zero_count(s, w)
            key = w.name if w.name not in out else f"{w.name}#{w.index}"
            out[key] = z / n if n else 0.0
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "subgraphs": self.subgraphs, "size_bytes": self.size_bytes, "description": self.description,
            "min_runtime_version": self.min_runtime_version, "op_counts": self.op_counts(),
            "ops": [op.as_dict() for op in self.ops],
            "inputs": [t.as_dict() for t in self.model_inputs],
            "outputs": [t.as_dict() for t in self.model_outputs],
            "tensors": [[t.as_dict() for t in ts] for ts in self.tensors],
            "weight_sparsity": self.weight_sparsity(), "layer_sparsity": self.layer_sparsity(),
        }


def _zero_points_for(t: TensorInfo, values: np.ndarray) -> np.ndarray | int:
    """Zero points broadcast along the quantised dimension of a (dense) weight tensor."""
    if len(t.zero_points) <= 1 or t.is_sparse or values.size != int(np.prod(t.shape)):
        return t.zero_points[0] if t.zero_points else 0
    shaped = [1] * len(t.shape)
    shaped[t.quantized_dimension] = len(t.zero_points)
    zp = np.asarray(t.zero_points).reshape(shaped)
    return np.broadcast_to(zp, t.shape).reshape(-1)


def _buffer_bytes(data: bytes, buf: Any) -> bytes:
    if buf is None:
        return b""
    if buf.data is not None and len(buf.data):
        return np.asarray(buf.data, dtype=np.uint8).tobytes()
    if buf.offset > 1 and buf.size:  # large models keep buffers after the flatbuffer
        return data[buf.offset:buf.offset + buf.size]
    return b""


def read_graph(data: bytes) -> Graph:
    """Parse a .tflite flatbuffer; ValueError for anything that is not one."""
    schema = _require_schema()
    data = bytes(data)
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise ValueError("not a TFLite model: the flatbuffer file identifier 'TFL3' is missing "
                         f"(bytes 4..8 are {data[4:8]!r})")
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as exc:  # a damaged flatbuffer fails anywhere inside the generated code
        raise ValueError(f"damaged TFLite model: {type(exc).__name__}: {exc}") from None
    if model.version != 3 or not model.subgraphs:  # every TFLite writer uses schema version 3
        raise ValueError(f"damaged or unsupported TFLite model: schema version {model.version}, "
                         f"{len(model.subgraphs or [])} subgraphs")

    op_names = _enum_names(schema.BuiltinOperator)
    type_names = _enum_names(schema.TensorType)
    buffers = model.buffers or []
    codes = []
    for c in model.operatorCodes or []:
        code = builtin_code(c)
        name = op_names.get(code, f"BUILTIN_{code}")
        custom = name == "CUSTOM"
        codes.append((_text(c.customCode) if custom else name, int(c.version or 1), custom))

    tensors: list[list[TensorInfo]] = []
    values: dict[tuple[int, int], np.ndarray] = {}
    ops: list[OpInfo] = []
    for s, sg in enumerate(model.subgraphs or []):
        infos = []
        for i, t in enumerate(sg.tensors or []):
            dtype = type_names.get(t.type, f"type{t.type}").lower()
            raw = _buffer_bytes(data, buffers[t.buffer] if 0 < t.buffer < len(buffers) else None)
            shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
            sig = tuple(int(d) for d in t.shapeSignature) if t.shapeSignature is not None else shape
            q = t.quantization
            scales = tuple(float(x) for x in (q.scale if q is not None and q.scale is not None else ()))
            zps = tuple(int(x) for x in (q.zeroPoint if q is not None and q.zeroPoint is not None else ()))
            try:
                np_dtype = np.dtype(dtype)
            except TypeError:
                np_dtype = None
            if raw:
                size = len(raw)
                if np_dtype is not None and len(raw) % np_dtype.itemsize == 0:
                    values[(s, i)] = np.frombuffer(raw, dtype=np_dtype)
            else:
                size = int(np.prod(shape)) * np_dtype.itemsize if np_dtype is not None and shape else 0
            infos.append(TensorInfo(
                index=i, name=_text(t.name), dtype=dtype, shape=shape, shape_signature=sig,
                scales=scales, zero_points=zps,
                quantized_dimension=int(q.quantizedDimension) if q is not None else 0,
                is_constant=bool(raw), size_bytes=size, is_sparse=t.sparsity is not None))
        tensors.append(infos)
        for op in sg.operators or []:
            name, version, custom = codes[op.opcodeIndex]
            ops.append(OpInfo(
                index=len(ops), subgraph=s, name=name, version=version,
                inputs=tuple(int(x) for x in (op.inputs if op.inputs is not None else ())),
                outputs=tuple(int(x) for x in (op.outputs if op.outputs is not None else ())),
                options=op.builtinOptions, custom=custom))

    min_runtime = None
    for m in model.metadata or []:
        if _text(m.name) == "min_runtime_version" and 0 <= m.buffer < len(buffers):
            min_runtime = _buffer_bytes(data, buffers[m.buffer]).split(b"\0")[0].decode(errors="replace")
    first = (model.subgraphs or [None])[0]
    ins = [tensors[0][i] for i in (first.inputs if first is not None and first.inputs is not None else ())]
    outs = [tensors[0][i] for i in (first.outputs if first is not None and first.outputs is not None else ())]
    return Graph(subgraphs=len(tensors), ops=ops, tensors=tensors, model_inputs=ins, model_outputs=outs,
                 size_bytes=len(data), description=_text(model.description),
                 min_runtime_version=min_runtime or None, _data=values,
                 io_names=_signature_names(model, ins, outs))


def _signature_names(model: Any, ins: list[TensorInfo], outs: list[TensorInfo]) -> dict[int, str]:
    signatures = [s for s in (model.signatureDefs or []) if s.subgraphIndex == 0]
    if not signatures:
        return {}
    chosen = next((s for s in signatures if _text(s.signatureKey) == "serving_default"), signatures[0])
    names = {int(m.tensorIndex): _text(m.name) for m in (chosen.inputs or []) + (chosen.outputs or [])}
    if set(names) != {t.index for t in ins} | {t.index for t in outs}:
        return {}
    return names
