"""Magnitude pruning with fine-tuning: :func:`prune` (:mod:`.finetune`) takes Keras 3 models
to the native back end (:mod:`.keras3`) and legacy tf-keras models to tfmot (:mod:`.tfmot`).

Importing this package loads Keras (and with it TensorFlow).
"""

from __future__ import annotations

from edgefleet.converter.pruning.finetune import PruneOptions, PruneResult, prune

__all__ = ["PruneOptions", "PruneResult", "prune"]
