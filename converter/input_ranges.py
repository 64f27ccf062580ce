"""The input range a model implies, where it can be told: a Keras model whose first layer on
an input is ``Rescaling`` or ``Normalization``, or a .tflite whose TFLite metadata
(``TFLITE_METADATA``, tensorflow/lite/schema/metadata_schema.fbs) gives the input tensor's
``Stats`` (min/max) or ``NormalizationOptions`` (mean/std). Anything else (SavedModels,
models without such layers or metadata) implies nothing we can read, and says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgefleet.converter.data.ranges import ExpectedRange, ValueRange
from edgefleet.tensors import TensorSpec

_METADATA = b"TFLITE_METADATA"


def expected_input_ranges(source: Any, specs: list[TensorSpec]) -> tuple[dict[str, ExpectedRange], str]:
    """Input name -> the range the model implies, and a note on where it came from (or why
    nothing could be told)."""
    try:
        if source.keras_model is not None:
            found = _keras_ranges(source.keras_model, specs)
            what = "the model has no Rescaling or Normalization layer first on an input"
        elif source.kind == "tflite":
            found = _metadata_ranges(source.float_tflite(), specs)
            what = "the model has no TFLite metadata with input statistics or normalisation"
        else:
            return {}, f"not checked: a {source.kind} source carries no layers or metadata we read"
    except Exception as exc:  # a model we cannot introspect must not stop a conversion
        return {}, f"not checked: reading the model's input layers failed ({type(exc).__name__}: {exc})"
    if not found:
        return {}, f"not checked: {what}"
    return found, "; ".join(f"{name}: {r.range.text()} ({r.why})" for name, r in found.items())


# --- Keras ---------------------------------------------------------------------------------


def _keras_ranges(model: Any, specs: list[TensorSpec]) -> dict[str, ExpectedRange]:
    inputs = list(model.inputs)
    names = _names_for(inputs, specs)
    found: dict[str, ExpectedRange] = {}
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in ("Rescaling", "Normalization"):
            continue
        try:
            feeding = layer.input
        except (AttributeError, ValueError):  # a layer used more than once, or never
            continue
        for tensor, name in zip(inputs, names, strict=True):
            if feeding is tensor and name not in found:
                implied = _rescaling(layer) if kind == "Rescaling" else _normalization(layer)
                if implied is not None:
                    found[name] = implied
    return found


def _names_for(inputs: list[Any], specs: list[TensorSpec]) -> list[str]:
    """The reference model's input names for Keras' inputs: by name, else by order."""
    by_name = {s.name for s in specs}
    names = [str(getattr(t, "name", "")).split(":")[0] for t in inputs]
    if set(names) <= by_name:
        return names
    return [s.name for s in specs][: len(inputs)]


def _rescaling(layer: Any) -> ExpectedRange | None:
    scale = float(np.mean(np.asarray(layer.scale, np.float64)))
    offset = float(np.mean(np.asarray(layer.offset, np.float64)))
    if scale == 0:
        return None
    # the layer exists to bring inputs to 0..1 (offset >= 0) or -1..1 (a negative offset)
    target = (-1.0, 1.0) if offset < 0 else (0.0, 1.0)
    ends = sorted(((target[0] - offset) / scale, (target[1] - offset) / scale))
    why = (f"its first layer Rescaling(scale={scale:.4g}, offset={offset:g}) maps that to "
           f"{target[0]:g}..{target[1]:g}")
    return ExpectedRange(ValueRange(*ends), why)


def _normalization(layer: Any) -> ExpectedRange | None:
    mean = getattr(layer, "mean", None)
    variance = getattr(layer, "variance", None)
    if mean is None or variance is None:
        return None
    m = float(np.mean(np.asarray(mean, np.float64)))
    std = float(np.sqrt(np.mean(np.asarray(variance, np.float64))))
    if not np.isfinite(m) or not np.isfinite(std) or std == 0:
        return None
    # a standardised input lies mostly within two standard deviations of the mean
    return ExpectedRange(ValueRange(m - 2 * std, m + 2 * std),
                         f"its first layer Normalization(mean={m:.4g}, std={std:.4g}) standardises it")


# --- TFLite metadata -----------------------------------------------------------------------


def _metadata_ranges(model: bytes, specs: list[TensorSpec]) -> dict[str, ExpectedRange]:
    tables = _input_tensor_metadata(model)
    found: dict[str, ExpectedRange] = {}
    for spec, table in zip(specs, tables, strict=False):  # metadata lists inputs in the model's order
        implied = _from_tensor_metadata(table)
        if implied is not None:
            found[spec.name] = implied
    return found


def _from_tensor_metadata(table: Any) -> ExpectedRange | None:
    # TensorMetadata: name 0, description 1, dimension_names 2, content 3, process_units 4, stats 5
    stats = _table(table, 5)
    if stats is not None:
        high, low = _floats(stats, 0), _floats(stats, 1)  # Stats: max 0, min 1
        if high and low:
            return ExpectedRange(ValueRange(min(low), max(high)), "its TFLite metadata's input statistics")
    for unit in _tables(table, 4):
        # ProcessUnit: options_type 0 (NormalizationOptions = 1), options 1; mean 0, std 1
        options = _table(unit, 1)
        if _uint8(unit, 0) != 1 or options is None:
            continue
        mean, std = _floats(options, 0), _floats(options, 1)
        if mean and std and all(s > 0 for s in std):
            m, s = float(np.mean(mean)), float(np.mean(std))
            # normalisation options describe 8-bit pixels 0..255 becoming the model's input
            return ExpectedRange(ValueRange(-m / s, (255 - m) / s),
                                 f"its TFLite metadata normalises 0..255 pixels with mean {m:g}, std {s:g}")
    return None


def _input_tensor_metadata(model: bytes) -> list[Any]:
    from ai_edge_litert import schema_py_generated as schema
    from flatbuffers import encode, packer

    root = schema.Model.GetRootAs(model, 0)
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        if entry.Name() != _METADATA:
            continue
        buffer = root.Buffers(entry.Buffer())
        if buffer.DataLength():
            data = bytearray(buffer.DataAsNumpy().tobytes())
        elif buffer.Offset():  # large models keep buffers after the flatbuffer
            data = bytearray(model[buffer.Offset(): buffer.Offset() + buffer.Size()])
        else:
            return []
        from flatbuffers.table import Table

        metadata = Table(data, encode.Get(packer.uoffset, data, 0))
        # ModelMetadata: subgraph_metadata 3; SubGraphMetadata: input_tensor_metadata 2
        subgraphs = _tables(metadata, 3)
        return _tables(subgraphs[0], 2) if subgraphs else []
    return []


def _table(table: Any, slot: int) -> Any:
    from flatbuffers.table import Table

    offset = table.Offset(4 + 2 * slot)
    return Table(table.Bytes, table.Indirect(offset + table.Pos)) if offset else None


def _tables(table: Any, slot: int) -> list[Any]:
    from flatbuffers.table import Table

    offset = table.Offset(4 + 2 * slot)
    if not offset:
        return []
    start = table.Vector(offset)
    return [Table(table.Bytes, table.Indirect(start + 4 * i)) for i in range(table.VectorLen(offset))]


def _floats(table: Any, slot: int) -> list[float]:
    from flatbuffers import number_types

    offset = table.Offset(4 + 2 * slot)
    if not offset:
        return []
    start = table.Vector(offset)
    count = table.VectorLen(offset)
    return [float(table.Get(number_types.Float32Flags, start + 4 * i)) for i in range(count)]


def _uint8(table: Any, slot: int) -> int:
    from flatbuffers import number_types

    offset = table.Offset(4 + 2 * slot)
    return int(table.Get(number_types.Uint8Flags, offset + table.Pos)) if offset else 0
