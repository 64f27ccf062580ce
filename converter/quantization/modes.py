"""Quantise a :class:`~converter.sources.ModelSource` in one of five modes.

=========  ==========================================  =========================================
mode       Keras / tf-keras / SavedModel (converter)   float .tflite (ai-edge-quantizer)
=========  ==========================================  =========================================
float32    plain conversion                            the file as it is
dynamic    int8 weights, float activations             recipe dynamic_wi8_afp32
float16    float16 weights                             weight-only float casting to float16
int8       int8 weights and activations, calibrated    recipe static_wi8_ai8 (int8 I/O only)
int16x8    int16 activations, int8 weights             recipe static_wi8_ai16 (int16 I/O only)
=========  ==========================================  =========================================

Models that are already TFLite cannot go through the TFLite converter again (it reads
Keras models, SavedModels and concrete functions only), so they are quantised with
ai-edge-quantizer, the LiteRT quantizer the LiteRT documentation recommends for
already-converted float models. Everything of that path is in this module (the
``_aeq_*`` functions); what it cannot do (uint8 or float input/output in the integer
modes, denylisted nodes, sparsity) raises a ConversionError that says so.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgefleet.converter.errors import ConversionError
from edgefleet.converter.quantization.calibration import (
    Calibration,
    calibration_samples,
    representative_dataset,
)
from edgefleet.converter.sources import (
    ModelSource,
    explain_converter_error,
    quiet_keras_export,
    run_converter,
)
from edgefleet.converter.tfenv import import_tensorflow

MODES = ("float32", "dynamic", "float16", "int8", "int16x8")
CALIBRATED_MODES = ("int8", "int16x8")
# mode -> allowed io_dtype values, the first being the default (None)
IO_DTYPES: dict[str, tuple[str, ...]] = {
    "float32": ("float32",),
    "dynamic": ("float32",),
    "float16": ("float32",),
    "int8": ("int8", "uint8", "float32"),
    "int16x8": ("float32", "int16"),
}
# what the ai-edge-quantizer path can produce (its static recipes quantise the model's
# inputs and outputs too)
AEQ_IO_DTYPES: dict[str, tuple[str, ...]] = {
    "float32": ("float32",),
    "dynamic": ("float32",),
    "float16": ("float32",),
    "int8": ("int8",),
    "int16x8": ("int16",),
}
AEQ_CALIBRATION_STEPS = 10  # progress reports during ai-edge-quantizer calibration

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class QuantOptions:
    mode: str
    # int8: "int8" (default) | "uint8" | "float32"; int16x8: "float32" (default) | "int16";
    # other modes: None or "float32". A .tflite source takes only what AEQ_IO_DTYPES lists
    # (there None means that).
    io_dtype: str | None = None
    calibration_samples: int = 200
    per_channel: bool = True
    # int8 only: output tensor names of the ops to keep in float (from the
    # QuantizationDebugger's layer statistics); their neighbours get float fallback kernels
    denylisted_nodes: tuple[str, ...] = ()
    sparsity: bool = False  # add Optimize.EXPERIMENTAL_SPARSITY (for pruned models)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConversionError(
                f"unknown quantisation mode {self.mode!r}; choose one of {', '.join(MODES)}"
            )
        allowed = IO_DTYPES[self.mode]
        if self.io_dtype is not None and self.io_dtype not in allowed:
            raise ConversionError(
                f"input/output type {self.io_dtype!r} does not go with mode {self.mode}; "
                f"choose one of {', '.join(allowed)}"
            )
        if self.calibration_samples < 1:
            raise ConversionError(
                f"calibration needs at least one sample (asked for {self.calibration_samples})"
            )
        if self.denylisted_nodes and self.mode != "int8":
            raise ConversionError(f"denylisted nodes apply to mode int8 only (mode is {self.mode})")

    def resolved_io_dtype(self, source_kind: str) -> str:
        """The input/output type the model will have (the default resolved)."""
        if source_kind == "tflite":
            allowed = AEQ_IO_DTYPES[self.mode]
            if self.io_dtype is not None and self.io_dtype not in allowed:
                raise ConversionError(
                    f"a .tflite source is quantised with ai-edge-quantizer, which in mode {self.mode} "
                    f"makes {allowed[0]} input/output only, not {self.io_dtype}; leave the "
                    "input/output type unset, or convert from the Keras/SavedModel original instead"
                )
            return allowed[0]
        return self.io_dtype or IO_DTYPES[self.mode][0]


def quantize(
    source: ModelSource,
    calib_x: np.ndarray | Mapping[str, np.ndarray] | None,
    options: QuantOptions,
    progress: Progress | None = None,
) -> bytes:
    """TFLite bytes of SOURCE in OPTIONS.mode; int8 and int16x8 calibrate on CALIB_X: one
    array (a one-input model) or arrays by input name (the float32 model's names).

    PROGRESS, if given, is called as progress("calibration", done, total).
    """
    io_dtype = options.resolved_io_dtype(source.kind)
    calib = None
    if options.mode in CALIBRATED_MODES:
        if calib_x is None:
            raise ConversionError(
                f"mode {options.mode} needs calibration data: a sample of real inputs "
                "(.npz/.npy or an image folder), preprocessed like the inputs the model will see"
            )
        calib = calibration_samples(source, calib_x, options.calibration_samples)
    if source.kind == "tflite":
        if isinstance(calib, list):  # one input: _aeq_calibrate takes its array as it is
            return _aeq_quantize(source, calib[0], options, progress)
        return _aeq_quantize(source, calib, options, progress)
    return _converter_quantize(source, calib, options, io_dtype, progress)


# --- Keras, tf-keras and SavedModel sources: the TFLite converter ---------------------------


def _converter_quantize(
    source: ModelSource,
    calib: Calibration | None,
    options: QuantOptions,
    io_dtype: str,
    progress: Progress | None,
) -> bytes:
    tf = import_tensorflow()
    if options.mode == "float32" and not options.sparsity:
        return source.float_tflite()
    converter = source.tflite_converter()
    optimizations = [] if options.mode == "float32" else [tf.lite.Optimize.DEFAULT]
    if options.sparsity:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if options.mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if not options.per_channel:
        if not hasattr(converter, "_experimental_disable_per_channel"):
            raise ConversionError(
                f"this TensorFlow ({tf.__version__}) has no switch for per-tensor quantisation; "
                "leave per-channel on"
            )
        converter._experimental_disable_per_channel = True
    if calib is not None:
        if isinstance(calib, dict) and source.reference_model().signature is None:
            calib = [calib[s.name] for s in source.reference_model().inputs]  # no names to key by
        converter.representative_dataset = representative_dataset(calib, progress)
        if options.mode == "int16x8":
            ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
            io_type = tf.int16
        else:
            ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            io_type = {"int8": tf.int8, "uint8": tf.uint8}.get(io_dtype)
        if options.denylisted_nodes:
            return _int8_with_float_nodes(source, converter, calib, options, io_dtype, progress)
        # only integer kernels: conversion fails loudly instead of leaving float ops behind
        converter.target_spec.supported_ops = ops
        if io_type is not None and io_dtype != "float32":
            converter.inference_input_type = io_type
            converter.inference_output_type = io_type
    with warnings.catch_warnings():
        # emitted on every full-int conversion although the representative dataset
        # provides those statistics; it never signals a problem here
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        return run_converter(source, converter, options.mode)


def _int8_with_float_nodes(
    source: ModelSource,
    converter: Any,
    calib: Calibration,
    options: QuantOptions,
    io_dtype: str,
    progress: Progress | None,
) -> bytes:
    """int8 with DENYLISTED_NODES left in float, through TensorFlow's QuantizationDebugger.

    The debugger quantises the calibrated model itself: fully_quantize gives it int8
    input/output, without it they stay float32; uint8 gets TensorFlow's own I/O rewrite of
    the float-I/O model (what the converter does for inference_input_type=uint8).
    """
    tf = import_tensorflow()
    # float kernels must be allowed next to the int8 ones for the nodes kept in float
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS,
    ]
    debug_options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=list(options.denylisted_nodes), fully_quantize=io_dtype == "int8"
    )
    dataset = representative_dataset(calib, progress)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        # the debugger still loads models with tf.lite.Interpreter, which warns it is deprecated
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        try:
            with quiet_keras_export():
                debugger = tf.lite.experimental.QuantizationDebugger(
                    converter=converter, debug_dataset=dataset, debug_options=debug_options
                )
                model = debugger.get_nondebug_quantized_model()
            if io_dtype == "uint8":
                from tensorflow.lite.python.util import modify_model_io_type

                model = modify_model_io_type(model, tf.uint8, tf.uint8)
        except Exception as exc:
            raise explain_converter_error(exc, source, "int8 (with float nodes)") from exc
    model = bytes(model)
    from edgefleet.runtime import find_runtime

    interpreter = find_runtime("auto").interpreter(model_content=model)
    edges = (*interpreter.get_input_details(), *interpreter.get_output_details())
    got = {np.dtype(d["dtype"]).name for d in edges}
    if got != {io_dtype}:
        raise ConversionError(
            f"with {', '.join(options.denylisted_nodes)} kept in float the model has "
            f"{', '.join(sorted(got))} "
            f"input/output, not {io_dtype}: a layer next to the input or output cannot stay float with "
            f"{io_dtype} input/output; keep other layers in float or use float32 input/output"
        )
    return model


# --- float .tflite sources: ai-edge-quantizer ----------------------------------------------
# The TFLite converter cannot read a .tflite, so an already-converted float model is
# quantised with ai-edge-quantizer (AEQ), which rewrites the flatbuffer directly.


def _aeq_quantize(
    source: ModelSource, calib: Calibration | np.ndarray | None, options: QuantOptions,
    progress: Progress | None,
) -> bytes:
    float_model = source.float_tflite()
    if options.mode == "float32":
        if options.sparsity:
            raise ConversionError(_aeq_cannot("sparsity (EXPERIMENTAL_SPARSITY)"))
        return float_model
    if options.sparsity:
        raise ConversionError(_aeq_cannot("sparsity (EXPERIMENTAL_SPARSITY)"))
    if options.denylisted_nodes:
        raise ConversionError(_aeq_cannot("keeping chosen layers in float (denylisted nodes)"))
    try:
        from ai_edge_quantizer import qtyping, quantizer, recipe_manager
        from ai_edge_quantizer.algorithm_manager import AlgorithmName
    except ImportError as exc:
        raise ConversionError(
            f"quantising a .tflite needs ai-edge-quantizer ({exc}); pip install 'edgefleet[converter]'"
        ) from exc

    granularity = qtyping.QuantGranularity.CHANNELWISE if options.per_channel else (
        qtyping.QuantGranularity.TENSORWISE
    )
    every_op = qtyping.TFLOperationName.ALL_SUPPORTED
    recipes = recipe_manager.RecipeManager()
    if options.mode == "dynamic":
        recipes.add_dynamic_config(".*", every_op, num_bits=8, granularity=granularity)
    elif options.mode == "float16":
        # weight-only float casting: float16 weights, dequantised to float32 for the kernels
        # (what the TFLite converter's float16 mode produces)
        recipes.add_weight_only_config(
            ".*", every_op, num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING
        )
    else:
        recipes.add_static_config(
            ".*", every_op, activation_num_bits=8 if options.mode == "int8" else 16,
            weight_num_bits=8, weight_granularity=granularity,
        )
    with warnings.catch_warnings():
        # AEQ's calibration interpreter keeps every tensor (it needs them); LiteRT warns about it
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
        try:
            qt = quantizer.Quantizer(bytearray(float_model), recipes.get_quantization_recipe())
            result = None
            if qt.need_calibration:
                assert calib is not None
                result = _aeq_calibrate(qt, float_model, calib, progress)
            # its model modifier draws a tqdm bar on stderr whatever enable_progress_bar says
            with contextlib.redirect_stderr(io.StringIO()):
                quantized = qt.quantize(result, enable_progress_bar=False,
                                        enable_progress_report=False).quantized_model
        except ConversionError:
            raise
        except Exception as exc:  # AEQ raises ValueError, RuntimeError, KeyError...
            raise ConversionError(
                f"ai-edge-quantizer could not quantise {source.name} in mode {options.mode}: {exc}. "
                "Converting from the Keras or SavedModel original (TFLite converter) may work instead"
            ) from exc
    if quantized is None:
        raise ConversionError(f"ai-edge-quantizer returned no model for {source.name}")
    return bytes(quantized)


def _aeq_cannot(what: str) -> str:
    return (
        f"{what} is not available for a .tflite source (quantised with ai-edge-quantizer); "
        "convert from the Keras or SavedModel original instead"
    )


def _aeq_calibrate(qt: Any, float_model: bytes, calib: Any, progress: Progress | None) -> Any:
    """Calibrate in a few chunks (results carried over) so that progress can be reported.

    CALIB is one array (a one-input model) or arrays by input name; the names are the
    signature's, which for a .tflite source are its tensor names (tflite_edit adds the
    signature where the file has none).
    """
    from edgefleet.runtime import find_runtime

    interpreter = find_runtime("auto").interpreter(model_content=float_model)
    signatures = interpreter.get_signature_list()
    if not signatures:
        raise ConversionError(
            "ai-edge-quantizer calibrates through a model signature and this .tflite has none; "
            "load it with converter.sources.load_model_source, which adds one"
        )
    key = "serving_default" if "serving_default" in signatures else sorted(signatures)[0]
    names = list(signatures[key]["inputs"])
    if isinstance(calib, dict):
        if sorted(calib) != sorted(names):
            raise ConversionError(f"calibration data has inputs {sorted(calib)}, the model {sorted(names)}")
        arrays = {name: np.asarray(calib[name], dtype=np.float32) for name in names}
    elif len(names) == 1:
        arrays = {names[0]: np.asarray(calib, dtype=np.float32)}
    else:
        raise ConversionError(f"the model has {len(names)} inputs ({', '.join(names)}): give calibration "
                              "data for each, by name")
    count = len(next(iter(arrays.values())))
    step = max(1, -(-count // AEQ_CALIBRATION_STEPS))
    result = None
    for start in range(0, count, step):
        chunk = [{name: a[i][None, ...] for name, a in arrays.items()}
                 for i in range(start, min(start + step, count))]
        # AEQ draws a tqdm bar on stderr for larger models; progress goes through PROGRESS
        with contextlib.redirect_stderr(io.StringIO()):
            result = qt.calibrate({key: chunk}, previous_calibration_result=result)
        if progress is not None:
            progress("calibration", min(start + step, count), count)
    return result
