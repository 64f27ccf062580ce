"""The accelerator chain (edgefleet.accelerators) and how TFLiteModel walks it: every
accelerator that does not take the model is reported with the loader's own message, a
bundle's target narrows the chain, and the two LiteRT APIs give the same outputs.

This machine has no Edge TPU, NPU or GPU: the failing loads are real loader calls on
libraries that are not installed (and LiteRT's GPU and NPU accelerators finding no
device), which is what an operator sees on a board whose driver is missing."""

from __future__ import annotations

import numpy as np
import pytest

from edgefleet import accelerators as acc
from edgefleet.devices.profiles import load_profile
from edgefleet.engines import COMPILED, INTERPRETER, preferred
from edgefleet.runtime import RuntimeLoadError, TFLiteModel
from tests.published_models import mediapipe_model


def _board(*names: str) -> list[acc.Accelerator]:
    profiles = [load_profile(n) for n in names]
    return acc.board_chain(e for p in profiles for e in p.accelerator.chain_entries())


def test_profiles_give_the_chain_with_an_attached_accelerator_first():
    assert [a.name for a in _board("coral-usb", "rpi4")] == ["edgetpu", "cpu"]
    assert _board("coral-usb", "rpi4")[0].options == {"device": "usb"}
    assert [a.name for a in _board("imx8mp-npu")] == ["vx", "cpu"]
    assert [a.name for a in _board("generic-x86_64")] == ["cpu"]


def test_the_config_names_one_accelerator_and_the_cpu_only_under_fallback():
    board = _board("coral-usb", "rpi4")
    assert [a.name for a in acc.configured_chain(board, "edgetpu")] == ["edgetpu"]
    fallback = acc.configured_chain(board, "edgetpu", allow_cpu_fallback=True)
    assert [a.name for a in fallback] == ["edgetpu", "cpu"]
    tuned = acc.configured_chain(board, "auto", options={"device": "usb:1", "Performance": "High"})
    assert tuned[0].options == {"device": "usb:1", "Performance": "High"} and tuned[1].name == "cpu"
    external = acc.configured_chain(board, "external", library="/opt/npu/libdelegate.so")
    assert external[0].library == "/opt/npu/libdelegate.so"
    with pytest.raises(acc.ChainError, match="delegate_library"):
        acc.configured_chain(board, "external")


@pytest.mark.parametrize("device", ["", ":0", "usb", "usb:1", "pci", "pci:12"])
def test_edgetpu_device_forms_libedgetpu_accepts(device):
    acc.check_edgetpu_device(device)


@pytest.mark.parametrize("device", ["usb0", "USB", "usb:", ":", "pci:-1", "usb:x", "tpu"])
def test_other_edgetpu_devices_are_refused_with_the_forms(device):
    with pytest.raises(acc.ChainError, match="usb:N"):
        acc.check_edgetpu_device(device)


def test_a_bundle_not_compiled_for_the_edge_tpu_skips_it_and_a_missing_target_is_a_mismatch():
    coral = _board("coral-usb", "rpi4")
    cpu_bundle = acc.plan(coral, "cpu")
    assert [a.name for a in cpu_bundle.chain] == ["cpu"] and cpu_bundle.skipped[0][0] == "edgetpu"
    assert cpu_bundle.mismatch is None
    tpu_bundle = acc.plan(coral, "edgetpu", "coral-usb")
    assert [a.name for a in tpu_bundle.chain] == ["edgetpu", "cpu"] and tpu_bundle.mismatch is None
    on_x86 = acc.plan(_board("generic-x86_64"), "edgetpu", "coral-usb")
    assert on_x86.mismatch and "coral-usb" in on_x86.mismatch and "tries cpu" in on_x86.mismatch
    # the VX NPU runs ordinary int8 models: a CPU bundle keeps it
    assert [a.name for a in acc.plan(_board("imx8mp-npu"), "cpu").chain] == ["vx", "cpu"]
    assert acc.target_of({"runtime": {"delegate": "edgetpu"}, "target": {"profile": "coral-usb"}}) == \
        ("edgetpu", "coral-usb")
    assert acc.target_of({}) == (None, None)


def test_each_accelerator_that_fails_is_reported_with_the_loaders_message(tiny):
    chain = [acc.make("edgetpu", options={"device": "usb"}), acc.make("vx"), acc.make("litert-gpu"),
             acc.make("litert-npu"), acc.make("cpu")]
    model = TFLiteModel(tiny.tflite.read_bytes(), chain=chain, num_threads=1)
    report = model.delegate
    assert report.requested == "edgetpu" and report.active == "cpu" and report.on_cpu
    reasons = {f["delegate"]: f["reason"] for f in report.fallbacks}
    assert set(reasons) == {"edgetpu", "vx", "litert-gpu", "litert-npu"}
    assert "libedgetpu.so.1" in reasons["edgetpu"] and "libvx_delegate.so" in reasons["vx"]
    # no NPU here: LiteRT says that it would need the CPU for some ops, and it is not given one
    assert "not accelerated" in reasons["litert-npu"]
    assert report.fallback_reason and all(name in report.fallback_reason for name in reasons)
    outputs, _ = model.run(tiny.x[:5])
    assert outputs[model.outputs[0].name].shape == (5, 10)


def test_no_accelerator_that_takes_the_model_is_a_clear_error(tiny):
    with pytest.raises(RuntimeLoadError, match=r"no accelerator took the model.*libedgetpu\.so\.1.*Coral"):
        TFLiteModel(tiny.tflite.read_bytes(), delegate="edgetpu")
    with pytest.raises(RuntimeLoadError, match="no accelerator left to try: edgetpu"):
        TFLiteModel(tiny.tflite.read_bytes(), chain=[], skipped=[("edgetpu", "not compiled for it")])


def test_compiled_model_and_interpreter_give_the_same_outputs_on_a_published_model():
    data = mediapipe_model("palm_detection_lite").read_bytes()  # no signature, two outputs
    interpreter = TFLiteModel(data, api="interpreter", num_threads=1)
    compiled = TFLiteModel(data, api="compiled", num_threads=1)
    assert (interpreter.api, compiled.api) == (INTERPRETER, COMPILED)
    x = np.random.default_rng(0).random((2, *interpreter.input_shape), dtype=np.float32)
    a, _ = interpreter.run(x)
    b, _ = compiled.run(x)
    assert a.keys() == b.keys() and len(a) == 2
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-5)


def test_auto_measures_both_apis_and_says_which_it_chose(tiny):
    model = TFLiteModel(tiny.tflite.read_bytes(), api="auto", num_threads=1)
    choice = model.api_choice
    assert choice["chosen"] == model.api == preferred(choice["p50_ms"])
    assert set(choice["p50_ms"]) == {INTERPRETER, COMPILED} and all(v > 0 for v in choice["p50_ms"].values())


def test_compiled_is_preferred_only_when_clearly_faster():
    assert preferred({INTERPRETER: 1.0, COMPILED: 0.9}) == COMPILED
    assert preferred({INTERPRETER: 1.0, COMPILED: 0.97}) == INTERPRETER
    assert preferred({INTERPRETER: 1.0}) == INTERPRETER
