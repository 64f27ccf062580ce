"""edgefleet converter: a trained model becomes a quantised TFLite model in a signed bundle.

Runs on a workstation (needs ``edgefleet[converter]``: TensorFlow, tf-keras, scikit-learn).
Importing this package is cheap: TensorFlow loads only when a name that needs it is
first used, so the CLI stays quick for sub-commands that never convert.

Today one mode exists: full-integer ``int8`` (see :mod:`converter.int8`). Float16,
dynamic-range and 16x8 quantisation, pruning, distillation and other input formats
arrive later behind the same :func:`convert` entry point.
"""

from __future__ import annotations

import importlib
from typing import Any

from converter.errors import ConversionError

# public name -> module that defines it; loaded on first access (PEP 562)
_LAZY = {
    "ConversionResult": "converter.build",
    "MODES": "converter.build",
    "convert": "converter.build",
    "convert_float": "converter.int8",
    "convert_int8": "converter.int8",
    "load_keras_model": "converter.int8",
    "load_npz": "converter.datasets",
}

__all__ = ["MODES", "ConversionError", "ConversionResult", "convert", "convert_float",
           "convert_int8", "load_keras_model", "load_npz"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'converter' has no attribute {name!r}")
