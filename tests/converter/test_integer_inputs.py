"""Inputs that a model takes as integers, unscaled (a uint8 image, int32 token ids): values
that do not fit the tensor's type are refused, never wrapped around (issue 10, item 11)."""

from __future__ import annotations

import numpy as np
import pytest

from edgefleet.runtime import InputError, TFLiteModel


@pytest.fixture(scope="module")
def uint8_model() -> TFLiteModel:
    import keras
    import tensorflow as tf

    inp = keras.Input((4,), dtype="uint8")  # raw pixels: no quantisation parameters
    model = keras.Model(inp, keras.layers.Lambda(lambda t: tf.cast(t, "float32") * 2.0)(inp))
    return TFLiteModel(tf.lite.TFLiteConverter.from_keras_model(model).convert())


@pytest.mark.slow
def test_values_outside_the_integer_type_are_refused_not_wrapped(uint8_model):
    spec = uint8_model.inputs[0]
    assert spec.dtype == "uint8" and not spec.quantized
    out, _ = uint8_model.run(np.array([[255, 1, 2, 3]], dtype=np.int64))  # fits: taken as it is
    np.testing.assert_array_equal(out["output_0"], [[510, 2, 4, 6]])
    for bad in (np.array([[300, 1, 2, 3]]), np.array([[-1, 1, 2, 3]]), np.array([[2.5, 1, 2, 3]])):
        with pytest.raises(InputError, match="uint8"):
            uint8_model.run(bad)
    out, _ = uint8_model.run(np.array([[3.0, 1, 2, 3]], dtype=np.float32))  # whole numbers are fine
    np.testing.assert_array_equal(out["output_0"], [[6, 2, 4, 6]])
