"""The demo and test workload: scikit-learn's 8x8 handwritten digits and a small CNN.

Small enough to train in seconds on a 2-core CPU, real enough that int8 quantisation
has something to lose: the held-out split measures what conversion costs.
"""

from __future__ import annotations

from edgefleet.converter import tfenv  # noqa: F401  (before Keras loads TensorFlow)

# isort: split
from pathlib import Path

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

INPUT_SHAPE = (8, 8, 1)
CLASSES = 10
EVAL_FRACTION = 0.2  # held out for measuring accuracy; never trained on
CALIB_SAMPLES = 200  # calibration inputs, also never trained on
DEFAULT_EPOCHS = 5  # x5 with the shifted copies: about 4 s on 2 cores


def digits_splits(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train", "calib", "eval"} -> (x float32 (N, 8, 8, 1) in [0, 1], y int64 (N,)).

    The three splits are disjoint and stratified by class. `eval` (20 %) is the held-out
    set; `calib` stands in for the unlabelled sample of real inputs a user calibrates with.
    """
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]  # pixel values are 0..16
    y = digits.target.astype(np.int64)
    x_rest, x_eval, y_rest, y_eval = train_test_split(
        x, y, test_size=EVAL_FRACTION, stratify=y, random_state=seed
    )
    x_train, x_calib, y_train, y_calib = train_test_split(
        x_rest, y_rest, test_size=CALIB_SAMPLES, stratify=y_rest, random_state=seed
    )
    return {"train": (x_train, y_train), "calib": (x_calib, y_calib), "eval": (x_eval, y_eval)}


def build_digits_cnn(filters: tuple[int, int] = (16, 32), dense: int = 64) -> keras.Model:
    """The demo's CNN (38 k parameters); the benchmark uses a wider one (filters (32, 64),
    dense 512: 550 k parameters), where the fixed overhead of a .tflite file no longer
    dominates the size comparison."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE, name="image"),
            layers.Conv2D(filters[0], 3, padding="same", activation="relu"),
            layers.Conv2D(filters[1], 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dropout(0.3),
            layers.Dense(dense, activation="relu"),
            layers.Dense(CLASSES, activation="softmax"),
        ],
        name="digits_cnn",
    )


def train_digits_cnn(
    x: np.ndarray, y: np.ndarray, epochs: int = DEFAULT_EPOCHS, seed: int = 0,
    filters: tuple[int, int] = (16, 32), dense: int = 64,
) -> keras.Model:
    """Train the CNN on (x, y); with the default settings it scores about 99 % held out."""
    keras.utils.set_random_seed(seed)  # Python, NumPy and TF seeds: same seed, same weights
    x_aug, y_aug = with_shifts(np.asarray(x, np.float32), np.asarray(y))
    model = build_digits_cnn(filters, dense)
    steps = epochs * int(np.ceil(len(x_aug) / 32))
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x_aug, y_aug, epochs=epochs, batch_size=32, shuffle=True, verbose=0)
    return model


def with_shifts(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """X plus copies shifted one pixel up, down, left and right (zero fill).

    On 8x8 images a one-pixel offset is a large change the training set barely covers;
    the copies take held-out accuracy from about 97.5 % to about 99 %.
    """
    copies = [x]
    for axis in (1, 2):
        for step in (1, -1):
            shifted = np.roll(x, step, axis=axis)
            edge = [slice(None)] * x.ndim
            edge[axis] = 0 if step == 1 else -1  # the row/column that wrapped around
            shifted[tuple(edge)] = 0.0
            copies.append(shifted)
    return np.concatenate(copies), np.concatenate([y] * len(copies))


def write_digits_files(
    folder: str | Path, seed: int = 0, epochs: int = DEFAULT_EPOCHS,
    filters: tuple[int, int] = (16, 32), dense: int = 64,
) -> dict[str, Path]:
    """Train the CNN and write model.keras, calib.npz (x only), eval.npz (x, y) and
    train.npz (x, y, with the shifted copies training used: for pruning and distillation)
    to FOLDER."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    splits = digits_splits(seed)
    model = train_digits_cnn(*splits["train"], epochs=epochs, seed=seed, filters=filters, dense=dense)
    paths = {
        "model": folder / "model.keras",
        "calib": folder / "calib.npz",
        "eval": folder / "eval.npz",
        "train": folder / "train.npz",
    }
    model.save(paths["model"])
    np.savez(paths["calib"], x=splits["calib"][0])
    x_eval, y_eval = splits["eval"]
    np.savez(paths["eval"], x=x_eval, y=y_eval)
    # the data the model was trained on, shifted copies included: pruning fine-tunes on it
    x_train, y_train = with_shifts(*splits["train"])
    np.savez(paths["train"], x=x_train, y=y_train)
    return paths
