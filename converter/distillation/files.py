"""`edgefleet distill` on files: load teacher, student and data, distil, save, report figures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgefleet.converter import tfenv  # noqa: F401  (before Keras loads TensorFlow)
from edgefleet.converter.data import load_dataset
from edgefleet.converter.distillation.models import scaled_student
from edgefleet.converter.distillation.training import DistillOptions, distill
from edgefleet.converter.errors import ConversionError


def _load_keras(path: Path, what: str) -> Any:
    import keras

    if path.suffix != ".keras":
        raise ConversionError(f"{what} {path}: distillation takes Keras 3 .keras models")
    try:
        return keras.models.load_model(path)
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{what} {path} could not be loaded: {exc}") from None


def distill_files(teacher_path: Path, student_path: Path | None, width: float | None,
                  train_path: Path, eval_path: Path | None, out: Path, options: DistillOptions,
                  baseline: bool = True,
                  progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Distil into a student given as a file (weights reset) or as WIDTH x the teacher; save it to OUT."""
    import keras

    try:  # before any training: a folder that cannot be made should not cost the epochs
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConversionError(f"cannot write --out {out}: {exc.strerror or exc}") from None
    teacher = _load_keras(teacher_path, "teacher")
    if student_path is not None:
        # a fresh copy of the architecture: the student learns from the teacher, not from old weights
        student = keras.models.clone_model(_load_keras(student_path, "student"))
    elif width is not None:
        student = scaled_student(teacher, width)
    else:
        raise ConversionError("give a student model or a width")
    x_train, y_train = load_dataset(train_path)
    x_eval = y_eval = None
    if eval_path is not None:
        x_eval, y_eval = load_dataset(eval_path)
    result = distill(teacher, student, x_train, y_train, options, x_eval, y_eval, baseline=baseline,
                     progress=progress)
    try:
        result.student.save(out)
    except OSError as exc:  # disk full, a read-only file system
        raise ConversionError(f"cannot write the student to {out}: {exc.strerror or exc}") from None
    return {**result.as_dict(), "student_file": str(out)}
