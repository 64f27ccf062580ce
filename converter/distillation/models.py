"""The teacher and the student of a distillation: checks that they fit together, a student
scaled down from the teacher, and either model's logits.

Classifiers often end in a softmax (the edgefleet digits CNN does), so both models' logits
are recovered before dividing by T: when the output layer has a softmax `activation`
(Dense, Conv, Activation...), it is switched to linear for the duration, which gives the
exact pre-softmax values; otherwise, when the outputs are probabilities (non-negative,
rows summing to 1), their logarithm is used, which equals the logits up to a per-row
constant that the softmax cancels. The teacher's logits are computed once.
"""

from __future__ import annotations

from edgefleet.converter import tfenv  # noqa: F401  (before Keras loads TensorFlow)

# isort: split
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from edgefleet.converter.errors import ConversionError

_PROBABILITY_TOLERANCE = 1e-3  # |row sum - 1| below which outputs count as probabilities
EVAL_BATCH = 512  # samples per forward pass outside training


def scaled_student(teacher: keras.Model, width: float) -> keras.Model:
    """TEACHER's architecture with every layer's width scaled by WIDTH, with fresh weights.

    Scaled: `filters` (Conv1D/2D/3D, SeparableConv, transposed convs), `units` (Dense, RNNs)
    and the `depth_multiplier` of DepthwiseConv2D, each to round(n * width) and at least 1.
    The output layer keeps its width, so the student answers in the teacher's classes.
    Parameters fall roughly as width^2 (inner layers) to width (first and last layers).
    """
    if not isinstance(width, int | float) or not 0.0 < width <= 1.0:
        raise ConversionError(
            f"student width must be in (0, 1], a fraction of the teacher's (got {width!r}); "
            "for example 0.5 for half the filters and units"
        )
    single_output(teacher, "teacher")
    output_ids = {id(layer) for layer in output_layers(teacher)}

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if id(layer) not in output_ids:
            for key in ("filters", "units"):
                if isinstance(config.get(key), int):
                    config[key] = max(1, round(config[key] * width))
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                config["depth_multiplier"] = max(1, round(config["depth_multiplier"] * width))
        return layer.__class__.from_config(config)

    try:
        student = keras.models.clone_model(teacher, clone_function=clone)
    except Exception as exc:  # shapes that no longer fit (a fixed Reshape, an Add with the input...)
        raise ConversionError(
            f"cannot build a width-{width} student from {teacher.name}: {exc}; "
            "build the student yourself and pass it as a .keras file instead"
        ) from exc
    if student.name == teacher.name:
        student.name = f"{teacher.name}_student"
    return student


# --- logits -------------------------------------------------------------------------------


def model_logits(model: keras.Model, x: np.ndarray) -> tuple[np.ndarray, str]:
    """MODEL's logits on X (the teacher's, computed once); and "logits" or "probabilities"."""
    with logits_view(model) as logits_of:
        logits = np.concatenate([
            np.asarray(logits_of(tf.constant(x[i:i + EVAL_BATCH]), False))
            for i in range(0, len(x), EVAL_BATCH)
        ])
        kind = logits_of.kind  # type: ignore[attr-defined]
    return logits.astype(np.float32), kind


@contextlib.contextmanager
def logits_view(model: keras.Model) -> Iterator[Callable[[tf.Tensor, bool], tf.Tensor]]:
    """Yield fn(x, training) -> logits of MODEL; fn.kind says what the model outputs.

    A softmax `activation` on the output layer is switched to linear inside the block (and
    restored after it, also on errors); other probability outputs are turned into
    log-probabilities, which are logits up to a per-row constant.
    """
    layers = output_layers(model)
    layer = layers[0] if len(layers) == 1 else None
    activation = getattr(layer, "activation", None)
    swap = activation is not None and _activation_name(activation) == "softmax"
    if swap:
        layer.activation = keras.activations.linear
        kind = "probabilities"
    else:
        probe = np.asarray(model(tf.zeros((1, *model.inputs[0].shape[1:])), training=False))
        kind = "probabilities" if _are_probabilities(probe) else "logits"
    tiny = np.finfo(np.float32).tiny

    def logits_of(x: tf.Tensor, training: bool) -> tf.Tensor:
        out = model(x, training=training)
        if kind == "probabilities" and not swap:
            out = tf.math.log(tf.maximum(out, tiny))
        return out

    logits_of.kind = kind  # type: ignore[attr-defined]
    try:
        yield logits_of
    finally:
        if swap:
            layer.activation = activation


def _activation_name(activation: Any) -> str:
    try:
        name = keras.activations.serialize(activation)
    except Exception:  # a custom callable Keras cannot name
        return ""
    return name if isinstance(name, str) else ""


def _are_probabilities(outputs: np.ndarray) -> bool:
    return bool(
        outputs.size and outputs.min() >= 0.0
        and np.all(np.abs(outputs.sum(axis=-1) - 1.0) < _PROBABILITY_TOLERANCE)
    )


# --- checks -------------------------------------------------------------------------------


def output_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers that produce MODEL's outputs (Sequential or functional)."""
    found = []
    for tensor in getattr(model, "outputs", None) or []:
        history = getattr(tensor, "_keras_history", None)
        if history is not None:
            found.append(history[0])
    if not found and getattr(model, "layers", None):
        found.append(model.layers[-1])
    return found


def single_output(model: keras.Model, what: str) -> tuple[int | None, ...]:
    outputs = getattr(model, "outputs", None)
    if not outputs:
        raise ConversionError(
            f"the {what} model {model.name} has no known outputs; give a built Sequential or "
            "functional Keras model (one that starts with keras.Input)"
        )
    if len(outputs) != 1:
        raise ConversionError(
            f"the {what} model {model.name} has {len(outputs)} outputs; distillation needs a "
            "classifier with one (samples, classes) output"
        )
    return tuple(outputs[0].shape)


def check_pair(teacher: keras.Model, student: keras.Model) -> int:
    """Both single-output classifiers with the same output shape; return the class count."""
    teacher_shape = single_output(teacher, "teacher")
    student_shape = single_output(student, "student")
    if len(teacher_shape) != 2 or teacher_shape[1] is None:
        raise ConversionError(
            f"the teacher's output has shape {teacher_shape}; distillation needs a classifier "
            "whose output is (samples, classes)"
        )
    if teacher_shape[1:] != student_shape[1:]:
        raise ConversionError(
            f"the teacher's output shape {teacher_shape} and the student's {student_shape} differ: "
            f"the student's last layer must have {teacher_shape[1]} units, one per teacher class "
            "(scaled_student / --width builds one that fits)"
        )
    if student is teacher:
        raise ConversionError("the student is the teacher itself; give a separate student model")
    return int(teacher_shape[1])
