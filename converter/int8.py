"""Keras model in, TFLite bytes out: full-integer int8 quantisation (and plain float32).

One function per quantisation mode keeps the seam for the modes that come later
(float16, dynamic range, 16x8): each takes a model (plus what it needs) and returns
TFLite bytes; :mod:`converter.build` picks one by name.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

# Must be set before TensorFlow is imported to take effect. It silences the C++ INFO
# and WARNING lines emitted after start-up; errors still show. (The few lines TF prints
# while loading, before absl logging is initialised, ignore it: an abseil limitation.)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from converter.errors import ConversionError

KERAS_SUFFIXES = (".keras", ".h5")
IO_DTYPES = {"int8": tf.int8, "uint8": tf.uint8}


def framework_versions() -> dict[str, str]:
    return {"tensorflow": tf.__version__, "keras": keras.__version__}


def load_keras_model(path: str | Path) -> keras.Model:
    """Load a Keras 3 `.keras` or legacy `.h5` model (for inference: not compiled)."""
    path = Path(path)
    if not path.exists():
        raise ConversionError(f"model file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in KERAS_SUFFIXES:
        raise ConversionError(
            f"cannot read {path}: only Keras models ({', '.join(KERAS_SUFFIXES)}) are supported "
            "so far; SavedModel folders and float .tflite input arrive in a later release"
        )
    if not path.is_file():
        raise ConversionError(f"model path {path} is not a file")
    try:
        # compile=False: the optimizer and loss are not needed and may not deserialise
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types (ValueError, OSError, TypeError...)
        raise ConversionError(f"could not load the Keras model {path}: {exc}") from exc
    return model


def check_model_input(model: keras.Model, x: np.ndarray, what: str) -> None:
    """Raise a clear error when X's sample shape does not fit the model's single input."""
    if len(model.inputs) != 1:
        raise ConversionError(
            f"the model has {len(model.inputs)} inputs; only single-input models are supported"
        )
    expected = tuple(model.inputs[0].shape[1:])
    got = tuple(x.shape[1:])
    fits = len(expected) == len(got) and all(
        e is None or e == g for e, g in zip(expected, got, strict=True)
    )
    if not fits:
        raise ConversionError(
            f"{what} samples have shape {got} but the model expects {expected} "
            f"(data shape {tuple(x.shape)}: the first axis is the sample count)"
        )


def convert_float(model: keras.Model) -> bytes:
    """Plain float32 TFLite (the size baseline the quantised model is compared with)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with _quiet_keras_export():
        try:
            return converter.convert()
        except Exception as exc:  # ConverterError, ValueError, RuntimeError...
            raise ConversionError(f"float32 conversion failed: {exc}") from exc


def convert_int8(
    model: keras.Model, calib_x: np.ndarray, samples: int = 200, io_dtype: str = "int8"
) -> bytes:
    """Full-integer quantisation: int8 weights and activations, int8 (or uint8) input/output.

    Activation ranges are calibrated on up to SAMPLES inputs from CALIB_X, which must look
    like real inputs (same preprocessing); labels are not needed.
    """
    if io_dtype not in IO_DTYPES:
        raise ConversionError(f"io_dtype {io_dtype!r} is not one of {sorted(IO_DTYPES)}")
    if samples < 1:
        raise ConversionError(f"calibration needs at least one sample (asked for {samples})")
    check_model_input(model, calib_x, "calibration")
    calib = _pick(np.asarray(calib_x, dtype=np.float32), samples)

    def representative_dataset() -> Iterator[list[np.ndarray]]:
        # one sample per step, batch dimension kept: the shape the model was exported with
        for sample in calib:
            yield [sample[None, ...]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    # only int8 kernels: conversion fails loudly instead of leaving float ops behind
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = IO_DTYPES[io_dtype]
    converter.inference_output_type = IO_DTYPES[io_dtype]
    with _quiet_keras_export(), warnings.catch_warnings():
        # emitted on every full-int conversion although the representative dataset
        # provides those statistics; it never signals a problem here
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        try:
            return converter.convert()
        except Exception as exc:  # ConverterError, ValueError, RuntimeError...
            raise ConversionError(f"int8 conversion failed: {exc}") from exc


def _pick(x: np.ndarray, n: int) -> np.ndarray:
    """N samples in a fixed pseudo-random order: files sorted by class still calibrate evenly."""
    if len(x) <= n:
        return x
    order = np.random.default_rng(0).permutation(len(x))[:n]
    return x[np.sort(order)]


@contextlib.contextmanager
def _quiet_keras_export() -> Iterator[None]:
    """Keep Keras's "Saved artifact at /tmp/..." listing (of its temporary export) off stdout.

    With interactive logging off Keras sends those lines to absl INFO, hidden by default.
    """
    was_enabled = keras.config.is_interactive_logging_enabled()
    keras.config.disable_interactive_logging()
    try:
        yield
    finally:
        if was_enabled:
            keras.config.enable_interactive_logging()
