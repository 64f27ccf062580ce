"""Real models others trained and published, and real photos to feed them.

The models are the .tflite files of MediaPipe's 0.10.14 wheel on PyPI (Apache-2.0), fetched
once with `pip download` into a cache folder outside the repository and reused:
$EDGEFLEET_MEDIAPIPE_CACHE, else ~/.cache/edgefleet/mediapipe. Never commit them.

The photos are those scikit-image ships inside its package (skimage.data; none is
downloaded), cut into crops and resized to a model's input, in the value range the model
was trained on. MediaPipe's graphs feed their models float images in 0..1 or -1..1
(the `output_tensor_float_range` of each graph's ImageToTensorCalculator, or
`zero_center` of the older TfLiteConverterCalculator); INPUT_RANGE below says which.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

MEDIAPIPE_VERSION = "0.10.14"
# One wheel whatever machine runs the tests (the .tflite files are the same in every wheel)
_WHEEL = "mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
_WHEEL_SHA256 = "a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4"
_PIP_PLATFORM = ["--platform", "manylinux2014_x86_64", "--python-version", "3.11",
                 "--implementation", "cp", "--abi", "cp311", "--only-binary=:all:"]

# model -> value range of its float input, from MediaPipe's graph for it
# (mediapipe/modules/<module>/*_cpu.pbtxt)
INPUT_RANGE: dict[str, tuple[float, float]] = {
    "palm_detection_lite": (0.0, 1.0),
    "palm_detection_full": (0.0, 1.0),
    "hand_landmark_lite": (0.0, 1.0),
    "hand_landmark_full": (0.0, 1.0),
    "iris_landmark": (0.0, 1.0),
    "selfie_segmentation": (0.0, 1.0),
    "pose_detection": (-1.0, 1.0),
    "face_detection_short_range": (-1.0, 1.0),
    "face_detection_full_range_sparse": (-1.0, 1.0),
}
# RGB photos that ship inside scikit-image
_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "edgefleet" / "mediapipe"
    return Path(os.environ.get("EDGEFLEET_MEDIAPIPE_CACHE", default))


def mediapipe_model(name: str) -> Path:
    """The path of MediaPipe's NAME.tflite in the cache, fetched first if need be."""
    models = cache_dir() / f"models-{MEDIAPIPE_VERSION}"
    path = models / f"{name}.tflite"
    if not path.is_file():
        cache_dir().mkdir(parents=True, exist_ok=True)
        # one fetch at a time: a test run and a benchmark may share the cache
        with (cache_dir() / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.is_file():
                _extract(_download(), models)
    if not path.is_file():
        raise FileNotFoundError(f"MediaPipe {MEDIAPIPE_VERSION} has no {name}.tflite "
                                f"(it has {sorted(p.stem for p in models.glob('*.tflite'))})")
    return path


def _download() -> Path:
    wheel = cache_dir() / _WHEEL
    if not wheel.is_file() or _sha256(wheel) != _WHEEL_SHA256:
        wheel.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=wheel.parent) as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                            "--disable-pip-version-check", f"mediapipe=={MEDIAPIPE_VERSION}",
                            *_PIP_PLATFORM, "-d", tmp], check=True, timeout=900)
            got = Path(tmp) / _WHEEL
            if not got.is_file() or _sha256(got) != _WHEEL_SHA256:
                raise RuntimeError(f"pip download gave {sorted(os.listdir(tmp))}, not {_WHEEL} "
                                   f"with SHA-256 {_WHEEL_SHA256}")
            os.replace(got, wheel)
    return wheel


def _extract(wheel: Path, models: Path) -> None:
    """Only the .tflite files, flat, into MODELS (written aside, then renamed into place)."""
    staging = Path(tempfile.mkdtemp(dir=models.parent, prefix=".models-"))
    try:
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.namelist():
                if member.endswith(".tflite"):
                    (staging / Path(member).name).write_bytes(zf.read(member))
        if models.exists():
            shutil.rmtree(models)
        os.replace(staging, models)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def photo_batch(shape: tuple[int, ...], count: int, value_range: tuple[float, float],
                seed: int = 0) -> np.ndarray:
    """COUNT crops of scikit-image's photos, each resized to SHAPE (height, width, channels)
    and scaled to VALUE_RANGE, as float32 (COUNT, *SHAPE). Crops vary in place, size and
    mirroring, so no two samples are the same picture."""
    from skimage import data, transform

    height, width, channels = shape
    rng = np.random.default_rng(seed)
    photos = [np.asarray(getattr(data, name)(), dtype=np.float32)[..., :3] / 255.0 for name in _PHOTOS]
    low, high = value_range
    out = np.empty((count, height, width, channels), dtype=np.float32)
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(min(h, w) * rng.uniform(0.4, 1.0))
        crop_h, crop_w = side, min(w, int(side * width / height))
        top, left = rng.integers(0, h - crop_h + 1), rng.integers(0, w - crop_w + 1)
        crop = photo[top:top + crop_h, left:left + crop_w]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        image = transform.resize(crop, (height, width), anti_aliasing=True)
        if channels == 1:
            image = image.mean(axis=2, keepdims=True)
        out[i] = low + (high - low) * np.clip(image, 0.0, 1.0)
    return out
