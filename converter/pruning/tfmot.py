"""Magnitude pruning of legacy tf-keras (Keras 2) models with tensorflow-model-optimization.

`prune_low_magnitude` wraps the prunable layers, `UpdatePruningStep` drives the
`PolynomialDecay` schedule during fine-tuning and `strip_pruning` removes the wrappers.
Keras 3 models go through :mod:`converter.pruning.keras3` instead (tfmot cannot take them).

tfmot is imported lazily: importing it sets TF_USE_LEGACY_KERAS=1 in os.environ, which
would make a later first use of `tf.keras` resolve to tf-keras for the whole process; the
import here puts the variable back as it was.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgefleet.converter import tfenv  # noqa: F401  (before tf-keras and tfmot load TensorFlow)
from edgefleet.converter.errors import ConversionError
from edgefleet.converter.pruning.keras3 import PolynomialSchedule, check_m_by_n
from edgefleet.converter.tfutil import leaf_layers

XNNPACK_POLICY_NEEDS = (
    "PruneForLatencyOnXNNPack needs a built Sequential or functional model whose every input "
    "branch starts with ZeroPadding2D(padding=1) followed by a 3x3 Conv2D with 3 input "
    "channels, stride 2 and 'valid' padding, whose every output branch ends in "
    "GlobalAveragePooling2D(keepdims=True), and which in between holds only layers XNNPACK "
    "runs sparse (1x1 stride-1 Conv2D, 3x3/5x5 DepthwiseConv2D, Add, Multiply, ReLU-type "
    "activations, BatchNormalization, ...); only the 1x1 Conv2D layers are pruned"
)


def tfmot() -> Any:
    """The tensorflow_model_optimization module, imported without leaking its env change."""
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        import tensorflow_model_optimization as module
    finally:
        if before is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = before
    return module


@dataclass
class TfmotRun:
    model: Any  # stripped tf_keras.Model
    kernels: dict[str, list[np.ndarray]]  # layer name -> its pruned weights, after strip
    history: dict[str, list[float]]


def prune_tf_keras(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    schedule: PolynomialSchedule,
    *,
    epochs: int,
    batch_size: int,
    loss: Any,
    learning_rate: float,
    m_by_n: tuple[int, int] | None = None,
    xnnpack_policy: bool = False,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
) -> TfmotRun:
    """Wrap, fine-tune on (X, Y) with the schedule, strip. MODEL itself is left untouched."""
    import tf_keras

    mot = tfmot()
    sparsity = mot.sparsity.keras
    m_by_n = check_m_by_n(m_by_n)
    # prune_low_magnitude wraps the model's own layer objects: train a copy instead
    copy = tf_keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    params: dict[str, Any] = {
        "pruning_schedule": sparsity.PolynomialDecay(
            initial_sparsity=schedule.initial_sparsity,
            final_sparsity=schedule.final_sparsity,
            begin_step=schedule.begin_step,
            end_step=schedule.end_step,
            power=schedule.power,
            frequency=schedule.frequency,
        ),
    }
    if m_by_n is not None:
        params["sparsity_m_by_n"] = m_by_n
    if xnnpack_policy:
        params["pruning_policy"] = sparsity.PruneForLatencyOnXNNPack()
    try:
        pruned = sparsity.prune_low_magnitude(copy, **params)
    except ValueError as exc:
        if xnnpack_policy:
            raise ConversionError(
                f"the model does not meet the XNNPACK pruning policy ({exc}). {XNNPACK_POLICY_NEEDS}; "
                "prune without xnnpack_policy, or rebuild the model to that pattern"
            ) from exc
        raise ConversionError(
            f"tfmot cannot prune this model: {exc}. Supported: Sequential or functional tf-keras "
            "models of built-in layers (subclassed models and custom layers without "
            "get_prunable_weights are not)"
        ) from exc

    wrapper_class = _wrapper_class()
    wrappers = [w for w in _walk(pruned) if isinstance(w, wrapper_class) and w.layer.get_prunable_weights()]
    if not wrappers:
        why = "1x1 Conv2D" if xnnpack_policy else "Dense, Conv2D or other prunable"
        raise ConversionError(f"the model has no {why} layers to prune; nothing to do")

    pruned.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"]
    )
    callbacks: list[Any] = [sparsity.UpdatePruningStep()]
    if on_epoch_end is not None:
        callbacks.append(tf_keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: on_epoch_end(epoch + 1)
        ))
    history = pruned.fit(
        x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0,
        validation_data=validation, callbacks=callbacks,
    )
    stripped = sparsity.strip_pruning(pruned)  # reuses the wrapped layer objects
    kernels = {w.layer.name: [np.asarray(v.numpy()) for v in w.layer.get_prunable_weights()]
               for w in wrappers}
    logs = {key: [float(v) for v in values] for key, values in history.history.items()}
    return TfmotRun(stripped, kernels, logs)


def has_pruning_wrappers(model: Any) -> bool:
    return any(isinstance(layer, _wrapper_class()) for layer in _walk(model))


def _wrapper_class() -> type:
    tfmot()  # the package import, without its environment change
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

    return PruneLowMagnitude


def _walk(model: Any) -> list[Any]:
    return leaf_layers(model)
