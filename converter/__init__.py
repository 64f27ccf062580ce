"""edgefleet converter: a trained model becomes small, fast TFLite variants, measured side
by side, and the recommended one goes into a signed bundle.

Runs on a workstation (needs ``edgefleet[converter]``). Importing this package is cheap:
TensorFlow loads only when a name that needs it is first used.

By technique: ``data`` (calibration and evaluation data), ``quantization`` (modes, accuracy
gate and metrics, QuantizationDebugger), ``pruning``, ``distillation``, ``targets`` (board
profiles, Edge TPU, NPU and XNNPACK readiness; pure Python). The pipeline on top:
``sources`` (model formats), ``variants``, ``golden``, ``evaluate``, ``latency``, ``build``
(``convert``) and ``artifacts`` (manifest, report, bundle), ``report`` (Markdown and PNG).
``tfenv`` sets TensorFlow's environment before it loads.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgefleet.converter.errors import ConversionError

# public name -> module that defines it; loaded on first access (PEP 562)
_LAZY = {
    "ConversionResult": "edgefleet.converter.artifacts",
    "ConvertOptions": "edgefleet.converter.build",
    "convert": "edgefleet.converter.build",
    "MODES": "edgefleet.converter.quantization.modes",
    "QuantOptions": "edgefleet.converter.quantization.modes",
    "quantize": "edgefleet.converter.quantization.modes",
    "load_model_source": "edgefleet.converter.sources",
    "load_dataset": "edgefleet.converter.data",
}

__all__ = ["MODES", "ConversionError", "ConversionResult", "ConvertOptions", "QuantOptions", "convert",
           "load_dataset", "load_model_source", "quantize"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgefleet.converter' has no attribute {name!r}")
