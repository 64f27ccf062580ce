"""NumPy data files: an ``.npz`` with ``x`` (inputs, any numeric dtype, first axis = samples)
and optionally ``y`` (integer class labels or one-hot rows, one per sample), or an ``.npy``
holding ``x`` alone. The arrays are taken as they are (already preprocessed); every loader
checks them the same way (:func:`checked_samples`) and never unpickles.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.converter.errors import ConversionError


def checked_samples(path: Path, x: np.ndarray) -> np.ndarray:
    """X as float32, or a clear error when it is not a non-empty batch of numbers."""
    if x.ndim < 2 or len(x) == 0:
        raise ConversionError(
            f"{path}: x has shape {x.shape}; expected (samples, ...) with at least one sample"
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise ConversionError(f"{path}: x has dtype {x.dtype}; expected numbers")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ConversionError(f"{path}: x holds NaN or infinite values (or values too large for float32); "
                              "clean the data: calibrating or measuring on them gives a broken model")
    return x


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Return (x as float32, y as int64 or None) from an .npz file holding `x` and maybe `y`."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ConversionError(f"data file {path} {what}; expected an .npz file with key 'x'")
    with path.open("rb") as f:
        magic = f.read(6)
    if not (magic.startswith(b"PK") or magic == b"\x93NUMPY"):
        raise ConversionError(f"{path} is not an .npz file (no zip header); save data with "
                              "np.savez(path, x=x, y=y)")
    loaded = _np_load(path, ".npz")
    if isinstance(loaded, np.ndarray):  # a .npy file holds one bare array, no keys
        raise ConversionError(
            f"{path} is a single .npy array; save an .npz with key 'x' (np.savez(path, x=x))"
        )
    try:
        with loaded as npz:
            keys = sorted(npz.files)
            if "x" not in keys:
                raise ConversionError(
                    f"{path} has no 'x' array (it has: {', '.join(keys) or 'nothing'}); "
                    "save inputs as x (and labels as y), e.g. np.savez(path, x=x, y=y)"
                )
            x = npz["x"]
            y = npz["y"] if "y" in keys else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ConversionError(f"{path} is not a readable .npz file: {exc}") from None

    x = checked_samples(path, x)
    if y is None:
        return x, None
    y = _labels(path, y)
    if len(y) != len(x):
        raise ConversionError(f"{path}: x has {len(x)} samples but y has {len(y)} labels")
    return x, y


def load_npy(path: Path) -> np.ndarray:
    """X as float32 from an .npy file holding one array."""
    return checked_samples(path, _np_load(path, ".npy"))


def _np_load(path: Path, kind: str) -> Any:
    try:
        # allow_pickle=False: a data file must never be able to run code
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ConversionError(f"{path} is not a readable {kind} file: {exc}") from None


def _labels(path: Path, y: np.ndarray) -> np.ndarray:
    """Class indices as int64; one-hot rows are turned into indices."""
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)  # one-hot (or probability) labels
    elif y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ConversionError(f"{path}: y has shape {y.shape}; expected one class index per sample")
    if not np.issubdtype(y.dtype, np.number) or not np.all(np.equal(np.mod(y, 1), 0)):
        raise ConversionError(f"{path}: y must hold integer class indices (it has dtype {y.dtype})")
    return y.astype(np.int64)
