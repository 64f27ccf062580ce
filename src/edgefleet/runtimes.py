"""Which TFLite runtime a board has: ai-edge-litert (LiteRT), tflite-runtime 2.14 (32-bit
Pi OS, needs numpy<2) or tf.lite (workstations only), found in that order. "auto" never
imports TensorFlow: a device without a runtime is told what to install instead.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RUNTIMES = ("ai-edge-litert", "tflite-runtime", "tensorflow")
# runtime name -> (module holding Interpreter and load_delegate, distribution for the version)
_MODULES = {
    "ai-edge-litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
    "tflite-runtime": ("tflite_runtime.interpreter", "tflite-runtime"),
    "tensorflow": ("tensorflow.lite", "tensorflow"),
}


class RuntimeLoadError(Exception):
    """No runtime, a delegate that will not load, or a model the runtime refuses."""


@dataclass(frozen=True)
class Runtime:
    name: str
    version: str
    interpreter: Callable[..., Any]
    load_delegate: Callable[..., Any]


def _import_runtime(name: str) -> Runtime:
    module_name, dist = _MODULES[name]
    module = importlib.import_module(module_name)
    if name == "tensorflow":
        interpreter, load_delegate = module.Interpreter, module.experimental.load_delegate
    else:
        interpreter, load_delegate = module.Interpreter, module.load_delegate
    version = getattr(importlib.import_module(module_name.split(".")[0]), "__version__", None)
    if not isinstance(version, str):  # importlib.metadata costs the agent 1 MiB: only when needed
        from importlib import metadata

        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "unknown"
    return Runtime(name, version, interpreter, load_delegate)


def find_runtime(preference: str = "auto") -> Runtime:
    """The requested runtime, or under "auto" the first of LiteRT and tflite-runtime present.

    "auto" never falls through to TensorFlow: a device without a runtime gets told what
    to install instead of silently pulling in a 500 MB dependency.
    """
    if preference != "auto" and preference not in RUNTIMES:
        raise RuntimeLoadError(f"unknown runtime {preference!r}; choose auto or one of {RUNTIMES}")
    candidates = RUNTIMES[:2] if preference == "auto" else (preference,)
    errors = []
    for name in candidates:
        try:
            return _import_runtime(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise RuntimeLoadError(
        "no TFLite runtime could be imported (" + "; ".join(errors) + "). "
        "Install one: pip install 'edgefleet[device]' (ai-edge-litert), or on 32-bit Raspberry Pi OS "
        "pip install tflite-runtime==2.14.0 'numpy<2'"
    )
