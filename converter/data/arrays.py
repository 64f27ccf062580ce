"""NumPy data files: an ``.npz`` with one array per model input, by input name (``x`` for a
one-input model; any numeric dtype, first axis = samples) and optionally ``y`` (integer
class labels or one-hot rows, one per sample), or an ``.npy`` holding a one-input model's
inputs alone. The arrays are taken as they are (already preprocessed); every loader checks
them the same way (:func:`checked_samples`) and never unpickles.

:class:`Dataset` carries inputs by input name (float32) with the dtype each array had in
its file, so that calibration and evaluation data can be compared before conversion.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.converter.errors import ConversionError
from edgefleet.tensors import Arrays, TensorSpec

LABELS = "y"


@dataclass(frozen=True)
class Dataset:
    """Samples by input name (float32), labels, and the dtype each array had in its file."""

    inputs: Arrays
    labels: np.ndarray | None
    dtypes: dict[str, str]
    path: Path

    @property
    def count(self) -> int:
        return len(next(iter(self.inputs.values())))

    def head(self, n: int) -> Dataset:
        """The first N samples."""
        return Dataset({k: v[:n] for k, v in self.inputs.items()},
                       None if self.labels is None else self.labels[:n], self.dtypes, self.path)


def checked_samples(path: Path, x: np.ndarray, name: str = "x") -> np.ndarray:
    """X as float32, or a clear error when it is not a non-empty batch of numbers."""
    if x.ndim < 2 or len(x) == 0:
        raise ConversionError(
            f"{path}: {name} has shape {x.shape}; expected (samples, ...) with at least one sample"
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise ConversionError(f"{path}: {name} has dtype {x.dtype}; expected numbers")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ConversionError(f"{path}: {name} holds NaN or infinite values (or values too large for "
                              "float32); clean the data: calibrating or measuring on them gives a "
                              "broken model")
    return x


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Return (x as float32, y as int64 or None) from an .npz file holding `x` and maybe `y`."""
    path = Path(path)
    arrays, y = load_npz_arrays(path)
    if "x" not in arrays:
        keys = sorted([*arrays, *([LABELS] if y is not None else [])])
        raise ConversionError(
            f"{path} has no 'x' array (it has: {', '.join(keys) or 'nothing'}); "
            "save inputs as x (and labels as y), e.g. np.savez(path, x=x, y=y)"
        )
    x = checked_samples(path, arrays["x"])
    if y is not None and len(y) != len(x):
        raise ConversionError(f"{path}: x has {len(x)} samples but y has {len(y)} labels")
    return x, y


def load_npz_arrays(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Every array of an .npz as stored (inputs by name), and its labels `y` as int64."""
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
            arrays = {key: npz[key] for key in sorted(npz.files)}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ConversionError(f"{path} is not a readable .npz file: {exc}") from None
    y = arrays.pop(LABELS, None)
    return arrays, None if y is None else _labels(path, y)


def bind_inputs(path: Path, arrays: dict[str, np.ndarray], labels: np.ndarray | None,
                specs: Sequence[TensorSpec]) -> Dataset:
    """ARRAYS (as stored in PATH) as the model's inputs: by input name (or tensor name), or
    `x` for a one-input model; checked and float32, every input and the labels alike long."""
    names = [s.name for s in specs]
    chosen: dict[str, np.ndarray] = {}
    for spec in specs:
        for key in (spec.name, spec.tensor):
            if key and key in arrays:
                chosen[spec.name] = arrays[key]
                break
    if len(specs) == 1 and not chosen and "x" in arrays:
        chosen[names[0]] = arrays["x"]
    missing = [n for n in names if n not in chosen]
    if missing:
        keys = ", ".join(sorted([*arrays, *([LABELS] if labels is not None else [])])) or "nothing"
        if len(specs) == 1:
            raise ConversionError(
                f"{path} has no 'x' array (it has: {keys}); save inputs as x, or by the input's "
                f"name {names[0]!r} (and labels as y), e.g. np.savez(path, x=x, y=y)")
        example = ", ".join(f"{n}=..." for n in names)
        raise ConversionError(
            f"{path} has no array for input(s) {', '.join(map(repr, missing))} (it has: {keys}); "
            f"the model takes {', '.join(map(repr, names))}: save one array per input name "
            f"(and labels as y), e.g. np.savez(path, {example}, y=labels)")
    inputs = {n: checked_samples(path, a, n if len(specs) > 1 else "x") for n, a in chosen.items()}
    counts = {n: len(a) for n, a in inputs.items()}
    if len(set(counts.values())) > 1:
        raise ConversionError(f"{path}: the inputs hold different numbers of samples: "
                              + ", ".join(f"{n} {c}" for n, c in counts.items()))
    count = next(iter(counts.values()))
    if labels is not None and len(labels) != count:
        what = "x has" if len(specs) == 1 else "the inputs have"
        raise ConversionError(f"{path}: {what} {count} samples but y has {len(labels)} labels")
    return Dataset(inputs, labels, {n: a.dtype.name for n, a in chosen.items()}, path)


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
