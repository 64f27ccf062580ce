from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgefleet.converter.data import load_npz
from edgefleet.converter.errors import ConversionError


def test_loads_x_and_y(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, x=np.arange(24, dtype=np.uint8).reshape(3, 2, 4), y=np.array([0, 2, 1]))
    x, y = load_npz(path)
    assert x.dtype == np.float32 and x.shape == (3, 2, 4)
    assert y is not None and y.dtype == np.int64 and y.tolist() == [0, 2, 1]


def test_y_is_optional(tmp_path: Path) -> None:
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.zeros((5, 3), np.float64))
    x, y = load_npz(path)
    assert x.dtype == np.float32 and y is None


def test_one_hot_labels_become_indices(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((3, 2)), y=np.eye(4)[[3, 0, 1]])
    assert load_npz(path)[1].tolist() == [3, 0, 1]


def test_missing_x_names_the_file_and_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "calib.npz"
    np.savez(path, images=np.zeros((2, 2)), y=np.zeros(2))
    with pytest.raises(ConversionError) as exc:
        load_npz(path)
    message = str(exc.value)
    assert str(path) in message and "'x'" in message
    assert "images" in message and "y" in message


@pytest.mark.parametrize("make", ["missing", "directory"])
def test_not_a_file(tmp_path: Path, make: str) -> None:
    path = tmp_path / "data.npz"
    if make == "directory":
        path.mkdir()
    with pytest.raises(ConversionError, match=r"does not exist|is a directory") as exc:
        load_npz(path)
    assert str(path) in str(exc.value)


def test_x_and_y_lengths_differ(tmp_path: Path) -> None:
    path = tmp_path / "eval.npz"
    np.savez(path, x=np.zeros((4, 2)), y=np.zeros(3, np.int64))
    with pytest.raises(ConversionError, match=r"4 samples but y has 3 labels") as exc:
        load_npz(path)
    assert str(path) in str(exc.value)


def test_npy_and_garbage_files_are_refused(tmp_path: Path) -> None:
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((2, 2)))
    with pytest.raises(ConversionError, match=r"single \.npy array"):
        load_npz(npy)
    garbage = tmp_path / "x.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ConversionError, match=r"not an \.npz file \(no zip header\)"):
        load_npz(garbage)
    truncated = tmp_path / "t.npz"
    np.savez(truncated, x=np.zeros((64, 2)))
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(ConversionError, match=r"not a readable \.npz"):
        load_npz(truncated)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ConversionError, match=r"not a readable \.npz"):
        load_npz(path)


def test_non_integer_labels_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((2, 2)), y=np.array([0.5, 1.0]))
    with pytest.raises(ConversionError, match="integer class indices"):
        load_npz(path)
