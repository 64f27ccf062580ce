from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:  # find, not import: collection stays light
    pytest.skip("needs the converter extra (TensorFlow)", allow_module_level=True)

pytestmark = pytest.mark.slow  # converter.digits imports Keras


def test_splits_are_disjoint_stratified_and_scaled() -> None:
    from edgefleet.converter.digits import digits_splits

    splits = digits_splits(seed=0)
    assert set(splits) == {"train", "calib", "eval"}
    sizes = {name: len(x) for name, (x, _) in splits.items()}
    assert sum(sizes.values()) == 1797
    assert 0.2 <= sizes["eval"] / 1797 <= 0.25
    for x, y in splits.values():
        assert x.dtype == np.float32 and x.shape[1:] == (8, 8, 1)
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert len(y) == len(x) and set(np.unique(y)) == set(range(10))
    # stratified: every class keeps its share of the held-out split within a sample
    _, y_eval = splits["eval"]
    assert np.bincount(y_eval).min() >= 34
    # disjoint: no held-out image is also a training image (compared byte for byte)
    train = {row.tobytes() for row in splits["train"][0]}
    calib = {row.tobytes() for row in splits["calib"][0]}
    held_out = [row.tobytes() for row in splits["eval"][0]]
    assert sum(row in train or row in calib for row in held_out) == 0


@pytest.mark.slow
def test_digits_cnn_reaches_97_percent_held_out(digits_files: dict[str, Path]) -> None:
    import keras

    from edgefleet.converter.data import load_npz
    from edgefleet.converter.evaluate import keras_top1

    model = keras.models.load_model(digits_files["model"], compile=False)
    x, y = load_npz(digits_files["eval"])
    assert y is not None
    assert keras_top1(model, x, y) >= 0.97
    x_calib, y_calib = load_npz(digits_files["calib"])
    assert y_calib is None and len(x_calib) == 200


@pytest.mark.slow
def test_training_is_deterministic_for_a_seed() -> None:
    from edgefleet.converter.digits import digits_splits, train_digits_cnn

    x, y = digits_splits()["train"]
    first = train_digits_cnn(x[:256], y[:256], epochs=1, seed=7).get_weights()
    second = train_digits_cnn(x[:256], y[:256], epochs=1, seed=7).get_weights()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
