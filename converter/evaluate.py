"""Accuracy figures: Keras on the workstation, TFLite through the device's own runtime.

The quantised model is run with :class:`edgefleet.runtime.TFLiteModel` (ai-edge-litert) so the
figures in a bundle come from the same code path a board uses, including how it
quantises inputs and dequantises outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgefleet.converter.errors import ConversionError
from edgefleet.runtime import TFLiteModel
from edgefleet.tensors import Arrays, Inputs


def keras_outputs(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Float32 outputs of a Keras model on a batch."""
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)


def tflite_outputs(model: bytes | TFLiteModel, x: Inputs) -> Arrays:
    """Dequantised float32 outputs by output name of TFLite bytes (or a loaded model) on a
    batch (one array for a one-input model, or arrays by input name)."""
    loaded = model if isinstance(model, TFLiteModel) else TFLiteModel(model)
    outputs, _latencies = loaded.run(x)
    return outputs


def class_scores(outputs: Arrays, name: str | None = None) -> np.ndarray:
    """The output NAME of OUTPUTS, or the only one; an error naming them when it is unclear."""
    if name is None and len(outputs) != 1:
        raise ConversionError(f"the model has {len(outputs)} outputs ({', '.join(outputs)}): name the one "
                              "that holds class scores")
    return outputs[name] if name is not None else next(iter(outputs.values()))


def top1_accuracy(outputs: np.ndarray, y: np.ndarray) -> float:
    """Share of samples whose highest output is the label."""
    _check_scores(outputs)
    if len(outputs) != len(y):
        raise ConversionError(f"{len(outputs)} outputs but {len(y)} labels")
    return float(np.mean(outputs.argmax(axis=1) == np.asarray(y)))


def argmax_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of samples on which two models pick the same class."""
    _check_scores(a)
    _check_scores(b)
    if a.shape != b.shape:
        raise ConversionError(f"cannot compare outputs of shapes {a.shape} and {b.shape}")
    return float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))


def keras_top1(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    return top1_accuracy(keras_outputs(model, x), y)


def tflite_top1(model: bytes | TFLiteModel, x: Inputs, y: np.ndarray, output: str | None = None) -> float:
    """Top-1 of the class-score OUTPUT (the only output when not named) on labels Y."""
    return top1_accuracy(class_scores(tflite_outputs(model, x), output), y)


def _check_scores(outputs: np.ndarray) -> None:
    # top-1 only means something for (samples, classes) scores
    if outputs.ndim != 2 or len(outputs) == 0:
        raise ConversionError(
            f"outputs of shape {outputs.shape} are not (samples, classes) scores; "
            "top-1 accuracy needs a classifier"
        )
