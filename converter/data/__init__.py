"""Calibration, evaluation and training data: `.npz`, `.npy`, or a folder of images.

:func:`load_dataset` takes any of them by its path. NumPy files (:mod:`.arrays`) hold
arrays already preprocessed; image folders (:mod:`.images`) need a declared
:class:`Preprocess`. NumPy and Pillow only: no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgefleet.converter.data.arrays import (
    Dataset,
    bind_inputs,
    checked_samples,
    load_npy,
    load_npz,
    load_npz_arrays,
)
from edgefleet.converter.data.images import IMAGE_SUFFIXES, PREPROCESS_EXAMPLE, Preprocess, load_image_folder
from edgefleet.converter.errors import ConversionError
from edgefleet.tensors import TensorSpec

__all__ = ["IMAGE_SUFFIXES", "PREPROCESS_EXAMPLE", "Dataset", "Preprocess", "checked_samples", "load_dataset",
           "load_image_folder", "load_inputs", "load_npy", "load_npz"]


def load_dataset(
    path: str | Path, preprocess: Preprocess | None = None, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(x float32, y int64 or None) from an .npz (x, optional y), an .npy (x) or an image folder.

    LIMIT keeps the first LIMIT samples (of an image folder with classes: LIMIT spread over
    the classes). For .npz/.npy files the arrays are taken as they are
    (already preprocessed); a Preprocess is only applied to image folders.
    """
    path = Path(path)
    if limit is not None and limit < 1:
        raise ConversionError(f"limit must be at least 1 (got {limit})")
    if path.is_dir():
        x, y = load_image_folder(path, preprocess, limit)
    elif not path.exists():
        raise ConversionError(f"data {path} does not exist; give an .npz, an .npy or a folder of images")
    elif path.suffix.lower() == ".npz":
        x, y = load_npz(path)
    elif path.suffix.lower() == ".npy":
        x, y = load_npy(path), None
    else:
        raise ConversionError(
            f"cannot read data {path}: unknown extension {path.suffix or '(none)'!r}; "
            "give an .npz (keys x and optional y), an .npy (x) or a folder of images "
            f"({', '.join(IMAGE_SUFFIXES)})"
        )
    if limit is not None:
        x = x[:limit]
        y = None if y is None else y[:limit]
    return x, y


def load_inputs(path: str | Path, specs: Sequence[TensorSpec], preprocess: Preprocess | None = None,
                limit: int | None = None) -> Dataset:
    """A model's inputs by name (and labels) from PATH: an .npz with one array per input
    name (`x` for a one-input model, labels `y`); an .npy or an image folder for a one-input
    model. LIMIT as in :func:`load_dataset`."""
    path = Path(path)
    names = [s.name for s in specs]
    if path.suffix.lower() != ".npz" or path.is_dir():
        if len(specs) != 1:
            raise ConversionError(
                f"{path}: the model has {len(specs)} inputs ({', '.join(names)}); give an .npz with one "
                "array per input name (an .npy or an image folder holds one input)")
        x, y = load_dataset(path, preprocess, limit)
        stored = "float32" if path.is_dir() else _stored_dtype(path)
        return Dataset({names[0]: x}, y, {names[0]: stored}, path)
    if not path.exists():
        raise ConversionError(f"data {path} does not exist; give an .npz, an .npy or a folder of images")
    if limit is not None and limit < 1:
        raise ConversionError(f"limit must be at least 1 (got {limit})")
    arrays, y = load_npz_arrays(path)
    data = bind_inputs(path, arrays, y, specs)
    return data if limit is None else data.head(limit)


def _stored_dtype(path: Path) -> str:
    try:  # the header alone: the array was read and checked already
        return str(np.load(path, mmap_mode="r", allow_pickle=False).dtype)
    except (OSError, ValueError):
        return "unknown"
