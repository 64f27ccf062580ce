"""What a pruning run is asked to do, and the checks of its options and data that need no
Keras: `edgefleet convert` runs them before TensorFlow loads, so a bad --train file fails
in a second instead of after the model has been loaded and measured.

:func:`converter.pruning.finetune.prune` runs the same checks again (it is also called on
its own).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgefleet.converter.errors import ConversionError

DEFAULT_LEARNING_RATE = 1e-3  # Adam's default, and what tfmot's pruning guide fine-tunes with
PRUNING_FRACTION = 0.7  # share of the fine-tuning steps over which sparsity rises


@dataclass(frozen=True)
class PruneOptions:
    target_sparsity: float = 0.8
    initial_sparsity: float = 0.0
    epochs: int = 4
    batch_size: int = 32
    frequency: int = 10  # steps between mask updates
    m_by_n: tuple[int, int] | None = None  # e.g. (2, 4): sets the sparsity to m/n, schedule unused
    xnnpack_policy: bool = False  # tf-keras only: PruneForLatencyOnXNNPack (prunes 1x1 Conv2D only)
    learning_rate: float | None = None  # None: DEFAULT_LEARNING_RATE


def check_m_by_n(m_by_n: Sequence[int] | None) -> tuple[int, int] | None:
    if m_by_n is None:
        return None
    values = tuple(m_by_n)
    if len(values) != 2 or not all(isinstance(v, int) for v in values) or not 0 < values[0] < values[1]:
        raise ConversionError(
            f"m_by_n must be two integers (m, n) with 0 < m < n, such as (2, 4); got {m_by_n!r}"
        )
    return values  # type: ignore[return-value]


def check_options(options: PruneOptions, framework: str | None) -> None:
    """FRAMEWORK is "keras3" or "tf_keras", or None when it is not known yet."""
    for name in ("target_sparsity", "initial_sparsity"):
        value = getattr(options, name)
        if not 0.0 <= value < 1.0:
            raise ConversionError(f"{name} must be in [0, 1) (0.8 prunes 80 % of the weights), got {value}")
    if options.initial_sparsity > options.target_sparsity:
        raise ConversionError(
            f"initial_sparsity ({options.initial_sparsity}) is above "
            f"target_sparsity ({options.target_sparsity})"
        )
    for name in ("epochs", "batch_size", "frequency"):
        if getattr(options, name) < 1:
            raise ConversionError(f"{name} must be at least 1, got {getattr(options, name)}")
    if options.learning_rate is not None and options.learning_rate <= 0:
        raise ConversionError(f"learning_rate must be positive, got {options.learning_rate}")
    check_m_by_n(options.m_by_n)
    if options.xnnpack_policy and framework == "keras3":
        raise ConversionError(
            "xnnpack_policy (tfmot's PruneForLatencyOnXNNPack) needs a tf-keras model; this is a "
            "Keras 3 model: prune it without xnnpack_policy"
        )


def check_data(x: Any, y: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    if x is None:
        raise ConversionError(f"pruning needs {what} inputs: none were given")
    if y is None:
        raise ConversionError(
            f"pruning fine-tunes on labelled data, but the {what} data has no labels: "
            "give an .npz with both x and y"
        )
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y)
    if len(x) != len(y):
        raise ConversionError(f"{what} data has {len(x)} inputs but {len(y)} labels; they must match")
    if len(x) == 0:
        raise ConversionError(f"the {what} data holds no samples")
    return x, y


def schedule_end_step(samples: int, options: PruneOptions) -> int:
    """The step at which sparsity reaches its target (see converter.pruning.finetune)."""
    steps = options.epochs * math.ceil(samples / options.batch_size)
    end_step = options.frequency * int(PRUNING_FRACTION * steps // options.frequency)
    if end_step < options.frequency:
        raise ConversionError(
            f"fine-tuning runs only {steps} steps ({samples} samples, batch size {options.batch_size}, "
            f"{options.epochs} epochs), too few for mask updates every {options.frequency} steps: "
            "give more training data or epochs, or lower the frequency"
        )
    return end_step


def check_plan(x: Any, y: Any, options: PruneOptions, framework: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Every check that can fail before training starts; the data as prune() takes it."""
    check_options(options, framework)
    x, y = check_data(x, y, "training")
    schedule_end_step(len(x), options)
    return x, y
