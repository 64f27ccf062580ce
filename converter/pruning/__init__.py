"""Magnitude pruning with fine-tuning: :func:`prune` (:mod:`.finetune`) takes Keras 3 models
to the native back end (:mod:`.keras3`) and legacy tf-keras models to tfmot (:mod:`.tfmot`);
:mod:`.plan` holds the options and the checks that need no Keras.

Importing this package is cheap; `prune` and `PruneResult` load Keras (and with it
TensorFlow) when first used, so `convert` can check a pruning plan before TensorFlow loads.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgefleet.converter.pruning.plan import PruneOptions

__all__ = ["PruneOptions", "PruneResult", "prune"]


def __getattr__(name: str) -> Any:
    if name in ("PruneResult", "prune"):
        return getattr(importlib.import_module("edgefleet.converter.pruning.finetune"), name)
    raise AttributeError(f"module 'edgefleet.converter.pruning' has no attribute {name!r}")
