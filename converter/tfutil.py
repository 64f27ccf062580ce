"""Small helpers shared by the modules that use TensorFlow and Keras (imported lazily)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgefleet.converter.errors import ConversionError
from edgefleet.converter.tfenv import import_tensorflow


def framework_versions() -> dict[str, str]:
    tf = import_tensorflow()
    import keras

    return {"tensorflow": tf.__version__, "keras": keras.__version__}


def pick_samples(x: np.ndarray, n: int) -> np.ndarray:
    """N samples in a fixed pseudo-random order: files sorted by class still calibrate evenly."""
    if len(x) <= n:
        return x
    order = np.random.default_rng(0).permutation(len(x))[:n]
    return x[np.sort(order)]


def check_model_input(model: Any, x: np.ndarray, what: str) -> None:
    """Raise a clear error when X's sample shape does not fit the model's single input."""
    if len(model.inputs) != 1:
        raise ConversionError(
            f"the model has {len(model.inputs)} inputs; only single-input models are supported")
    expected = tuple(model.inputs[0].shape[1:])
    got = tuple(np.asarray(x).shape[1:])
    fits = len(expected) == len(got) and all(
        e is None or e == g for e, g in zip(expected, got, strict=True))
    if not fits:
        raise ConversionError(
            f"{what} samples have shape {got} but the model expects {expected} "
            f"(data shape {tuple(np.asarray(x).shape)}: the first axis is the sample count)")


def leaf_layers(model: Any) -> list[Any]:
    """Every layer of MODEL, nested models flattened (Keras 3 and tf-keras alike)."""
    found = []
    for layer in model.layers:
        if hasattr(layer, "layers"):  # a nested Model or Sequential
            found.extend(leaf_layers(layer))
        else:
            found.append(layer)
    return found
