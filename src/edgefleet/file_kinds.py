"""What a file given on the command line is, from its first bytes rather than its name, so
that a command handed the wrong thing can say what it got and what it takes.

Stdlib only: `inspect` and `publish` use it on boards too.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import BinaryIO

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # at 0, 512, 1024, 2048, ... (after a user block)
TFLITE_IDENTIFIER = b"TFL3"  # bytes 4..8 of every TFLite flatbuffer
NPY_MAGIC = b"\x93NUMPY"

# kind -> how a sentence names it
DESCRIPTIONS = {
    "bundle": "an edgefleet bundle",
    "keras": "a Keras 3 model (.keras)",
    "h5": "an HDF5 file (a tf-keras .h5 model, or other HDF5 data)",
    "saved_model": "a TensorFlow SavedModel folder",
    "tflite": "a TFLite model",
    "npz": "a NumPy .npz archive",
    "npy": "a NumPy .npy array",
    "zip": "a zip archive",
    "text": "a text file",
    "empty": "an empty file",
    "folder": "a folder",
    "missing": "missing",
    "unknown": "a file of unknown format",
}
MODEL_KINDS = ("keras", "h5", "saved_model", "tflite")
CONVERT_INPUTS = ".keras (Keras 3), .h5/.hdf5 (tf-keras), a SavedModel folder, or a float .tflite"


def identify(path: Path) -> str:
    """One of the keys of DESCRIPTIONS."""
    if path.is_dir():
        has_graph = (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file()
        return "saved_model" if has_graph else "folder"
    if not path.exists():
        return "missing"
    try:
        with path.open("rb") as f:
            head = f.read(4096)
            hdf5 = _hdf5(f, head)
    except OSError:
        return "unknown"
    if not head:
        return "empty"
    if head[4:8] == TFLITE_IDENTIFIER:
        return "tflite"
    if hdf5:
        return "h5"
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(b"PK"):
        return _zip_kind(path)
    if b"\0" not in head:
        try:
            head.decode("utf-8")
            return "text"
        except UnicodeDecodeError as exc:
            if exc.start >= len(head) - 3:  # a character cut off at the end of the sample
                return "text"
    return "unknown"


def describe(path: Path) -> str:
    return DESCRIPTIONS[identify(path)]


def model_not_bundle(path: Path) -> str | None:
    """The message for a model given where a bundle belongs; None when PATH is no model."""
    kind = identify(path)
    if kind not in MODEL_KINDS:
        return None
    return (f"{path} is {DESCRIPTIONS[kind]}, not a bundle: run edgefleet convert first, e.g. "
            f"edgefleet convert {path} --calib calib.npz --out model.efb")


def _hdf5(f: BinaryIO, head: bytes) -> bool:
    if head.startswith(HDF5_SIGNATURE):
        return True
    offset = 512
    while offset <= 1 << 20:  # the superblock sits at 0 or a power of two from 512 on
        try:
            f.seek(offset)
            if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return True
        except OSError:
            return False
        offset *= 2
    return False


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except Exception:  # a damaged archive fails in many ways (BadZipFile, zlib, EOFError...)
        return "zip"
    if "manifest.json" in names:
        return "bundle"
    if "config.json" in names and any(n.startswith("model.weights") for n in names):
        return "keras"  # Keras 3's zip: config.json, metadata.json, model.weights.h5
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return "zip"
