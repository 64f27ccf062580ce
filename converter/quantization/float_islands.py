"""Ops left in float inside an "int8" model: a DEQUANTIZE, a float op, a QUANTIZE back.

ai-edge-quantizer (the path of .tflite sources) quantises only the ops its recipes know and
leaves the others in float between such pairs (seen: PRELU), and keeping layers in float
(--keep-float-layers) does the same on purpose. The model is still called int8, so the
report and the summary say which ops are not. Pure Python over edgefleet.tflite_graph.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from edgefleet.tflite_graph import Graph, read_graph

_CASTS = ("QUANTIZE", "DEQUANTIZE")  # the pairs around an island, and float input/output casts
_METADATA = ("SHAPE", "RANK", "SIZE")  # read a float tensor's shape, never its values


def float_islands(data: bytes | Graph) -> dict[str, Any] | None:
    """{"ops": {name: count}, "op_indices": [...], "note": ...} for ops that compute in float
    on activations; None when every op but the casts is integer."""
    graph = data if isinstance(data, Graph) else read_graph(data)
    islands = []
    for op in graph.ops:
        if op.name in _CASTS or op.name in _METADATA:
            continue
        tensors = [graph.tensor(op.subgraph, i) for i in (*op.inputs, *op.outputs) if i >= 0]
        if any(t.dtype.startswith(("float", "bfloat")) and not t.is_constant for t in tensors):
            islands.append(op)
    if not islands:
        return None
    counts = dict(Counter(op.name for op in islands))
    listed = ", ".join(f"{name} x{n}" for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    indices = [op.index for op in islands]
    shown = ", ".join(str(i) for i in indices[:10]) + (", ..." if len(indices) > 10 else "")
    return {"ops": counts, "op_indices": indices,
            "note": f"not fully int8: {listed} (op {shown}) stayed float, between DEQUANTIZE and "
                    "QUANTIZE ops; they run as float kernels on the CPU, and an Edge TPU or NPU "
                    "delegate hands them back to it"}


def with_float_islands(summary: dict[str, Any], mode: str, model_bytes: bytes) -> dict[str, Any]:
    """A variant's report entry with `float_ops` (None when there are none) and the note."""
    found = float_islands(model_bytes) if mode == "int8" else None
    if found is None:
        return {**summary, "float_ops": None}
    return {**summary, "float_ops": found, "notes": [*summary["notes"], found["note"]]}
