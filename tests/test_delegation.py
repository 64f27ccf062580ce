"""What a delegate really took after LiteRT applied it (edgefleet.delegation): XNNPACK on a
float model it takes whole (a published detector), on an int8 model it leaves part of to
the runtime's own kernels (the committed tiny digits model), and the partition walk on
hand-made node lists."""

from __future__ import annotations

from edgefleet.converter.tflite_edit import float_equivalent
from edgefleet.delegation import partitions
from edgefleet.inspect import analyse_model
from edgefleet.runtime import TFLiteModel
from tests.published_models import mediapipe_model


def _node(index: int, name: str, inputs: list[int], outputs: list[int]) -> dict:
    return {"index": index, "op_name": name, "inputs": inputs, "outputs": outputs}


def test_xnnpack_takes_a_published_float_detector_whole():
    data = float_equivalent(mediapipe_model("face_detection_short_range").read_bytes()).model
    share = TFLiteModel(data, num_threads=1).delegate.share
    assert share["delegate"] == "XNNPACK"
    assert share["ops_delegated"] == share["ops_total"] == 90 and share["left_to_runtime_kernels"] == {}
    assert share["ops_share"] == share["work_share"] == 1.0


def test_the_ops_xnnpack_leaves_to_the_runtime_are_named_and_the_work_share_counts_the_macs(tiny):
    model = TFLiteModel(tiny.tflite.read_bytes(), num_threads=1)
    share = model.delegate.share
    # the dynamic-batch reshape (SHAPE, STRIDED_SLICE, PACK, RESHAPE) and the int8 SOFTMAX stay
    assert share["left_to_runtime_kernels"] == {"SHAPE": 1, "STRIDED_SLICE": 1, "PACK": 1, "RESHAPE": 1,
                                                "SOFTMAX": 1}
    assert (share["ops_delegated"], share["ops_total"]) == (5, 10)
    assert 0.99 < share["work_share"] < 1.0  # the convolutions and dense layers are nearly all of it
    assert model.delegate.as_dict()["delegated"] == share  # what reported and telemetry carry
    assert analyse_model(tiny.tflite.read_bytes())["cpu_delegation"] == share  # edgefleet inspect


def test_a_partition_is_everything_between_a_delegate_node_s_inputs_and_outputs():
    nodes = [_node(0, "CONV_2D", [0, 10], [1]), _node(1, "RELU", [1], [2]),
             _node(2, "CUSTOM", [2], [3]),  # not taken: sits between the two partitions
             _node(3, "ADD", [3, 11], [4]), _node(4, "DELEGATE", [0, 10], [2]),
             _node(5, "DELEGATE", [3, 11], [4])]
    assert partitions(nodes) == {0: 4, 1: 4, 3: 5}


def test_without_delegate_nodes_nothing_is_taken():
    nodes = [_node(0, "CONV_2D", [0, 10], [1]), _node(1, "RELU", [1], [2])]
    assert partitions(nodes) == {}
