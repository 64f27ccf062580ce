"""Calibration samples for int8 and 16x8 quantisation, with any number of inputs.

The samples are carried by input name (the float32 model's names) or, for a one-input
model given one array, as a list. The TFLiteConverter's representative dataset takes
either form per step: a dict keyed by signature input name, or a list in the model's
input order (tensorflow/lite/python/optimize/calibrator.py, ``_feed_tensors``);
ai-edge-quantizer takes dicts by signature input name (converter.quantization.modes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

import numpy as np

from edgefleet.converter.errors import ConversionError
from edgefleet.converter.tfutil import pick_samples

if TYPE_CHECKING:
    from edgefleet.converter.sources import ModelSource

# Calibration samples: arrays by input name, or in the model's input order
Calibration = dict[str, np.ndarray] | list[np.ndarray]
Progress = Callable[[str, int, int], None]


def calibration_samples(source: ModelSource, calib_x: np.ndarray | Mapping[str, np.ndarray],
                         n: int) -> Calibration:
    """Up to N samples, the same ones of every input: by name, or a list for one array."""
    if not isinstance(calib_x, Mapping):
        if len(source.input_shapes) != 1:
            raise ConversionError(f"{source.name} has {len(source.input_shapes)} inputs: give the "
                                  "calibration samples by input name")
        return [pick_samples(_checked(np.asarray(calib_x, np.float32), source.input_shape, source.name), n)]
    shapes = {s.name: s.sample_shape for s in source.reference_model().inputs}
    if set(calib_x) != set(shapes):
        raise ConversionError(f"calibration samples are named {sorted(calib_x)}, but {source.name}'s "
                              f"inputs are {sorted(shapes)}")
    arrays = {name: _checked(np.asarray(calib_x[name], np.float32), shapes[name], f"{source.name} ({name!r})")
              for name in shapes}
    if len({len(a) for a in arrays.values()}) > 1:
        raise ConversionError("calibration inputs hold different numbers of samples: "
                              + ", ".join(f"{k} {len(v)}" for k, v in arrays.items()))
    keep = _picked(len(next(iter(arrays.values()))), n)
    return {name: a[keep] for name, a in arrays.items()}


def _checked(x: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    if x.ndim < 1 or x.shape[1:] != tuple(shape) or len(x) == 0:
        raise ConversionError(
            f"calibration samples have shape {x.shape[1:]} (data shape {x.shape}) but "
            f"{what} expects {tuple(shape)}; the first axis is the sample count"
        )
    return x


def _picked(count: int, n: int) -> np.ndarray:
    """The indices pick_samples keeps, for every input alike."""
    return np.arange(count) if count <= n else np.sort(np.random.default_rng(0).permutation(count)[:n])


def _steps(calib: Calibration) -> int:
    return len(next(iter(calib.values())) if isinstance(calib, dict) else calib[0])


def representative_dataset(
    calib: Calibration, progress: Progress | None
) -> Callable[[], Iterator[list[np.ndarray] | dict[str, np.ndarray]]]:
    """One sample per step, batch dimension kept (the shape the model was exported with):
    a dict by signature input name, or a list in the model's input order."""
    count = _steps(calib)

    def samples() -> Iterator[list[np.ndarray] | dict[str, np.ndarray]]:
        for i in range(count):
            if isinstance(calib, dict):
                yield {name: a[i][None, ...] for name, a in calib.items()}
            else:
                yield [a[i][None, ...] for a in calib]
            if progress is not None:
                progress("calibration", i + 1, count)

    return samples
