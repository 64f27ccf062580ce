"""Readiness for Linux NPU delegates (VX on i.MX8M Plus and the like), from the flatbuffer alone.

Pure Python over `edgefleet.tflite_graph` (no TensorFlow import), so `edgefleet inspect` can
run it on a board too.
"""

from __future__ import annotations

from typing import Any

from edgefleet.tflite_graph import Graph, read_graph


def check_npu(data: bytes | Graph, profile: Any = None) -> dict[str, Any]:
    """Readiness for Linux NPU delegates (VX on i.MX8M Plus and the like): full int8, static shapes.

    A coarser check than the Edge TPU one: these delegates have their own op lists that are
    not encoded here; what every one of them needs is a fully integer model with static shapes.
    """
    graph = data if isinstance(data, Graph) else read_graph(data)
    acts = [t for ts in graph.tensors for t in ts if not t.is_constant]
    floats = sorted({t.name for t in acts if t.dtype.startswith(("float", "bfloat"))})
    dynamic = sorted({t.name for ts in graph.tensors for t in ts if t.is_dynamic})
    float_ops = sorted({op.name for op in graph.ops
                        if any(i >= 0 and graph.tensor(op.subgraph, i).dtype.startswith("float")
                               and not graph.tensor(op.subgraph, i).is_constant
                               for i in (*op.inputs, *op.outputs))})
    checks = {
        "full_integer": {"ok": not floats, "detail": floats[:10], "float_ops": float_ops},
        "static_shapes": {"ok": not dynamic, "detail": dynamic[:10]},
        "single_subgraph": {"ok": graph.subgraphs <= 1, "detail": graph.subgraphs},
    }
    want = getattr(getattr(profile, "conversion", None), "io_dtype", None)
    if want:
        got = sorted({t.dtype for t in (*graph.model_inputs, *graph.model_outputs)})
        checks["io_dtype"] = {"ok": got == [want], "detail": f"profile wants {want}, model has {got}"}
    failed = [name for name, c in checks.items() if not c["ok"]]
    return {"ready": not failed, "summary": "ready" if not failed else "not ready: " + ", ".join(failed),
            "checks": checks,
            "io_dtypes": {"inputs": [t.dtype for t in graph.model_inputs],
                          "outputs": [t.dtype for t in graph.model_outputs]}}
