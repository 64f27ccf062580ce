"""Which layers int8 quantisation hurts most, and keeping the worst of them in float.

Built on TensorFlow's ``tf.lite.experimental.QuantizationDebugger``: it converts the model
once with calibration statistics only, then quantises it with a ``NumericVerify`` op after
every quantised op. Each of those ops runs the float version of the op on the same
(dequantised) input and reports the difference, so every layer's own error is measured,
not the error it inherits. The debugger's per-layer statistics (TF 2.21) are
``num_elements``, ``stddev``, ``mean_error``, ``max_abs_error`` and ``mean_squared_error``
(each averaged over the debug samples), plus the tensor's ``scale`` and ``zero_point``;
we add ``mean_abs_error``. Layers are ranked by RMSE / scale, the metric TensorFlow's
debugger guide uses: the error in quantisation steps, about 0.29 for plain rounding and far
more for a layer whose weights or activations do not fit int8.

``--keep-float-layers auto`` (:func:`keep_float_layers_until`) denylists the worst layers
one at a time (``QuantizationDebugOptions(denylisted_nodes=...)``): those ops keep float
weights and kernels (plain TFLite builtins), quantise/dequantise ops are placed around them,
and the model's input and output stay int8 (or uint8).

The instrumented model always has float input and output, whatever the deployed model gets:
TensorFlow's debugger (2.21 and before) reads a quantisation of its int8 input whose zero
point is 0 as no quantisation at all (``_get_quant_params`` tests the numpy arrays' truth)
and hands the float samples to the int8 input as they are, which fails with "Cannot set
tensor: Got value of type FLOAT32 but expected type INT8". Inputs in -1..1, MobileNetV2's
range, calibrate to exactly that zero point. Float I/O measures the same layers with nearly
the same figures: the model's QUANTIZE op rounds the input instead of the debugger's NumPy
code (MobileNetV2 0.35/96 on 16 random inputs in 0..1: 65 layers either way; the first
conv's mean squared error differs by 12 %, every other layer's by under 1 %).

Any other failure of the debugger is a :class:`DebuggerError`; the ranking only informs
the report, so the pipeline goes on without it unless keep-float needs it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgefleet.converter.errors import ConversionError
from edgefleet.converter.quantization.gate import GateResult
from edgefleet.converter.tfenv import import_tensorflow

# the converter factory: a fresh tf.lite.TFLiteConverter for the float model on every call
ConverterFactory = Callable[[], Any]
IO_DTYPES = ("int8", "uint8")
DEFAULT_SAMPLES = 100
_NUMERIC_VERIFY = "NumericVerify"  # the debug op the debugger inserts after each quantised op
# Whether the instrumented model gets int8 input/output: never, see the module's docstring.
INSTRUMENTED_INT8_IO = False


class DebuggerError(ConversionError):
    """TensorFlow's QuantizationDebugger could not measure the model's layers."""


@dataclass(frozen=True)
class LayerError:
    """One quantised op's own error, as the QuantizationDebugger measured it."""

    name: str  # the op's output tensor name: what denylisted_nodes takes
    op: str  # TFLite op, e.g. CONV_2D, FULLY_CONNECTED
    scale: float  # quantisation step of the op's output
    rmse_over_scale: float  # sqrt(mean_squared_error) / scale: the error in quantisation steps
    mean_abs_error: float  # in the output's float units
    numeric_verify: str = ""  # the debugger's NumericVerify tensor for this op (its statistics key)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class KeepFloatResult:
    """What ``--keep-float-layers auto`` did: the model it settled on and every attempt."""

    model: bytes  # the passing model, or when none passed the attempt with the smallest drop
    kept: list[str]  # node names kept in float in MODEL, worst first
    history: list[tuple[list[str], GateResult]] = field(default_factory=list)
    passed: bool = False
    message: str = ""
    layers: list[LayerError] = field(default_factory=list)  # the debugger's ranking

    def as_dict(self) -> dict[str, Any]:
        """Everything but the model bytes, for report.json."""
        return {
            "kept": list(self.kept), "passed": self.passed, "message": self.message,
            "history": [{"kept": list(kept), "gate": gate.as_dict()} for kept, gate in self.history],
            "layers": [layer.as_dict() for layer in self.layers],
        }


def layer_errors(
    converter_factory: ConverterFactory, calib_x: np.ndarray, samples: int = DEFAULT_SAMPLES
) -> list[LayerError]:
    """Every quantised op's error on up to SAMPLES inputs from CALIB_X, worst first.

    CONVERTER_FACTORY returns a fresh ``tf.lite.TFLiteConverter`` for the float model (e.g.
    ``lambda: tf.lite.TFLiteConverter.from_keras_model(model)``); optimisation and the
    representative dataset are set here. The same samples calibrate and measure.
    """
    _debugger, errors = _run_debugger(converter_factory, calib_x, samples)
    return errors


def keep_float_layers_until(
    converter_factory: ConverterFactory,
    calib_x: np.ndarray,
    evaluate: Callable[[bytes], GateResult],
    io_dtype: str = "int8",
    max_layers: int = 10,
    progress: Callable[[str], None] | None = None,
    samples: int = DEFAULT_SAMPLES,
) -> KeepFloatResult:
    """Quantise fully; while EVALUATE fails, keep the next worst layer in float (up to MAX_LAYERS).

    EVALUATE takes TFLite bytes and returns the accuracy gate's verdict (see
    :func:`converter.quantization.gate.check_accuracy_drop`). Layers are added in the order of
    :func:`layer_errors`; a layer whose denylisting changes nothing, or (uint8 only) would
    turn the model's input or output into float, is skipped and named in the message.
    The result's ``model`` is the first passing model; when none
    passes, the attempt with the smallest drop (fewest float layers on a tie), and
    ``passed`` is False with a message saying how close it came. Input and output are
    IO_DTYPE ("int8" or "uint8") in every attempt. Raises :class:`DebuggerError` when the
    debugger cannot rank the layers: then no layer can be chosen.
    """
    if io_dtype not in IO_DTYPES:
        raise ConversionError(f"io_dtype {io_dtype!r} is not one of {list(IO_DTYPES)}")
    if max_layers < 0:
        raise ConversionError(f"max_layers must be 0 or more (got {max_layers})")
    say = progress or (lambda _message: None)
    say(f"measuring each layer's int8 error with the quantization debugger ({samples} samples at most)")
    debugger, ranking = _run_debugger(converter_factory, calib_x, samples)
    if ranking:
        worst = ", ".join(f"{e.name} ({e.op}, {e.rmse_over_scale:.2f})" for e in ranking[:3])
        say(f"worst layers by RMSE/scale: {worst}")

    history: list[tuple[list[str], GateResult]] = []
    models: list[bytes] = []
    kept: list[str] = []
    skipped: list[str] = []  # layers that could not be kept in float (see _next_layer)
    pending = list(ranking)
    model = _quantized_model(debugger, kept, io_dtype)
    while True:
        gate = evaluate(model)
        history.append((list(kept), gate))
        models.append(model)
        say(f"{_layers(len(kept))} in float: {gate.message}")
        if gate.passed:
            return KeepFloatResult(model, list(kept), history, True, _passed_message(kept, gate), ranking)
        if len(kept) >= max_layers:
            break
        found = _next_layer(debugger, kept, model, pending, io_dtype, skipped, say)
        if found is None:
            break
        name, model = found
        kept.append(name)

    best = min(range(len(history)), key=lambda i: (history[i][1].drop_pp, i))
    best_kept, gate = history[best]
    if len(kept) >= max_layers:
        limit = f"even with {_layers(len(kept))} in float (max_layers {max_layers})"
    else:
        limit = f"with every layer the debugger measured in float ({_layers(len(kept))})"
    if skipped:
        limit = limit[:-1] + f"; {', '.join(skipped)} could not be kept in float)"
    message = (
        f"could not reach the {gate.max_drop_pp:g} pp accuracy budget {limit}; best was "
        f"{_layers(len(best_kept))} in float{_names(best_kept)}: {gate.message}"
    )
    return KeepFloatResult(models[best], best_kept, history, False, message, ranking)


def _next_layer(
    debugger: Any, kept: list[str], model: bytes, pending: list[LayerError], io_dtype: str,
    skipped: list[str], say: Callable[[str], None],
) -> tuple[str, bytes] | None:
    """The next layer of PENDING that can be kept in float on top of KEPT, and the new model.

    The debugger derives a node name from its NumericVerify tensor by dropping one trailing
    digit (a suffix TensorFlow adds to keep names unique); for a name that itself ends in a
    digit, such as "StatefulPartitionedCall:0", that guess is wrong and denylisting it
    silently changes nothing. So a name only counts when the model changes, and the
    NumericVerify name is tried second. Layers that change nothing under either name, or
    that would turn a uint8 input/output into float, are skipped.
    """
    while pending:
        layer = pending.pop(0)
        for name in _node_names(layer):
            try:
                candidate = _quantized_model(debugger, [*kept, name], io_dtype)
            except _IOTypeLost as exc:  # uint8 I/O only: a layer at the input or output
                say(f"{exc}; trying the next layer")
                skipped.append(layer.name)
                break
            if candidate != model:
                return name, candidate
        else:
            say(f"keeping {layer.name} in float changes nothing in the model; trying the next layer")
            skipped.append(layer.name)
    return None


def _node_names(layer: LayerError) -> list[str]:
    """Names that may denylist LAYER: the debugger's own, then its NumericVerify tensor's base."""
    names = [layer.name]
    prefix = _NUMERIC_VERIFY + "/"
    if layer.numeric_verify.startswith(prefix):
        base = layer.numeric_verify[len(prefix):].rsplit(":", 1)[0]
        if base and base not in names:
            names.append(base)
    return names


def _passed_message(kept: list[str], gate: GateResult) -> str:
    what = "top-1" if gate.measure == "top1" else "agreement"
    drop = f"{what} drop {gate.drop_pp:.1f} pp, within {gate.max_drop_pp:g} pp"
    if not kept:
        return f"kept no layers in float: full int8 already passes ({drop})"
    return f"kept {_layers(len(kept))} in float{_names(kept)}: {drop}"


def _layers(n: int) -> str:
    return f"{n} layer" if n == 1 else f"{n} layers"


def _names(kept: list[str]) -> str:
    return f" ({', '.join(kept)})" if kept else ""


def _run_debugger(
    converter_factory: ConverterFactory, calib_x: np.ndarray, samples: int
) -> tuple[Any, list[LayerError]]:
    """A QuantizationDebugger that has run over the samples, and its layers worst first.

    Raises :class:`DebuggerError` for anything the debugger (or reading its results) fails on.
    """
    from edgefleet.converter.sources import quiet_keras_export
    from edgefleet.converter.tfutil import pick_samples

    tf = import_tensorflow()
    if samples < 1:
        raise ConversionError(f"the quantization debugger needs at least one sample (asked for {samples})")
    calib = pick_samples(np.asarray(calib_x, dtype=np.float32), samples)
    if len(calib) == 0:
        raise ConversionError("the quantization debugger got no calibration samples")

    def dataset() -> Iterator[list[np.ndarray]]:
        for sample in calib:  # one sample per step, batch dimension kept (as convert_int8 does)
            yield [sample[None, ...]]

    converter = converter_factory()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = dataset
    options = tf.lite.experimental.QuantizationDebugOptions(
        layer_debug_metrics={"mean_abs_error": lambda diff: float(np.mean(np.abs(diff)))},
        fully_quantize=INSTRUMENTED_INT8_IO,
    )
    with _quiet_tf():
        try:
            with quiet_keras_export():
                debugger = tf.lite.experimental.QuantizationDebugger(
                    converter=converter, debug_dataset=dataset, debug_options=options
                )
            debugger.run()
            dump = io.StringIO()
            debugger.layer_statistics_dump(dump)
            # the dump writes one row per layer_statistics entry, in that order
            ranking = _parse_dump(dump.getvalue(), list(debugger.layer_statistics))
        except Exception as exc:  # ConverterError, ValueError ("not in debug mode"), RuntimeError...
            raise DebuggerError(f"TensorFlow's QuantizationDebugger failed on this model: "
                                f"{_first_line(exc)}") from exc
    return debugger, ranking


def _first_line(exc: BaseException) -> str:
    """The gist of an exception: TensorFlow's converter errors run to pages of MLIR locations."""
    text = str(exc).strip()
    first = text.splitlines()[0].strip() if text else ""
    return f"{type(exc).__name__}: {first[:400]}" if first else type(exc).__name__


def _parse_dump(text: str, keys: list[str]) -> list[LayerError]:
    """LayerErrors from the debugger's CSV dump, worst RMSE/scale first (unmeasurable last)."""
    errors = []
    rows = list(csv.DictReader(io.StringIO(text)))
    if len(rows) != len(keys):
        keys = [""] * len(rows)
    for row, key in zip(rows, keys, strict=True):
        scale = float(row["scale"])
        rmse = math.sqrt(max(float(row["mean_squared_error"]), 0.0))
        ratio = rmse / scale if scale > 0 else math.nan
        errors.append(LayerError(
            name=row["tensor_name"], op=row["op_name"], scale=scale,
            rmse_over_scale=ratio, mean_abs_error=float(row["mean_abs_error"]), numeric_verify=key,
        ))
    return sorted(errors, key=lambda e: -e.rmse_over_scale if math.isfinite(e.rmse_over_scale) else math.inf)


def _quantized_model(debugger: Any, kept: list[str], io_dtype: str) -> bytes:
    """The deployable (non-debug) model with KEPT nodes in float and IO_DTYPE input/output."""
    from edgefleet.runtime import RuntimeLoadError, TFLiteModel

    tf = import_tensorflow()

    # get_nondebug_quantized_model() quantises the calibrated model with these two options.
    # They are changed in place: assigning new options would also rebuild the instrumented
    # debug model, which is slow and fails once every measured layer is denylisted.
    # fully_quantize makes the quantizer give the model int8 input and output itself; for
    # uint8 the float-I/O model gets TensorFlow's own I/O rewrite (as the converter does).
    debugger.options.denylisted_nodes = list(kept) or None
    debugger.options.fully_quantize = io_dtype == "int8"
    with _quiet_tf():
        try:
            model = debugger.get_nondebug_quantized_model()
            if io_dtype == "uint8":
                from tensorflow.lite.python.util import modify_model_io_type

                model = modify_model_io_type(model, tf.uint8, tf.uint8)
        except Exception as exc:  # ConverterError, ValueError, RuntimeError...
            what = f"{_layers(len(kept))} in float{_names(kept)}" if kept else "no layers in float"
            raise ConversionError(f"quantising with {what} failed: {exc}") from exc
    model = bytes(model)
    try:
        loaded = TFLiteModel(model)  # the device's runtime must take it as it is
    except RuntimeLoadError as exc:
        what = f"with {_layers(len(kept))} in float{_names(kept)}" if kept else "quantised fully"
        raise ConversionError(f"the model {what} does not load: {exc}") from exc
    dtypes = {spec.dtype for spec in loaded.inputs + loaded.outputs}
    if dtypes != {io_dtype}:
        raise _IOTypeLost(
            f"keeping{_names(kept)} in float left the model's input/output as {sorted(dtypes)} instead of "
            f"{io_dtype}; a layer next to the input or output cannot stay float with {io_dtype} I/O"
        )
    return model


class _IOTypeLost(ConversionError):
    """Keeping a layer in float changed the model's input or output type."""


@contextlib.contextmanager
def _quiet_tf() -> Iterator[None]:
    """Hide warnings the debugger triggers on every run and that never signal a problem here.

    tf.lite.Interpreter's deprecation notice (the debugger runs TensorFlow's interpreter), and
    the quantizer's note about input statistics, which the representative dataset provides.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated")
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        yield
