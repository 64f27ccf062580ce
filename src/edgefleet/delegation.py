"""Which nodes a delegate really took, after the interpreter applied it: no silent fallback.

A delegate replaces each partition of the graph it can run with one DELEGATE node; the
original nodes stay in the interpreter's node list but leave the execution plan. LiteRT's
Python interpreter does not expose the plan, but it lists every node with its input and
output tensors (`_get_ops_details()`, the same list `litert-benchmark`'s op profile shows):
a partition is what lies between a DELEGATE node's inputs and its outputs, found by
walking back from each output through the nodes that produce it. The rest runs on the
runtime's own kernels (the CPU's reference or optimised builtins).

Work is estimated from the tensors' shapes: multiply-accumulates for the convolutions, fully
connected and batch matmul ops, one unit per output element for every other op. The node list
and the shapes come from the interpreter itself, so a board needs no flatbuffer schema module
for this. The primary subgraph only (control-flow subgraphs are not partitioned here).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Shape = Callable[[int], tuple[int, ...]]  # a tensor's shape by its index


def _elements(shape: tuple[int, ...]) -> int:
    return math.prod(max(d, 1) for d in shape) if shape else 1


def op_work(node: dict[str, Any], shape: Shape) -> int:
    """Estimated multiply-accumulates of NODE (output elements for ops without a kernel)."""
    name = node["op_name"]
    inputs, outputs = [int(t) for t in node["inputs"]], [int(t) for t in node["outputs"]]
    out = shape(outputs[0]) if outputs else ()
    weights = shape(inputs[1]) if len(inputs) > 1 and inputs[1] >= 0 else ()
    if name == "CONV_2D" and len(weights) == 4:  # [out_c, kh, kw, in_c]
        return _elements(out) * weights[1] * weights[2] * weights[3]
    if name == "DEPTHWISE_CONV_2D" and len(weights) == 4:  # [1, kh, kw, out_c]
        return _elements(out) * weights[1] * weights[2]
    if name == "FULLY_CONNECTED" and len(weights) == 2:  # [units, in]
        return _elements(out) * weights[1]
    if name == "TRANSPOSE_CONV" and len(inputs) > 2:  # inputs: output shape, weights, input
        w, x = shape(inputs[1]), shape(inputs[2])
        return _elements(x) * (w[0] * w[1] * w[2] if len(w) == 4 else 1)
    if name == "BATCH_MATMUL" and inputs:
        a = shape(inputs[0])
        return _elements(out) * (a[-1] if a else 1)
    return _elements(out)


def partitions(nodes: list[dict[str, Any]]) -> dict[int, int]:
    """Original node index -> the DELEGATE node that runs it, from the interpreter's node list."""
    delegates = [n for n in nodes if n["op_name"] == "DELEGATE"]
    producer = {int(t): n["index"] for n in nodes if n["op_name"] != "DELEGATE" for t in n["outputs"]}
    taken: dict[int, int] = {}
    for d in delegates:
        boundary = {int(t) for t in d["inputs"]}
        stack = [int(t) for t in d["outputs"]]
        seen: set[int] = set()
        while stack:
            tensor = stack.pop()
            if tensor in boundary or tensor in seen or tensor not in producer:
                continue
            seen.add(tensor)
            node = producer[tensor]
            if node not in taken:
                taken[node] = d["index"]
                stack.extend(int(t) for t in nodes[node]["inputs"] if int(t) >= 0)
    return taken


@dataclass(frozen=True)
class DelegatedShare:
    delegate: str  # the delegate that was applied: XNNPACK on the CPU, edgetpu, ...
    ops_total: int
    ops_delegated: int
    work_total: int
    work_delegated: int
    left_ops: dict[str, int]  # op name -> count of the nodes it did not take

    def as_dict(self) -> dict[str, Any]:
        return {"delegate": self.delegate, "ops_total": self.ops_total, "ops_delegated": self.ops_delegated,
                "ops_share": round(self.ops_delegated / self.ops_total, 4) if self.ops_total else None,
                "work_share": round(self.work_delegated / self.work_total, 4) if self.work_total else None,
                "work_estimate": "MACs of convolutions, fully connected and matmul ops; "
                                 "output elements for the rest",
                "left_to_runtime_kernels": self.left_ops}

    def summary(self) -> str:
        d = self.as_dict()
        left = ", ".join(f"{name} x{n}" for name, n in sorted(self.left_ops.items())) or "nothing"
        return (f"{self.delegate} runs {self.ops_delegated} of {self.ops_total} ops "
                f"({100 * (d['work_share'] or 0):.1f} % of the estimated work); left to the runtime's "
                f"own kernels: {left}")


def delegated_share(nodes: list[dict[str, Any]], shape: Shape, delegate: str) -> DelegatedShare:
    """The share of the model's ops and work that DELEGATE took, from the interpreter's node list
    (its original nodes first, then one DELEGATE node per partition) and tensor shapes."""
    ops = [n for n in nodes if n["op_name"] != "DELEGATE"]
    taken = partitions(nodes)
    work = {n["index"]: op_work(n, shape) for n in ops}
    left = Counter(n["op_name"] for n in ops if n["index"] not in taken)
    return DelegatedShare(delegate, len(ops), sum(1 for n in ops if n["index"] in taken), sum(work.values()),
                          sum(w for i, w in work.items() if i in taken), dict(left))
