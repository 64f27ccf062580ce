"""Folders of images, with the preprocessing that makes them model inputs.

An image folder needs a declared preprocessing (:class:`Preprocess`): the size to resize to,
the pixel scale, mean/std normalisation, layout and colour. Images directly in the folder
carry no labels; images in class sub-folders are labelled by the sorted sub-folder index
(``cat/``, ``dog/`` -> 0, 1), as Keras's ``image_dataset_from_directory`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from edgefleet.converter.errors import ConversionError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
LAYOUTS = ("nhwc", "nchw")
COLORS = ("rgb", "grayscale")
COLOR_ALIASES = {"gray": "grayscale", "grey": "grayscale", "l": "grayscale"}  # what people type
PREPROCESS_EXAMPLE = (
    "size=96x96,scale=1/255,mean=0.485:0.456:0.406,std=0.229:0.224:0.225,layout=nhwc,color=rgb"
)


@dataclass(frozen=True)
class Preprocess:
    """How image files become model inputs: resize, scale, (x - mean) / std, layout."""

    size: tuple[int, int] | None = None  # (height, width)
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)  # one value, or one per channel
    std: tuple[float, ...] = (1.0,)
    layout: str = "nhwc"
    color: str = "rgb"

    def __post_init__(self) -> None:
        if self.color in COLOR_ALIASES:  # frozen: set the canonical name through object
            object.__setattr__(self, "color", COLOR_ALIASES[self.color])
        if self.layout not in LAYOUTS:
            raise ConversionError(f"preprocess layout {self.layout!r} is not one of {', '.join(LAYOUTS)}")
        if self.color not in COLORS:
            raise ConversionError(f"preprocess color {self.color!r} is not one of {', '.join(COLORS)} "
                                  f"(or {', '.join(a for a in COLOR_ALIASES if len(a) > 1)})")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ConversionError(f"preprocess size {self.size} must be two positive numbers (height, width)")
        channels = 1 if self.color == "grayscale" else 3
        for key in ("mean", "std"):
            values = getattr(self, key)
            if len(values) not in (1, channels):
                raise ConversionError(
                    f"preprocess {key} has {len(values)} values; give one, or one per channel "
                    f"({channels} for color={self.color})"
                )
        if any(s == 0 for s in self.std):
            raise ConversionError("preprocess std must not be zero")

    @property
    def channels(self) -> int:
        return 1 if self.color == "grayscale" else 3

    @classmethod
    def parse(cls, text: str) -> Preprocess:
        """Read "size=96x96,scale=1/255,mean=0.485:0.456:0.406,std=...,layout=nhwc,color=rgb"."""
        known = [f.name for f in fields(cls)]
        values: dict[str, object] = {}
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            key, sep, value = item.partition("=")
            key, value = key.strip().lower(), value.strip()
            if not sep or not value:
                raise ConversionError(
                    f"preprocess item {item!r} is not key=value; example: {PREPROCESS_EXAMPLE}"
                )
            if key not in known:
                raise ConversionError(
                    f"unknown preprocess key {key!r}; known keys: {', '.join(known)} "
                    f"(example: {PREPROCESS_EXAMPLE})"
                )
            if key in values:
                raise ConversionError(f"preprocess key {key!r} is given twice")
            values[key] = _parse_value(key, value)
        return cls(**values)  # type: ignore[arg-type]


def _parse_value(key: str, value: str) -> object:
    try:
        if key == "size":
            height, sep, width = value.lower().partition("x")
            if not sep:
                raise ValueError
            return (int(height), int(width))
        if key == "scale":
            return _number(value)
        if key in ("mean", "std"):
            return tuple(_number(v) for v in value.split(":"))
    except ValueError:
        hint = {
            "size": "HEIGHTxWIDTH, e.g. 96x96",
            "scale": "a number or a fraction, e.g. 1/255 or 0.5",
            "mean": "numbers separated by ':', e.g. 0.485:0.456:0.406",
            "std": "numbers separated by ':', e.g. 0.229:0.224:0.225",
        }[key]
        raise ConversionError(f"bad preprocess value {key}={value!r}: expected {hint}") from None
    return value.lower()  # layout, color: checked by Preprocess itself


def _number(text: str) -> float:
    numerator, sep, denominator = text.partition("/")
    value = float(numerator) / float(denominator) if sep and float(denominator) != 0 else (
        float("inf") if sep else float(text))
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image_folder(
    folder: Path, preprocess: Preprocess | None, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(x float32, y int64 or None) from FOLDER's images, at most LIMIT (spread over the classes)."""
    if preprocess is None or preprocess.size is None:
        raise ConversionError(
            f"{folder} is a folder of images: declare the preprocessing with at least a size, "
            f"e.g. {PREPROCESS_EXAMPLE}"
        )
    direct = _images_in(folder)
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if direct:
        files, labels = direct, None
    else:
        files, label_list = [], []
        for index, sub in enumerate(classes):
            images = _images_in(sub)
            files += images
            label_list += [index] * len(images)
        labels = np.asarray(label_list, dtype=np.int64)
    if not files:
        raise ConversionError(
            f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) directly or in class sub-folders"
        )
    if limit is not None and len(files) > limit:
        if labels is not None:
            # spread the limit over the classes instead of taking the first classes only
            keep = np.sort(np.random.default_rng(0).permutation(len(files))[:limit])
            files, labels = [files[i] for i in keep], labels[keep]
        else:
            files = files[:limit]
    x = np.stack([_read_image(f, preprocess) for f in files])
    if not np.isfinite(x).all():  # e.g. a preprocessing std of 1e-40
        raise ConversionError(f"{folder}: after preprocessing the data holds NaN or infinite values; "
                              "check --preprocess (scale, mean, std)")
    return x, labels


def _read_image(path: Path, preprocess: Preprocess) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("L" if preprocess.color == "grayscale" else "RGB")
            assert preprocess.size is not None
            height, width = preprocess.size
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32)
    except (OSError, UnidentifiedImageError) as exc:
        raise ConversionError(f"cannot read the image {path}: {exc}") from None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    pixels = pixels * np.float32(preprocess.scale)
    mean = np.asarray(preprocess.mean, dtype=np.float32)
    std = np.asarray(preprocess.std, dtype=np.float32)
    pixels = (pixels - mean) / std
    if preprocess.layout == "nchw":
        pixels = pixels.transpose(2, 0, 1)
    return pixels.astype(np.float32, copy=False)
