"""Knowledge distillation for Keras 3 models (Hinton, Vinyals and Dean, 2015).

A small student learns from a frozen teacher's temperature-softened outputs as well as
from the labels. The loss per batch is

    alpha * CE(labels, softmax(z_s)) + (1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))

with z_t and z_s the teacher's and student's logits. T^2 keeps the soft term's gradients
on the same scale as the hard term's whatever the temperature (they shrink as 1/T^2).

Classifiers often end in a softmax, so both models' logits are recovered first
(:mod:`converter.distillation.models` says how); the teacher's are computed once.

The same student architecture, from the same initial weights, trained on labels alone
with the same epochs, seed, optimiser and batch order, is the baseline the report
compares with: distillation is only worth its time when it beats or ties that.
"""

from __future__ import annotations

from edgefleet.converter import tfenv  # noqa: F401  (before Keras loads TensorFlow)

# isort: split
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from edgefleet.converter.distillation.models import EVAL_BATCH, check_pair, logits_view, model_logits
from edgefleet.converter.errors import ConversionError
from edgefleet.converter.tfutil import check_model_input

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DistillOptions:
    temperature: float = 4.0
    alpha: float = 0.1  # weight of the hard-label loss; (1 - alpha) on the soft loss, scaled by T^2
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3  # Adam's, decayed to 0 along a cosine over the epochs
    seed: int = 0  # initial shuffling order, dropout and the baseline's start

    def __post_init__(self) -> None:
        problems = []
        if not self.temperature > 0:
            problems.append(f"temperature must be > 0 (got {self.temperature})")
        if not 0.0 <= self.alpha <= 1.0:
            problems.append(f"alpha must be between 0 and 1 (got {self.alpha})")
        if self.epochs < 1:
            problems.append(f"epochs must be at least 1 (got {self.epochs})")
        if self.batch_size < 1:
            problems.append(f"batch size must be at least 1 (got {self.batch_size})")
        if not self.learning_rate > 0:
            problems.append(f"learning rate must be > 0 (got {self.learning_rate})")
        if problems:
            raise ConversionError("invalid distillation options: " + "; ".join(problems))


@dataclass
class DistillResult:
    student: keras.Model  # trained with distillation
    baseline: keras.Model | None  # same architecture and start, trained on labels alone
    teacher_params: int
    student_params: int
    teacher_top1: float | None  # on the eval data, when given with labels
    student_top1: float | None
    baseline_top1: float | None
    history: dict[str, list[float]]  # per epoch: "<phase>_loss" and, with eval data, "<phase>_top1"
    options: DistillOptions = field(default_factory=DistillOptions)
    teacher_outputs: str = "logits"  # or "probabilities": what the teacher's output layer gives
    seconds: dict[str, float] = field(default_factory=dict)  # training time per phase

    def as_dict(self) -> dict[str, Any]:
        """The figures, JSON-ready (no models)."""
        return {
            "teacher_params": self.teacher_params,
            "student_params": self.student_params,
            "param_ratio": self.student_params / self.teacher_params if self.teacher_params else None,
            "teacher_top1": self.teacher_top1,
            "student_top1": self.student_top1,
            "baseline_top1": self.baseline_top1,
            "teacher_outputs": self.teacher_outputs,
            "options": asdict(self.options),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "history": {k: [float(v) for v in values] for k, values in self.history.items()},
        }


def distill(
    teacher: keras.Model,
    student: keras.Model,
    x_train: np.ndarray,
    y_train: np.ndarray | None,
    options: DistillOptions = DistillOptions(),  # frozen, so one shared default is safe
    x_eval: np.ndarray | None = None,
    y_eval: np.ndarray | None = None,
    baseline: bool = True,
    progress: Progress | None = None,
) -> DistillResult:
    """Train STUDENT (in place) on TEACHER's softened outputs and the labels.

    Y_TRAIN holds class indices (N,) or one-hot rows (N, classes). With BASELINE, a copy
    of the untrained student is trained on the labels alone for comparison. With X_EVAL
    and Y_EVAL, top-1 accuracy of the teacher, student and baseline is measured there.
    PROGRESS, when given, is called as progress(phase, epoch, epochs) after every epoch,
    phase "distillation" or "baseline".
    """
    classes = check_pair(teacher, student)
    x_train = np.asarray(x_train, dtype=np.float32)
    check_model_input(teacher, x_train, "training")
    check_model_input(student, x_train, "training")
    if y_train is None and (options.alpha > 0 or baseline):
        needs = " and ".join(
            what for what, wanted in (("the hard-label loss (alpha > 0)", options.alpha > 0),
                                      ("the labels-only baseline", baseline)) if wanted
        )
        raise ConversionError(
            f"the training data has no labels, which {needs} needs: give a .npz with `x` and `y` "
            "(class indices), or distil from the teacher alone with alpha 0 and no baseline"
        )
    labels = None if y_train is None else _labels(y_train, len(x_train), classes, "training")
    eval_labels = None
    if x_eval is not None and y_eval is not None:
        x_eval = np.asarray(x_eval, dtype=np.float32)
        check_model_input(teacher, x_eval, "evaluation")
        check_model_input(student, x_eval, "evaluation")
        eval_labels = _labels(y_eval, len(x_eval), classes, "evaluation")

    teacher_logits, teacher_kind = model_logits(teacher, x_train)

    initial_weights = student.get_weights()
    history: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    _fit(student, x_train, labels, teacher_logits, options, "distillation", history,
         x_eval if eval_labels is not None else None, eval_labels, progress)
    seconds["distillation"] = time.perf_counter() - started

    baseline_model = None
    if baseline:
        baseline_model = _copy_architecture(student)
        baseline_model.set_weights(initial_weights)
        started = time.perf_counter()
        _fit(baseline_model, x_train, labels, None, options, "baseline", history,
             x_eval if eval_labels is not None else None, eval_labels, progress)
        seconds["baseline"] = time.perf_counter() - started

    def top1(model: keras.Model | None) -> float | None:
        if model is None or eval_labels is None:
            return None
        return float(np.mean(_outputs(model, x_eval).argmax(axis=1) == eval_labels))

    return DistillResult(
        student=student,
        baseline=baseline_model,
        teacher_params=int(teacher.count_params()),
        student_params=int(student.count_params()),
        teacher_top1=top1(teacher),
        student_top1=top1(student),
        baseline_top1=top1(baseline_model),
        history=history,
        options=options,
        teacher_outputs=teacher_kind,
        seconds=seconds,
    )


# --- training ---------------------------------------------------------------------------


def _fit(
    model: keras.Model,
    x: np.ndarray,
    labels: np.ndarray | None,
    teacher_logits: np.ndarray | None,
    options: DistillOptions,
    phase: str,
    history: dict[str, list[float]],
    x_eval: np.ndarray | None,
    eval_labels: np.ndarray | None,
    progress: Progress | None,
) -> None:
    """Adam on the distillation loss (or, without TEACHER_LOGITS, on the labels alone)."""
    keras.utils.set_random_seed(options.seed)  # dropout and friends: same for both phases
    order_rng = np.random.default_rng(options.seed)  # same batches, in the same order, for both
    temperature = tf.constant(options.temperature, tf.float32)
    hard_weight = 1.0 if teacher_logits is None else options.alpha
    soft_weight = 0.0 if teacher_logits is None else 1.0 - options.alpha
    steps = options.epochs * int(np.ceil(len(x) / options.batch_size))
    # cosine decay to zero: the last epochs settle instead of hopping between nearby minima,
    # so the final figures (and the comparison with the baseline) are less of a draw
    optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(options.learning_rate, steps))
    losses_key, top1_key = f"{phase}_loss", f"{phase}_top1"
    history[losses_key] = []
    if eval_labels is not None:
        history[top1_key] = []

    with logits_view(model) as logits_of:

        @tf.function(reduce_retracing=True)
        def step(xb: tf.Tensor, yb: tf.Tensor, tb: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                z = logits_of(xb, True)
                loss = tf.constant(0.0)
                if hard_weight > 0:
                    loss += hard_weight * tf.reduce_mean(
                        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=z)
                    )
                if soft_weight > 0:
                    log_soft_t = tf.nn.log_softmax(tb / temperature)
                    log_soft_s = tf.nn.log_softmax(z / temperature)
                    kl = tf.reduce_sum(tf.exp(log_soft_t) * (log_soft_t - log_soft_s), axis=-1)
                    loss += soft_weight * temperature**2 * tf.reduce_mean(kl)
                if model.losses:  # kernel regularisers and the like
                    loss += tf.add_n(model.losses)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        @tf.function(reduce_retracing=True)
        def predict(xb: tf.Tensor) -> tf.Tensor:
            return tf.argmax(logits_of(xb, False), axis=-1)

        n = len(x)
        no_labels = np.zeros(n, np.int32)
        no_teacher = np.zeros((n, 1), np.float32)
        for epoch in range(1, options.epochs + 1):
            order = order_rng.permutation(n)
            total = 0.0
            for start in range(0, n, options.batch_size):
                idx = order[start:start + options.batch_size]
                loss = step(
                    tf.constant(x[idx]),
                    tf.constant((labels if labels is not None else no_labels)[idx]),
                    tf.constant((teacher_logits if teacher_logits is not None else no_teacher)[idx]),
                )
                total += float(loss) * len(idx)
            history[losses_key].append(total / n)
            if eval_labels is not None and x_eval is not None:
                predicted = np.concatenate([
                    predict(tf.constant(x_eval[i:i + EVAL_BATCH])).numpy()
                    for i in range(0, len(x_eval), EVAL_BATCH)
                ])
                history[top1_key].append(float(np.mean(predicted == eval_labels)))
            if progress is not None:
                progress(phase, epoch, options.epochs)


# --- checks and helpers -------------------------------------------------------------------


def _labels(y: np.ndarray, count: int, classes: int, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == classes:  # one-hot (or soft) rows
        y = y.argmax(axis=1)
    elif y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ConversionError(
            f"{what} labels have shape {y.shape}; give class indices (N,) or one-hot rows (N, {classes})"
        )
    if len(y) != count:
        raise ConversionError(f"{count} {what} samples but {len(y)} labels; they must match one to one")
    if not np.all(np.equal(np.mod(y, 1), 0)) or y.min() < 0 or y.max() >= classes:
        raise ConversionError(
            f"{what} labels must be class indices 0..{classes - 1} (got values {y.min()}..{y.max()})"
        )
    return y.astype(np.int32)


def _copy_architecture(model: keras.Model) -> keras.Model:
    try:
        copy = keras.models.clone_model(model)
    except Exception as exc:
        raise ConversionError(
            f"cannot copy the student {model.name} for the labels-only baseline: {exc}; "
            "run without the baseline"
        ) from exc
    copy.name = f"{model.name}_baseline"
    return copy


def _outputs(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return np.concatenate([
        np.asarray(model(tf.constant(x[i:i + EVAL_BATCH]), training=False))
        for i in range(0, len(x), EVAL_BATCH)
    ])
