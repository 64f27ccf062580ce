"""Bundles carry golden sets of either format: the committed tiny bundle is of format 2
(every output, compact), and a bundle made by edgefleet 0.1.0 (format 1) still self-tests."""

from __future__ import annotations

import io

import numpy as np

from edgefleet.agent.selftest import run_selftest
from edgefleet.protocol.bundle import Bundle, open_bundle
from edgefleet.protocol.signing import TrustStore
from edgefleet.runtime import TFLiteModel
from tests.support import FIXTURES


def _open(path, keys) -> Bundle:
    return open_bundle(path.read_bytes(), TrustStore.from_folder(keys.trust_dir))


def test_the_committed_bundle_has_a_format_2_golden_set_that_passes(keys, tiny):
    bundle = _open(tiny.bundle, keys)
    assert bundle.manifest["selftest"]["format"] == "edgefleet.golden/2"
    result = run_selftest(TFLiteModel(bundle.model_bytes), bundle)
    assert result.passed and result.top1_agreement == 1.0 and set(result.outputs) == {"output_0"}


def test_a_bundle_made_before_golden_format_2_still_self_tests(keys):
    old = _open(FIXTURES / "tiny-digits-golden1.efb", keys)
    assert "format" not in old.manifest["selftest"]  # as edgefleet 0.1.0 wrote it
    model = TFLiteModel(old.model_bytes)
    result = run_selftest(model, old)
    assert result.passed, result.reason
    assert result.samples == old.manifest["selftest"]["samples"] and result.top1_agreement == 1.0

    # and it is a real test: another model's answers fail it
    golden = np.load(io.BytesIO(old.files["golden.npz"]))
    buf = io.BytesIO()
    np.savez(buf, inputs=golden["inputs"], reference_outputs=np.roll(golden["reference_outputs"], 1, axis=1))
    wrong = Bundle(old.manifest, {**old.files, "golden.npz": buf.getvalue()}, old.signed_by)
    failed = run_selftest(model, wrong)
    assert not failed.passed and "top-1 agreement" in (failed.reason or "")
