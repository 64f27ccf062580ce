"""Flatbuffer surgery that makes a published float .tflite the plain float32 model the
quantisers start from and the variants are compared against. It always works on a copy:
the bytes given are parsed into the schema's object API, edited, and packed anew.

What it touches in the TFLite schema (tensorflow/lite/schema/schema.fbs), and why:

- ``OperatorCode.builtin_code``: filled in from ``deprecated_builtin_code`` where the old
  int8 field alone names the op and ``builtin_code`` holds its default, 0 (ADD). Readers
  must take the larger of the two (LiteRT's schema utils do); ai-edge-quantizer reads
  ``builtin_code`` alone, sees every op of such a model as ADD and quantises nothing.
  ``deprecated_builtin_code`` becomes min(code, 127), 127 being
  PLACEHOLDER_FOR_GREATER_OP_CODES, as the schema asks of writers.
- ``Operator`` DEQUANTIZE of a float16 constant, DENSIFY of a sparse constant: removed.
  The op's output ``Tensor`` gets a new ``Buffer`` with the dense values (float32 after a
  DEQUANTIZE), so every consumer reads a plain constant. Float16 weights are how "float16"
  models are stored, sparse ones how pruned models are: the model they stand for is float32.
- ``SubGraph.tensors``, ``Model.buffers``, ``Model.operator_codes``: entries nothing refers
  to any more (the float16 and sparse originals, the removed ops' codes) are dropped, and
  every index into them renumbered (``Operator.inputs/outputs/intermediates/opcode_index``,
  ``SubGraph.inputs/outputs``, ``SignatureDef`` tensor maps, ``Tensor.buffer``,
  ``Metadata.buffer``, ``Model.metadata_buffer``).
- ``Model.signature_defs``: a ``serving_default`` signature is added when there is none,
  each input and output named after its tensor, because ai-edge-quantizer calibrates
  through a signature runner. The names are the ones the runtime uses without a
  signature, so outputs keep their names from the original to every variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgefleet.tflite_graph import FILE_IDENTIFIER, builtin_code

SERVING = "serving_default"
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated as schema

    return schema


@dataclass(frozen=True)
class FloatEquivalent:
    """A model as a plain float32 flatbuffer, and what had to change to get there."""

    model: bytes
    float16_weights: int = 0  # DEQUANTIZE ops of float16 constants folded
    sparse_weights: int = 0  # DENSIFY ops of sparse constants folded
    op_codes_filled: int = 0  # operator codes read from deprecated_builtin_code
    signature_added: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.float16_weights or self.sparse_weights or self.op_codes_filled
                    or self.signature_added)

    def notes(self) -> list[str]:
        """What was done, in words for the report."""
        done = []
        if self.float16_weights:
            done.append(f"{self.float16_weights} float16 weight tensor(s) expanded to float32")
        if self.sparse_weights:
            done.append(f"{self.sparse_weights} sparse weight tensor(s) stored dense")
        if self.op_codes_filled:
            done.append(f"{self.op_codes_filled} operator code(s) read from deprecated_builtin_code")
        if self.signature_added:
            done.append(f"a {SERVING!r} signature added, named after the input and output tensors")
        return done


def read_model(data: bytes) -> Any:
    """The schema's ModelT of DATA (a copy; buffers stored after the flatbuffer read in)."""
    data = bytes(data)
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise ValueError("not a TFLite model: the flatbuffer file identifier 'TFL3' is missing")
    model = _schema().ModelT.InitFromPackedBuf(bytearray(data), 0)
    for buf in model.buffers or []:
        if buf.offset > 1 and buf.size:  # large models keep buffer data after the flatbuffer
            buf.data = np.frombuffer(data[buf.offset:buf.offset + buf.size], dtype=np.uint8)
            buf.offset = buf.size = 0
    return model


def write_model(model: Any, share_vectors: bool = False) -> bytes:
    """MODEL packed anew. SHARE_VECTORS: every distinct numeric vector (a quantisation's
    scales and zero points, a shape, an op's tensor list) is written once and pointed at by
    every table that holds it, as flatbuffers allows; the schema's object API writes one
    copy per table. Buffers' weight bytes are never shared."""
    builder = _sharing_builder() if share_vectors else _builder()
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def _builder() -> Any:
    import flatbuffers

    return flatbuffers.Builder(1024)


def _sharing_builder() -> Any:
    import flatbuffers

    class SharingBuilder(flatbuffers.Builder):  # type: ignore[misc]
        def __init__(self, size: int) -> None:
            super().__init__(size)
            self._shared: dict[tuple[str, bytes], int] = {}

        def CreateNumpyVector(self, x: Any) -> int:  # flatbuffers' own name
            if x.dtype == np.uint8:  # weights and metadata: each buffer keeps its own bytes
                return super().CreateNumpyVector(x)
            key = (x.dtype.str, x.tobytes())
            if key not in self._shared:
                self._shared[key] = super().CreateNumpyVector(x)
            return self._shared[key]

    return SharingBuilder(1024)


def compact(data: bytes) -> bytes:
    """DATA with its repeated vectors written once (`write_model(share_vectors=True)`): the
    same model, the same answers, fewer bytes. Per-channel quantisation stores an int64 zero
    point (0 for int8 weights) and a float scale per output channel of every layer, which
    in a small model is a third of an int8 file. DATA itself when nothing is saved."""
    packed = write_model(read_model(data), share_vectors=True)
    return packed if len(packed) < len(data) else bytes(data)


def float_equivalent(data: bytes) -> FloatEquivalent:
    """DATA as a float32 model: float16 and sparse constants made dense float32, operator
    codes filled in, a signature added. DATA itself when none of that applies."""
    model = read_model(data)
    filled = fill_op_codes(model)
    float16, sparse = fold_constant_weights(model)
    signature = add_serving_signature(model)
    if not (filled or float16 or sparse or signature):
        return FloatEquivalent(bytes(data))
    drop_unused(model)
    return FloatEquivalent(write_model(model), float16, sparse, filled, signature)


def fill_op_codes(model: Any) -> int:
    """Set builtin_code from deprecated_builtin_code where it holds the placeholder 0."""
    filled = 0
    for c in model.operatorCodes or []:
        code = builtin_code(c)
        if int(c.builtinCode or 0) != code:
            filled += 1
        c.builtinCode = code
        c.deprecatedBuiltinCode = min(code, _PLACEHOLDER_FOR_GREATER_OP_CODES)
    return filled


def _data(model: Any, tensor: Any) -> np.ndarray | None:
    """A constant tensor's raw bytes (uint8), or None for a tensor without data."""
    if not 0 < tensor.buffer < len(model.buffers or []):
        return None
    data = model.buffers[tensor.buffer].data
    if data is None or len(data) == 0:
        return None
    return np.asarray(data, dtype=np.uint8)


def _new_buffer(model: Any, values: np.ndarray) -> int:
    buf = _schema().BufferT()
    little = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))  # the schema's byte order
    buf.data = np.frombuffer(little.tobytes(), dtype=np.uint8)
    model.buffers.append(buf)
    return len(model.buffers) - 1


def fold_constant_weights(model: Any) -> tuple[int, int]:
    """Replace DENSIFY of sparse constants and DEQUANTIZE of float16 constants by their
    results; returns (float16 tensors, sparse tensors) folded."""
    schema = _schema()
    ops = schema.BuiltinOperator
    float16 = sparse = 0
    for sg in model.subgraphs or []:
        keep = []
        outputs = set(sg.outputs if sg.outputs is not None else ())
        for op in sg.operators or []:
            code = builtin_code(model.operatorCodes[op.opcodeIndex])
            folded = None
            if code in (ops.DEQUANTIZE, ops.DENSIFY) and op.inputs is not None and len(op.inputs) == 1 \
                    and op.outputs is not None and len(op.outputs) == 1 and op.outputs[0] not in outputs:
                source, target = sg.tensors[op.inputs[0]], sg.tensors[op.outputs[0]]
                raw = _data(model, source)
                if raw is not None and code == ops.DENSIFY and source.sparsity is not None:
                    dtype = _numpy_type(source.type)
                    folded = densify(raw.view(dtype), _shape(target), source.sparsity)
                    sparse += 1
                elif raw is not None and code == ops.DEQUANTIZE and source.type == schema.TensorType.FLOAT16 \
                        and source.sparsity is None and target.type == schema.TensorType.FLOAT32:
                    folded = raw.view("<f2").astype(np.float32)
                    float16 += 1
                if folded is not None:
                    target.buffer = _new_buffer(model, folded)
                    # the constant is the weight itself now: its name, not the removed op's
                    target.name = source.name or target.name
            if folded is None:
                keep.append(op)
        sg.operators = keep
    return float16, sparse


def _numpy_type(tensor_type: int) -> np.dtype:
    names = {v: k for k, v in vars(_schema().TensorType).items() if not k.startswith("_")}
    return np.dtype(names[tensor_type].lower()).newbyteorder("<")


def _shape(tensor: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in (tensor.shape if tensor.shape is not None else ()))


def densify(values: np.ndarray, shape: tuple[int, ...], sparsity: Any) -> np.ndarray:
    """The dense tensor of SHAPE (flat, row-major) that sparse VALUES encode.

    SPARSITY is the schema's SparsityParametersT, a variant of the TACO format: the
    dimensions (the tensor's, then those inside a block) are walked in traversal order,
    each dense (every index) or compressed (CSR segments and indices); the stored values
    come in that walking order.
    """
    order = [int(d) for d in sparsity.traversalOrder]
    block_map = [int(d) for d in (sparsity.blockMap if sparsity.blockMap is not None else ())]
    levels = sparsity.dimMetadata or []
    rank = len(shape)
    if len(order) != rank + len(block_map) or len(levels) != len(order):
        raise ValueError(f"sparse tensor of shape {shape}: traversal order {order}, block map "
                         f"{block_map} and {len(levels)} dimension(s) do not fit together")
    nodes = np.zeros(1, dtype=np.int64)  # position of each path in the level walked so far
    index = np.zeros((1, 0), dtype=np.int64)  # the index of each path at every level
    for meta in levels:
        if meta.format == _schema().DimensionType.DENSE:
            size = int(meta.denseSize)
            step = np.arange(size, dtype=np.int64)
            nodes = (nodes[:, None] * size + step[None, :]).reshape(-1)
            index = np.column_stack([np.repeat(index, size, axis=0), np.tile(step, len(index))])
        else:
            segments = np.asarray(meta.arraySegments.values, dtype=np.int64)
            indices = np.asarray(meta.arrayIndices.values, dtype=np.int64)
            starts, counts = segments[nodes], segments[nodes + 1] - segments[nodes]
            offsets = np.cumsum(counts) - counts
            nodes = np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(starts - offsets, counts)
            index = np.column_stack([np.repeat(index, counts, axis=0), indices[nodes]])
    if len(index) != values.size:
        raise ValueError(f"sparse tensor of shape {shape}: its index metadata locates {len(index)} "
                         f"values but {values.size} are stored")
    position = np.zeros((len(index), rank), dtype=np.int64)
    block_sizes = {order[level] - rank: int(levels[level].denseSize) for level in range(rank, len(order))}
    for level, dim in enumerate(order):
        if level < rank:
            position[:, dim] = index[:, level]
        else:  # a dimension inside a block: refines the original dimension it maps to
            block = dim - rank
            target = block_map[block]
            position[:, target] = position[:, target] * block_sizes[block] + index[:, level]
    dense = np.zeros(int(np.prod(shape, dtype=np.int64)), dtype=values.dtype)
    dense[np.ravel_multi_index(tuple(position.T), shape)] = values
    return dense


def add_serving_signature(model: Any) -> bool:
    """Give a model without signatures a `serving_default` one over subgraph 0's inputs and
    outputs, each named after its tensor (the name made unique where tensors share one)."""
    if model.signatureDefs or not model.subgraphs:
        return False
    schema = _schema()
    sg = model.subgraphs[0]
    used: set[str] = set()

    def maps(indices: Any) -> list[Any]:
        result = []
        for i in indices if indices is not None else ():
            raw = sg.tensors[i].name
            name = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw or f"tensor_{i}")
            if name in used:
                name = f"{name}_{i}"
            used.add(name)
            entry = schema.TensorMapT()
            entry.name, entry.tensorIndex = name, int(i)
            result.append(entry)
        return result

    signature = schema.SignatureDefT()
    signature.inputs, signature.outputs = maps(sg.inputs), maps(sg.outputs)
    signature.signatureKey, signature.subgraphIndex = SERVING, 0
    model.signatureDefs = [signature]
    return True


def drop_unused(model: Any) -> None:
    """Remove tensors, buffers and operator codes nothing refers to; renumber references."""
    for s, sg in enumerate(model.subgraphs or []):
        used = {int(i) for i in _tensor_refs(model, s, sg) if i >= 0}
        mapping = {old: new for new, old in enumerate(sorted(used))}
        sg.tensors = [t for i, t in enumerate(sg.tensors or []) if i in mapping]
        for op in sg.operators or []:
            for field in ("inputs", "outputs", "intermediates"):
                values = getattr(op, field)
                if values is not None:
                    setattr(op, field, [mapping[int(i)] if i >= 0 else -1 for i in values])
        sg.inputs = [mapping[int(i)] for i in (sg.inputs if sg.inputs is not None else ())]
        sg.outputs = [mapping[int(i)] for i in (sg.outputs if sg.outputs is not None else ())]
        for sig in model.signatureDefs or []:
            if sig.subgraphIndex == s:
                for entry in (*(sig.inputs or ()), *(sig.outputs or ())):
                    entry.tensorIndex = mapping[int(entry.tensorIndex)]

    codes = sorted({int(op.opcodeIndex) for sg in model.subgraphs or [] for op in sg.operators or []})
    code_map = {old: new for new, old in enumerate(codes)}
    model.operatorCodes = [model.operatorCodes[i] for i in codes]
    for sg in model.subgraphs or []:
        for op in sg.operators or []:
            op.opcodeIndex = code_map[int(op.opcodeIndex)]

    buffers = {0} | {int(t.buffer) for sg in model.subgraphs or [] for t in sg.tensors or []}
    buffers |= {int(m.buffer) for m in model.metadata or []}
    buffers |= {int(b) for b in (model.metadataBuffer if model.metadataBuffer is not None else ())}
    kept = sorted(b for b in buffers if 0 <= b < len(model.buffers or []))
    buffer_map = {old: new for new, old in enumerate(kept)}  # buffer 0 stays the empty sentinel
    model.buffers = [model.buffers[i] for i in kept]
    for sg in model.subgraphs or []:
        for t in sg.tensors or []:
            t.buffer = buffer_map.get(int(t.buffer), 0)
    for m in model.metadata or []:
        m.buffer = buffer_map[int(m.buffer)]
    if model.metadataBuffer is not None:
        model.metadataBuffer = [buffer_map[int(b)] for b in model.metadataBuffer]


def _tensor_refs(model: Any, s: int, sg: Any) -> list[int]:
    refs: list[int] = []
    for op in sg.operators or []:
        for field in (op.inputs, op.outputs, op.intermediates):
            refs.extend(int(i) for i in (field if field is not None else ()))
    refs.extend(int(i) for i in (sg.inputs if sg.inputs is not None else ()))
    refs.extend(int(i) for i in (sg.outputs if sg.outputs is not None else ()))
    for sig in model.signatureDefs or []:
        if sig.subgraphIndex == s:
            refs.extend(int(e.tensorIndex) for e in (*(sig.inputs or ()), *(sig.outputs or ())))
    return refs
