"""edgefleet converter: a trained model becomes small, fast TFLite variants, measured side
by side, and the recommended one goes into a signed bundle.

Runs on a workstation (needs ``edgefleet[converter]``). Importing this package is cheap:
TensorFlow loads only when a name that needs it is first used.

Modules: ``sources`` (model formats), ``data`` (calibration and evaluation data),
``quantize`` (modes), ``prune``/``prune_keras3``/``prune_tfmot``, ``distill``, ``metrics``
and ``gate`` (accuracy), ``debugger`` (QuantizationDebugger, keep-float layers),
``edgetpu`` and ``xnnpack_sparse`` (readiness), ``variants``, ``report``, ``build``.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgefleet.converter.errors import ConversionError

# public name -> module that defines it; loaded on first access (PEP 562)
_LAZY = {
    "ConversionResult": "edgefleet.converter.build",
    "ConvertOptions": "edgefleet.converter.build",
    "convert": "edgefleet.converter.build",
    "MODES": "edgefleet.converter.quantize",
    "QuantOptions": "edgefleet.converter.quantize",
    "quantize": "edgefleet.converter.quantize",
    "load_model_source": "edgefleet.converter.sources",
    "load_dataset": "edgefleet.converter.data",
}

__all__ = ["MODES", "ConversionError", "ConversionResult", "ConvertOptions", "QuantOptions", "convert",
           "load_dataset", "load_model_source", "quantize"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgefleet.converter' has no attribute {name!r}")
