"""A uniform view of the model to convert, whatever file it came from.

Four kinds: a Keras 3 ``.keras`` file, a legacy tf-keras ``.h5`` file, a TensorFlow
SavedModel folder, and an existing float ``.tflite``, with any number of inputs and
outputs. Each gives the same three things: float reference outputs by output name
(:meth:`ModelSource.reference`), a fresh TFLite converter (not for
``.tflite``: that kind is quantised with ai-edge-quantizer, see
:mod:`converter.quantization.modes`) and a plain float32 TFLite model.

TensorFlow is imported inside functions only: importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgefleet.converter.errors import ConversionError
from edgefleet.converter.tfenv import import_tensorflow

if TYPE_CHECKING:
    import tensorflow as tf

    from edgefleet.runtime import TFLiteModel
    from edgefleet.tensors import Arrays, Inputs

KINDS = ("keras", "tf_keras", "saved_model", "tflite")
SUPPORTED_INPUTS = ".keras (Keras 3), .h5/.hdf5 (tf-keras), a SavedModel folder, .tflite (float)"
_SUFFIX_KIND = {".keras": "keras", ".h5": "tf_keras", ".hdf5": "tf_keras", ".tflite": "tflite"}
_SERVING = "serving_default"
# tensor types that mean a .tflite has been quantised already (int32/int64 appear in float
# models too: shapes, indices)
_QUANTISED_TYPES = ("int8", "uint8", "int16", "float16")


@dataclass
class ModelSource:
    """One model to convert. Build it with :func:`load_model_source` or :func:`source_from_keras`."""

    kind: str
    path: Path | None
    keras_model: Any | None
    input_shape: tuple[int, ...]  # one sample of the first input, no batch dimension
    # None: the batch dimension stays dynamic. Accelerators (Edge TPU, NPU delegates) need
    # every size fixed at compile time, so their targets convert with batch_size = 1.
    batch_size: int | None = None
    input_shapes: tuple[tuple[int, ...], ...] = ()  # every input's sample shape, in model order
    _tflite_bytes: bytes | None = field(default=None, repr=False)
    _signature: Any = field(default=None, repr=False)  # SavedModel serving function
    _loaded: Any = field(default=None, repr=False)  # the SavedModel object the signature lives on
    _float_cache: bytes | None = field(default=None, repr=False)
    _reference: Any = field(default=None, repr=False)  # TFLiteModel of float_tflite()

    def __post_init__(self) -> None:
        if not self.input_shapes:
            self.input_shapes = (tuple(self.input_shape),)

    @property
    def name(self) -> str:
        if self.path is not None:
            return str(self.path)
        return f"the in-memory model {getattr(self.keras_model, 'name', '?')!r}"

    def reference_model(self) -> TFLiteModel:
        """The float32 TFLite model, loaded: what every variant is compared against.

        Running the float32 conversion (rather than Keras) names the outputs exactly as the
        variants made by the same converter name them, for every source kind."""
        from edgefleet.runtime import RuntimeLoadError, TFLiteModel

        if self._reference is None:
            try:
                self._reference = TFLiteModel(self.float_tflite())
            except RuntimeLoadError as exc:
                raise ConversionError(f"the float32 model of {self.name} does not load: {exc}") from None
        return self._reference

    def reference(self, inputs: Inputs) -> Arrays:
        """Float32 reference outputs by output name for a batch of INPUTS (by input name, in
        input order, or one array for a one-input model)."""
        from edgefleet.tensors import InputError

        try:
            outputs, _latencies = self.reference_model().run(inputs)
        except InputError as exc:
            raise ConversionError(f"{self.name}: {exc}") from None
        return outputs

    def predict(self, x: Inputs) -> np.ndarray:
        """The first output of :meth:`reference`, for callers that know the model has one."""
        return self.reference(x)[self.reference_model().outputs[0].name]

    def tflite_converter(self) -> tf.lite.TFLiteConverter:
        """A fresh TFLite converter for this model (one per conversion: they keep settings)."""
        if self.kind == "tflite":
            raise ConversionError(
                f"{self.name} is a .tflite model already: the TFLite converter cannot take it; "
                "it is quantised with ai-edge-quantizer instead (converter.quantization does this)"
            )
        tf = import_tensorflow()
        if self.kind == "saved_model":
            if self.batch_size is not None:
                raise ConversionError(
                    f"{self.name}: a fixed batch size (needed by accelerator targets) is not available "
                    "for SavedModel sources; export the SavedModel with a fixed batch dimension, or "
                    "convert from the Keras model")
            return tf.lite.TFLiteConverter.from_saved_model(str(self.path), signature_keys=[_SERVING])
        if self.batch_size is not None:
            return tf.lite.TFLiteConverter.from_keras_model(self._list_input_model())
        if isinstance(getattr(self.keras_model, "_inputs_struct", None), dict):
            # TF 2.21's converter fails on a Keras 3 model that takes a dict ("'NoneType' object
            # is not callable"): the same model behind a list of the same inputs converts
            return tf.lite.TFLiteConverter.from_keras_model(self._list_input_model())
        return tf.lite.TFLiteConverter.from_keras_model(self.keras_model)

    def _list_input_model(self) -> Any:
        """The same layers and weights behind a list of inputs named as the model's, of
        BATCH_SIZE (None: dynamic); a model that takes a dict gets one."""
        if self.kind == "tf_keras":
            import tf_keras as framework
        else:
            import keras as framework
        # the original names: the signature (and so the data files) name inputs after them
        names = [str(getattr(t, "name", "")).split(":")[0] or None for t in self.keras_model.inputs]
        inputs = [framework.Input(batch_shape=(self.batch_size, *shape), name=name)
                  for shape, name in zip(self.input_shapes, names, strict=True)]
        structure = getattr(self.keras_model, "_inputs_struct", None)
        if isinstance(structure, dict):
            index = {id(t): i for i, t in enumerate(self.keras_model.inputs)}
            by_key = {key: inputs[index[id(t)]] for key, t in structure.items()}
            return framework.Model(inputs, self.keras_model(by_key))
        return framework.Model(inputs, self.keras_model(inputs if len(inputs) > 1 else inputs[0]))

    def float_tflite(self) -> bytes:
        """Plain float32 TFLite bytes (for a .tflite source: its float32 equivalent, which
        is the file's own bytes when it has float32 weights, current op codes and a signature)."""
        if self.kind == "tflite":
            assert self._tflite_bytes is not None
            return self._tflite_bytes
        if self._float_cache is None:
            self._float_cache = run_converter(self, self.tflite_converter(), "float32")
        return self._float_cache


def run_converter(source: ModelSource, converter: Any, what: str) -> bytes:
    """converter.convert(), with the converter's refusals turned into a ConversionError."""
    with quiet_keras_export():
        try:
            return bytes(converter.convert())
        except Exception as exc:  # ConverterError, ValueError, RuntimeError...
            raise explain_converter_error(exc, source, what) from exc


def explain_converter_error(exc: BaseException, source: ModelSource, what: str) -> ConversionError:
    """A ConversionError naming the ops (and layers) the TFLite converter refused, and what to do."""
    text = str(exc)
    ops = _unsupported_ops(text)
    if not ops:
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return ConversionError(f"{what} conversion of {source.name} failed: {first[:500]}")
    layers = _layers_of(text, ops, source.keras_model)
    where = f" in layer(s) {', '.join(layers)}" if layers else ""
    return ConversionError(
        f"{what} conversion of {source.name} failed: the TFLite builtin op set has no kernel for "
        f"{', '.join(ops)}{where}. Replace those operations with TFLite-supported ones (see "
        "https://ai.google.dev/edge/litert/models/ops_compatibility), or remove the layer from the "
        "exported model; TF Select (flex) ops would need the full TensorFlow runtime on the device, "
        "which edgefleet does not ship"
    )


def _unsupported_ops(text: str) -> list[str]:
    ops: list[str] = []
    patterns = (
        r"'tf\.(\w+)' op is neither a custom op nor a flex op",
        r"TF Select ops: ([\w, ]+)",
        r"Custom ops: ([\w, ]+)",
    )
    for pattern in patterns:
        for match in re.finditer(pattern, text):
            for op in match.group(1).split(","):
                if op.strip() and op.strip() not in ops:
                    ops.append(op.strip())
    return ops


def _layers_of(text: str, ops: list[str], keras_model: Any | None) -> list[str]:
    """Layer names from the converter's locations: fused["Op:", "model/layer/Op@function"]."""
    known = {layer.name for layer in getattr(keras_model, "layers", [])}
    layers: list[str] = []
    for op in ops:
        for match in re.finditer(rf'"{re.escape(op)}:", "([^"@]+)', text):
            parts = match.group(1).split("/")
            if len(parts) < 2:
                continue
            scope = parts[-2]
            # Keras adds a "_1" (or "_N") to the name scope of a layer traced again
            base = re.sub(r"_\d+$", "", scope)
            name = scope if scope in known or base not in known else base
            if name not in layers:
                layers.append(name)
    return layers


@contextlib.contextmanager
def quiet_keras_export() -> Iterator[None]:
    """Keep Keras's "Saved artifact at /tmp/..." listing (of its temporary export) off stdout."""
    import keras

    was_enabled = keras.config.is_interactive_logging_enabled()
    keras.config.disable_interactive_logging()
    try:
        yield
    finally:
        if was_enabled:
            keras.config.enable_interactive_logging()


def load_model_source(path: str | Path) -> ModelSource:
    """Open a model file or SavedModel folder; the kind comes from the extension (or folder)."""
    path = Path(path)
    if not path.exists():
        raise ConversionError(f"model {path} does not exist; supported inputs: {SUPPORTED_INPUTS}")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ConversionError(
                f"{path} is a folder without saved_model.pb, so not a SavedModel; "
                f"supported inputs: {SUPPORTED_INPUTS}"
            )
        return _load_saved_model(path)
    kind = _SUFFIX_KIND.get(path.suffix.lower())
    if kind is None:
        raise ConversionError(
            f"cannot read {path}: unknown model extension {path.suffix or '(none)'!r}; "
            f"supported inputs: {SUPPORTED_INPUTS}"
        )
    if kind == "tflite":
        return _load_tflite(path)
    if kind == "keras":
        import keras

        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as exc:  # Keras raises many types (ValueError, OSError, TypeError...)
            raise ConversionError(f"could not load the Keras model {path}: {exc}") from exc
        return _from_keras(model, "keras", path)
    return _load_h5(path)


def _load_h5(path: Path) -> ModelSource:
    import_tensorflow()
    errors = []
    try:
        import tf_keras

        model = tf_keras.models.load_model(path, compile=False)
        return _from_keras(model, "tf_keras", path)
    except ConversionError:
        raise
    except Exception as exc:  # h5py, tf-keras deserialisation: many types
        errors.append(f"tf-keras: {exc}")
    try:
        import keras

        model = keras.models.load_model(path, compile=False)  # Keras 3 reads legacy .h5 too
        return _from_keras(model, "keras", path)
    except ConversionError:
        raise
    except Exception as exc:
        errors.append(f"Keras 3: {exc}")
    raise ConversionError(f"could not load the .h5 model {path} ({'; '.join(errors)})")


def _load_saved_model(path: Path) -> ModelSource:
    tf = import_tensorflow()
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # OSError, ValueError, tf errors
        raise ConversionError(f"could not load the SavedModel {path}: {exc}") from exc
    signatures = dict(loaded.signatures)
    if _SERVING not in signatures:
        has = ", ".join(sorted(signatures)) or "none"
        raise ConversionError(
            f"the SavedModel {path} has no {_SERVING!r} signature (signatures: {has}); export it "
            "with one, e.g. keras_model.export(path) or tf.saved_model.save(model, path, "
            f"signatures={{{_SERVING!r}: model.__call__.get_concrete_function(spec)}})"
        )
    signature = signatures[_SERVING]
    _, kwargs = signature.structured_input_signature
    if not kwargs:
        raise ConversionError(f"the SavedModel {path}'s {_SERVING!r} signature takes no inputs")
    shapes = tuple(_sample_shape(tuple(kwargs[k].shape), f"{path} (input {k!r})") for k in sorted(kwargs))
    return ModelSource("saved_model", path, None, shapes[0], input_shapes=shapes, _signature=signature,
                       _loaded=loaded)


def _load_tflite(path: Path) -> ModelSource:
    """A .tflite source: its float32 equivalent (tflite_edit.float_equivalent, on a copy)
    is both the float reference and what the quantisers start from."""
    from edgefleet.converter.tflite_edit import float_equivalent

    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ConversionError(f"{path} is not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        equivalent = float_equivalent(data)
    except Exception as exc:  # a damaged flatbuffer fails anywhere in the generated schema code
        raise ConversionError(f"cannot read {path} as a TFLite model: {type(exc).__name__}: {exc}") from exc
    from edgefleet.runtime import find_runtime

    try:
        interpreter = find_runtime("auto").interpreter(model_content=equivalent.model)
    except (ValueError, RuntimeError) as exc:
        raise ConversionError(f"the TFLite runtime cannot load {path}: {exc}") from exc
    inputs = interpreter.get_input_details()
    # float16 weights behind DEQUANTIZE are float32 in the equivalent; what is left is quantised
    quantised = sorted({
        np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()
        if np.dtype(t["dtype"]).name in _QUANTISED_TYPES
    })
    if quantised:
        raise ConversionError(
            f"{path} is quantised already (it has {', '.join(quantised)} tensors); give the float "
            "model (.tflite converted without optimisations, or the Keras/SavedModel original), or "
            f"ship this one as it is: edgefleet pack {path} --out BUNDLE.efb"
        )
    shapes = tuple(_sample_shape(tuple(None if int(d) < 0 else int(d)
                                       for d in detail.get("shape_signature", detail["shape"])), str(path))
                   for detail in inputs)
    return ModelSource("tflite", path, None, shapes[0], input_shapes=shapes, _tflite_bytes=equivalent.model)


def source_from_keras(model: Any) -> ModelSource:
    """Wrap an in-memory Keras 3 or tf-keras model."""
    module = type(model).__module__
    kind = "tf_keras" if module.startswith("tf_keras") else "keras"
    if kind == "keras":
        import keras

        if not isinstance(model, keras.Model):
            raise ConversionError(f"{type(model).__name__} is not a Keras 3 or tf-keras model")
    return _from_keras(model, kind, None)


def _from_keras(model: Any, kind: str, path: Path | None) -> ModelSource:
    name = str(path) if path is not None else f"the model {getattr(model, 'name', '')!r}"
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):  # a subclassed model that was never called
        inputs = None
    if not inputs:
        raise ConversionError(
            f"{name} has no defined input; build it with an Input layer (or call it once on data) "
            "before converting"
        )
    shapes = tuple(_sample_shape(tuple(t.shape), name) for t in inputs)
    return ModelSource(kind, path, model, shapes[0], input_shapes=shapes)


def _sample_shape(shape: tuple[Any, ...], name: str) -> tuple[int, ...]:
    """The shape of one sample; every dimension but the batch must be known."""
    if not shape:
        raise ConversionError(f"{name} takes a scalar input; a batch dimension is needed")
    sample = shape[1:]
    if any(d is None for d in sample):
        shown = "(batch, " + ", ".join("?" if d is None else str(d) for d in sample) + ")"
        raise ConversionError(
            f"{name} has dynamic input dimensions {shown}; the input must have a static shape "
            "except the batch: rebuild or re-export the model with a fixed input size, "
            "e.g. keras.Input((96, 96, 3))"
        )
    return tuple(int(d) for d in sample)
