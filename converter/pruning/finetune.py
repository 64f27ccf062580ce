"""Magnitude pruning with fine-tuning: one entry point for Keras 3 and tf-keras models.

`prune` copies the model, fine-tunes the copy on labelled training data while a
polynomial schedule raises the sparsity of every prunable kernel from
`initial_sparsity` to `target_sparsity`, and returns the stripped copy (same framework
as the input, no wrappers, real zeros) with the sparsity reached per layer.

Keras 3 models use the native implementation in :mod:`converter.pruning.keras3`;
legacy tf-keras models use tensorflow-model-optimization (:mod:`converter.pruning.tfmot`).

Schedule: pruning starts at step 0 and reaches the target at `end_step`, the last
multiple of `frequency` within the first PRUNING_FRACTION of the fine-tuning steps; the
remaining steps fine-tune at the final sparsity so that accuracy can recover.

Compilation: the copy is always compiled afresh with Adam (learning_rate, default
1e-3). The model's own optimizer is not reused on purpose: after training its state and
learning-rate schedule are spent (a decayed schedule such as the CosineDecay in
converter.digits sits near zero, and fine-tuning would do nothing). The model's own
loss is kept when it was compiled with one (it knows whether the outputs are logits and
how the labels are encoded); otherwise sparse categorical cross-entropy for integer
labels, categorical cross-entropy for one-hot labels, with from_logits set when the last
layer has no softmax/sigmoid.
"""

from __future__ import annotations

from edgefleet.converter import tfenv  # noqa: F401  (before Keras loads TensorFlow)

# isort: split
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from edgefleet.converter.errors import ConversionError
from edgefleet.converter.pruning.keras3 import MagnitudePruning, PolynomialSchedule, prunable_weights, strip
from edgefleet.converter.pruning.plan import (
    DEFAULT_LEARNING_RATE,
    PRUNING_FRACTION,
    PruneOptions,
    check_data,
    check_options,
    schedule_end_step,
)

__all__ = ["DEFAULT_LEARNING_RATE", "PRUNING_FRACTION", "PruneOptions", "PruneResult", "make_schedule",
           "prune"]


@dataclass
class PruneResult:
    model: Any  # stripped, same framework as the input (Keras 3 or tf-keras)
    layer_sparsity: dict[str, float]  # per pruned layer: fraction of zero kernel weights
    overall_sparsity: float  # over all pruned kernels
    framework: str  # "keras3" | "tfmot"
    history: dict[str, list[float]] = field(default_factory=dict)  # fine-tuning loss/accuracy per epoch


def prune(
    model: Any,
    x_train: np.ndarray,
    y_train: np.ndarray | None,
    options: PruneOptions,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> PruneResult:
    """Prune MODEL (not modified) to options.target_sparsity while fine-tuning on the data.

    Raises ConversionError for a model with nothing to prune, options out of range,
    missing or mismatched labels, or too few training steps for the schedule.
    """
    framework = detect_framework(model)
    check_options(options, framework)
    x, y = check_data(x_train, y_train, "training")
    validation = None
    if x_val is not None or y_val is not None:
        validation = check_data(x_val, y_val, "validation")
    schedule = make_schedule(len(x), options)
    loss = _loss(model, y)
    learning_rate = options.learning_rate or DEFAULT_LEARNING_RATE

    def on_epoch_end(epoch: int) -> None:
        if progress is not None:
            progress("fine-tuning", epoch, options.epochs)

    if framework == "keras3":
        stripped, kernels, history = _prune_keras3(
            model, x, y, schedule, options, loss, learning_rate, validation, on_epoch_end
        )
    else:
        from edgefleet.converter.pruning.tfmot import prune_tf_keras

        run = prune_tf_keras(
            model, x, y, schedule, epochs=options.epochs, batch_size=options.batch_size, loss=loss,
            learning_rate=learning_rate, m_by_n=options.m_by_n, xnnpack_policy=options.xnnpack_policy,
            validation=validation, on_epoch_end=on_epoch_end,
        )
        stripped, kernels, history = run.model, run.kernels, run.history
    layer_sparsity = {name: _zero_fraction(arrays) for name, arrays in kernels.items()}
    overall = _zero_fraction([a for arrays in kernels.values() for a in arrays])
    name = "keras3" if framework == "keras3" else "tfmot"
    return PruneResult(stripped, layer_sparsity, overall, name, history)


def detect_framework(model: Any) -> str:
    """"keras3" for a Keras 3 model, "tf_keras" for a legacy tf-keras (Keras 2) one."""
    if isinstance(model, keras.Model):
        return "keras3"
    try:
        import tf_keras
    except ImportError:
        tf_keras = None
    if tf_keras is not None and isinstance(model, tf_keras.Model):
        return "tf_keras"
    raise ConversionError(
        f"cannot prune a {type(model).__module__}.{type(model).__name__}: pass a Keras 3 model "
        "(keras.Model) or a legacy tf-keras model (tf_keras.Model)"
    )


def make_schedule(samples: int, options: PruneOptions) -> PolynomialSchedule:
    """The polynomial schedule over this many training samples (see the module docstring)."""
    end_step = schedule_end_step(samples, options)
    return PolynomialSchedule(
        initial_sparsity=options.initial_sparsity, final_sparsity=options.target_sparsity,
        begin_step=0, end_step=end_step, frequency=options.frequency,
    )


def _prune_keras3(
    model: keras.Model, x: np.ndarray, y: np.ndarray, schedule: PolynomialSchedule,
    options: PruneOptions, loss: Any, learning_rate: float,
    validation: tuple[np.ndarray, np.ndarray] | None, on_epoch_end: Callable[[int], None],
) -> tuple[keras.Model, dict[str, list[np.ndarray]], dict[str, list[float]]]:
    if not prunable_weights(model):
        raise ConversionError(
            f"the model has no Dense, Conv2D or DepthwiseConv2D layers to prune "
            f"(layers: {', '.join(type(layer).__name__ for layer in model.layers) or 'none'})"
        )
    try:
        copy = keras.models.clone_model(model)
    except Exception as exc:  # subclassed models: Keras cannot rebuild them from config
        raise ConversionError(
            f"cannot copy the model for pruning ({exc}); Sequential and functional models are supported"
        ) from exc
    copy.set_weights(model.get_weights())
    pruning = MagnitudePruning(schedule, options.m_by_n)
    copy.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
    progress = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: on_epoch_end(epoch + 1))
    history = copy.fit(
        x, y, batch_size=options.batch_size, epochs=options.epochs, shuffle=True, verbose=0,
        validation_data=validation, callbacks=[pruning, progress],
    )
    stripped = strip(copy, pruning)
    kernels = {t.name: [np.asarray(t.variable.numpy())] for t in prunable_weights(stripped)}
    logs = {key: [float(v) for v in values] for key, values in history.history.items()}
    return stripped, kernels, logs


def _loss(model: Any, y: np.ndarray) -> Any:
    compiled = getattr(model, "loss", None)
    if compiled:
        return compiled
    last = model.layers[-1] if model.layers else None
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    from_logits = activation not in ("softmax", "sigmoid")
    one_hot = y.ndim == 2 and y.shape[1] > 1
    if detect_framework(model) == "keras3":
        losses = keras.losses
    else:
        import tf_keras

        losses = tf_keras.losses
    if one_hot:
        return losses.CategoricalCrossentropy(from_logits=from_logits)
    return losses.SparseCategoricalCrossentropy(from_logits=from_logits)


def _zero_fraction(arrays: list[np.ndarray]) -> float:
    total = sum(a.size for a in arrays)
    return float(sum(np.count_nonzero(a == 0) for a in arrays) / total) if total else 0.0
