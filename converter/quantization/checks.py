"""Checks on a quantised variant before it is measured, compared or bundled.

- :func:`weights_changed`: did quantisation change the weights at all? A quantiser that
  does not recognise a model's ops (ai-edge-quantizer on models whose op codes sit in
  ``deprecated_builtin_code`` read every op as ADD) returns the float model unchanged;
  such a variant must be reported as not quantised, never labelled or bundled as quantised.
- :func:`load_and_run_check`: does LiteRT load the variant and run it once? A model the
  runtime refuses would otherwise fail later, on the board, or in the middle of a report.
"""

from __future__ import annotations

import hashlib

import numpy as np

from edgefleet.runtime import RuntimeLoadError, TFLiteModel
from edgefleet.tensors import InputError, Inputs
from edgefleet.tflite_graph import Graph, read_graph


def _float_weights(graph: Graph) -> dict[str, int]:
    """SHA-256 -> size of every float32 constant (the weights a quantiser would change)."""
    found: dict[str, int] = {}
    for s, tensors in enumerate(graph.tensors):
        for t in tensors:
            values = graph.tensor_data(s, t.index)
            if t.is_constant and t.dtype == "float32" and values is not None:
                found[hashlib.sha256(values.tobytes()).hexdigest()] = values.nbytes
    return found


def unchanged_weight_share(float_bytes: bytes, variant_bytes: bytes) -> float:
    """Share of the float model's float32 weight bytes the variant still stores as they were."""
    before = _float_weights(read_graph(float_bytes))
    total = sum(before.values())
    if not total:  # no float weights: nothing a quantiser could have changed
        return 1.0
    after = _float_weights(read_graph(variant_bytes))
    return sum(size for digest, size in before.items() if digest in after) / total


def weights_changed(float_bytes: bytes, variant_bytes: bytes) -> bool:
    """False when VARIANT_BYTES still holds every float32 weight of FLOAT_BYTES byte for byte."""
    return unchanged_weight_share(float_bytes, variant_bytes) < 1.0


def not_quantised_reason(mode: str, float_bytes: bytes, variant_bytes: bytes) -> str | None:
    """Why a MODE variant is not quantised (its weights are the float model's), or None."""
    if mode == "float32" or weights_changed(float_bytes, variant_bytes):
        return None
    return (f"not quantised: the {mode} model holds the float model's weights unchanged "
            f"({len(variant_bytes):,} bytes against {len(float_bytes):,}); the quantiser found no "
            "weight it would quantise (ops it does not support, or weights too small to be worth it)")


def load_and_run_check(model_bytes: bytes, inputs: Inputs) -> str | None:
    """None when LiteRT loads MODEL_BYTES and runs it on INPUTS with finite outputs; else
    the runtime's reason."""
    try:
        outputs, _ = TFLiteModel(model_bytes).run(inputs)
    except (RuntimeLoadError, InputError, RuntimeError, ValueError) as exc:
        return str(exc)
    broken = sorted(name for name, values in outputs.items() if not np.isfinite(values).all())
    if broken:
        return f"output(s) {', '.join(broken)} hold NaN or infinity"
    return None
