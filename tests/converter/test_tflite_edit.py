"""converter.tflite_edit and converter.quantization.checks on the committed tiny int8 model
and on hand-made sparse tensors: no TensorFlow, no download. The published models these
edits are for are tested in test_published_models.py (slow: they are fetched first)."""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgefleet.converter.quantization.checks import (
    load_and_run_check,
    not_quantised_reason,
    weights_changed,
)
from edgefleet.converter.tflite_edit import (
    SERVING,
    add_serving_signature,
    densify,
    fill_op_codes,
    float_equivalent,
    read_model,
    write_model,
)
from edgefleet.inspect import analyse_model
from edgefleet.runtime import TFLiteModel
from edgefleet.tflite_graph import read_graph


def _deprecated_codes_only(data: bytes) -> bytes:
    """DATA as an old writer would have it: each op code in deprecated_builtin_code alone,
    builtin_code left at its default 0 (which reads as ADD)."""
    model = read_model(data)
    for c in model.operatorCodes:
        assert c.builtinCode < 127, "an op code above 127 has no deprecated form"
        c.deprecatedBuiltinCode, c.builtinCode = c.builtinCode, 0
    return write_model(model)


def test_ops_coded_only_in_deprecated_builtin_code_are_named_by_inspect_as_litert_runs_them(tiny):
    original = tiny.tflite.read_bytes()
    old_style = _deprecated_codes_only(original)
    assert {c.builtinCode for c in read_model(old_style).operatorCodes} == {0}
    # LiteRT runs the old-style file as the original: it reads the deprecated field too
    old_outputs, _ = TFLiteModel(old_style).predict(tiny.x[:8])
    assert np.array_equal(old_outputs, TFLiteModel(original).predict(tiny.x[:8])[0])
    assert analyse_model(old_style)["op_counts"] == analyse_model(original)["op_counts"]
    assert "ADD" not in read_graph(old_style).op_counts()


def test_fill_op_codes_writes_builtin_code_for_the_quantiser(tiny):
    model = read_model(_deprecated_codes_only(tiny.tflite.read_bytes()))
    assert fill_op_codes(model) == len(model.operatorCodes)
    wanted = [c.builtinCode for c in read_model(tiny.tflite.read_bytes()).operatorCodes]
    assert [c.builtinCode for c in model.operatorCodes] == wanted
    assert [c.deprecatedBuiltinCode for c in model.operatorCodes] == wanted  # all below 127
    assert fill_op_codes(model) == 0


def test_float_equivalent_of_a_current_model_with_a_signature_is_the_file_itself(tiny):
    data = tiny.tflite.read_bytes()
    equivalent = float_equivalent(data)
    assert equivalent.model == data and not equivalent.changed and equivalent.notes() == []


def test_a_signature_named_after_the_tensors_is_added_where_there_is_none(tiny):
    model = read_model(tiny.tflite.read_bytes())
    model.signatureDefs = None
    unsigned = write_model(model)
    before = TFLiteModel(unsigned)
    assert before.signature is None

    equivalent = float_equivalent(unsigned)
    assert equivalent.signature_added and not equivalent.float16_weights
    after = TFLiteModel(equivalent.model)
    assert after.signature == SERVING
    # the names a model without a signature had are kept: outputs keep their names
    assert [s.name for s in after.inputs] == [s.name for s in before.inputs]
    assert [s.name for s in after.outputs] == [s.name for s in before.outputs]
    assert np.array_equal(after.predict(tiny.x[:4])[0], before.predict(tiny.x[:4])[0])
    assert not add_serving_signature(read_model(equivalent.model))  # never a second one


def _dimension(dense_size: int = 0, segments: list[int] | None = None,
               indices: list[int] | None = None) -> schema.DimensionMetadataT:
    dim = schema.DimensionMetadataT()
    if segments is None:
        dim.format, dim.denseSize = schema.DimensionType.DENSE, dense_size
        return dim
    dim.format = schema.DimensionType.SPARSE_CSR
    dim.arraySegmentsType = dim.arrayIndicesType = schema.SparseIndexVector.Int32Vector
    dim.arraySegments, dim.arrayIndices = schema.Int32VectorT(), schema.Int32VectorT()
    dim.arraySegments.values, dim.arrayIndices.values = segments, indices
    return dim


def _sparsity(order: list[int], dims: list[schema.DimensionMetadataT],
              block_map: list[int] | None = None) -> schema.SparsityParametersT:
    sparsity = schema.SparsityParametersT()
    sparsity.traversalOrder, sparsity.blockMap, sparsity.dimMetadata = order, block_map, dims
    return sparsity


def test_densify_decodes_compressed_dimensions():
    # a 3x2x2 tensor, dimensions 0 and 2 compressed (CSR), 1 dense; the example of the
    # Android NN API's DENSIFY test specification (densify_4)
    sparsity = _sparsity([0, 1, 2], [_dimension(segments=[0, 2], indices=[0, 2]), _dimension(2),
                                     _dimension(segments=[0, 1, 3, 4, 5], indices=[0, 0, 1, 0, 1])])
    dense = densify(np.array([6, 9, 8, 5, 7], np.float32), (3, 2, 2), sparsity)
    assert dense.tolist() == [6, 0, 9, 8, 0, 0, 0, 0, 5, 0, 0, 7]


def test_densify_places_blocks():
    # a 10x21 matrix stored as 2x3 blocks of 5x7, all dense (densify_7 of the same suite)
    sparsity = _sparsity([0, 1, 2, 3], [_dimension(2), _dimension(3), _dimension(5), _dimension(7)],
                         block_map=[0, 1])
    values = np.zeros(210, np.float32)
    values[0:22:7] = [11, 13, 17, 19]
    expected = np.zeros(210, np.float32)
    expected[0:64:21] = [11, 13, 17, 19]
    assert np.array_equal(densify(values, (10, 21), sparsity), expected)


def test_a_variant_that_kept_every_weight_is_not_quantised(tiny):
    # (a float model against its real variants: test_published_models.py)
    data = tiny.tflite.read_bytes()
    assert not weights_changed(data, data)
    assert not_quantised_reason("dynamic", data, data).startswith("not quantised")
    assert not_quantised_reason("float32", data, data) is None  # float32 is meant to keep them


def test_load_and_run_check_gives_the_runtimes_reason(tiny):
    data = tiny.tflite.read_bytes()
    assert load_and_run_check(data, tiny.x[0]) is None
    reason = load_and_run_check(data[: len(data) // 2], tiny.x[0])
    assert reason is not None and "could not load" in reason
    wrong = load_and_run_check(data, np.zeros((3, 3), np.float32))
    assert wrong is not None and "does not fit" in wrong
