"""A variant the quantiser left as it was is a failed variant with the reason, never
labelled, recommended or bundled as quantised (issue 8). The check beside it, a variant
LiteRT refuses, is tested on a model LiteRT really refuses (test_published_models.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgefleet.protocol.bundle import open_bundle
from edgefleet.protocol.signing import TrustStore

pytestmark = pytest.mark.slow


def test_a_dynamic_variant_with_unchanged_weights_is_reported_as_not_quantised(tmp_path: Path, keys):
    import keras

    from edgefleet.converter import convert

    # weights this small are below what the TFLite converter's dynamic range mode quantises
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden)).save(tmp_path / "m.keras")
    x = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    np.savez(tmp_path / "eval.npz", x=x[:32])

    result = convert(tmp_path / "m.keras", tmp_path / "calib.npz", tmp_path / "m.efb", keys.private,
                     eval_path=tmp_path / "eval.npz", variants="int8,dynamic", measure_latency=False,
                     chart=False)
    report = result.report
    assert [v["name"] for v in report["variants"]] == ["int8"]
    (failed,) = report["failed_variants"]
    assert failed["name"] == "dynamic" and failed["error"].startswith("not quantised")
    bundle = open_bundle(result.bundle_path.read_bytes(), TrustStore.from_folder(keys.trust_dir))
    assert bundle.manifest["model"]["quantization"] == "int8"

    from edgefleet.converter.errors import ConversionError

    with pytest.raises(ConversionError, match="not quantised"):  # asked for alone, it fails the run
        convert(tmp_path / "m.keras", tmp_path / "calib.npz", tmp_path / "d.efb", keys.private,
                mode="dynamic", measure_latency=False, chart=False)
