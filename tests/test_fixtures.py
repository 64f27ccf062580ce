"""The committed fixtures (tests/fixtures, made by make_fixtures.py) still fit together:
the bundle is signed by the test-only key, holds the committed .tflite, passes its own
self-test on this machine's runtime and classifies the held-out digits. No TensorFlow."""

from __future__ import annotations

import numpy as np

from edgefleet.agent.selftest import run_selftest
from edgefleet.protocol.bundle import open_bundle
from edgefleet.protocol.signing import TrustStore
from edgefleet.runtime import TFLiteModel
from tests.support import FIXTURES

MAX_FIXTURE_BYTES = 100_000  # the repository carries these: keep them tiny


def test_bundle_is_signed_by_the_test_key_and_holds_the_committed_model(keys, tiny):
    bundle = open_bundle(tiny.bundle.read_bytes(), TrustStore.from_folder(keys.trust_dir))
    assert bundle.signed_by == keys.key.key_id
    assert bundle.model_bytes == tiny.tflite.read_bytes()
    assert bundle.manifest["model"]["quantization"] == "int8"


def test_bundle_passes_its_self_test_and_classifies_held_out_digits(keys, tiny):
    bundle = open_bundle(tiny.bundle.read_bytes(), TrustStore.from_folder(keys.trust_dir))
    model = TFLiteModel(bundle.model_bytes)
    result = run_selftest(model, bundle)
    assert result.passed, result.reason
    assert tiny.x.dtype == np.float32 and tiny.x.shape == (100, 8, 8, 1)
    assert np.bincount(tiny.y, minlength=10).tolist() == [10] * 10
    outputs, _ = model.predict(tiny.x)
    top1 = float(np.mean(outputs.argmax(axis=1) == tiny.y))
    assert top1 >= 0.95, f"top-1 {top1:.1%} on {len(tiny.y)} held-out digits"


def test_fixtures_stay_small():
    sizes = {p.name: p.stat().st_size for p in FIXTURES.iterdir() if p.is_file()}
    assert sum(sizes.values()) <= MAX_FIXTURE_BYTES, sizes


def test_the_wide_bundle_is_signed_self_tests_and_takes_what_the_tiny_one_takes(keys, tiny):
    trust = TrustStore.from_folder(keys.trust_dir)
    wide = open_bundle((FIXTURES / "tiny-digits-wide.efb").read_bytes(), trust)
    small = open_bundle(tiny.bundle.read_bytes(), trust)
    assert wide.signed_by == keys.key.key_id and wide.name == small.name
    model = TFLiteModel(wide.model_bytes)
    assert run_selftest(model, wide).passed
    reference = TFLiteModel(small.model_bytes)
    assert [s.as_dict() for s in model.inputs] == [s.as_dict() for s in reference.inputs]
    assert [s.shape for s in model.outputs] == [s.shape for s in reference.outputs]
