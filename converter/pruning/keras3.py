"""Magnitude pruning for Keras 3 models: masks, a polynomial sparsity schedule and strip.

Why a native implementation: tensorflow-model-optimization (tfmot) only works with the
legacy tf-keras (Keras 2) API; it rejects Keras 3 models and its maintainers have no plan
to port it (tensorflow/model-optimization#1119). Keras 3 is what TensorFlow >= 2.16 gives
by default and what `converter.sources.load_model_source` returns, so pruning a `.keras` file
needs this module. :mod:`converter.pruning.tfmot` handles tf-keras models with tfmot itself.

Same semantics as tfmot's `prune_low_magnitude` + `UpdatePruningStep` + `strip_pruning`
(tensorflow_model_optimization/python/core/sparsity/keras/, read from version 0.8.1):

- Every prunable layer gets one mask per kernel: Dense and Conv2D `kernel`,
  DepthwiseConv2D `depthwise_kernel`. Biases are never pruned. Like tfmot without a
  pruning policy, every prunable layer is pruned, the first and last included.
  (One difference: tfmot's registry lists DepthwiseConv2D with no prunable weights;
  here its kernel is pruned as asked for in issue 3 -- pass `include_depthwise=False`
  to `prunable_weights` / `MagnitudePruning` to get tfmot's behaviour.)
- Training steps are counted from 1. A mask is recomputed at step s when
  begin_step <= s <= end_step and (s - begin_step) % frequency == 0, keeping the
  round(size * (1 - sparsity(s))) largest magnitudes (at least one) of that kernel.
- The weights are multiplied by their mask after every training step, so the next
  forward pass, the saved weights and the stripped model all see real zeros. A new mask
  is computed from the weights after the optimizer update and before re-masking, as in
  tfmot, so a pruned weight whose gradient keeps pushing it can come back.
- m-by-n structure (tfmot's `sparsity_m_by_n`): m zeros in every block of n consecutive
  weights along the input-channel axis (the last axis of TFLite's weight layout). As in
  tfmot, that mask is computed once, before the first step, and the schedule is not used:
  the sparsity is m/n.

Masks live in the callback, not in the model: the model never gets wrappers, and
`strip` returns a plain copy with the final masks applied.
"""

from __future__ import annotations

from edgefleet.converter import tfenv  # noqa: F401  (before Keras loads TensorFlow)

# isort: split
from dataclasses import dataclass, field

import keras
import numpy as np

from edgefleet.converter.errors import ConversionError
from edgefleet.converter.pruning.plan import check_m_by_n
from edgefleet.converter.tfutil import leaf_layers

# layer class -> attribute holding the kernel that gets a mask
KERNEL_ATTRIBUTES: tuple[tuple[type, str], ...] = (
    (keras.layers.Dense, "kernel"),
    (keras.layers.Conv2D, "kernel"),
    (keras.layers.DepthwiseConv2D, "depthwise_kernel"),
)


@dataclass(frozen=True)
class PolynomialSchedule:
    """tfmot's `PolynomialDecay` pruning schedule, the same maths in plain Python.

    From tensorflow_model_optimization/python/core/sparsity/keras/pruning_schedule.py
    (`PolynomialDecay.__call__` and `PruningSchedule._should_prune_in_step`):

        p = min(1, max(0, (step - begin_step) / (end_step - begin_step)))
        sparsity(step) = final + (initial - final) * (1 - p) ** power

    and masks are updated at steps where begin_step <= step <= end_step and
    (step - begin_step) % frequency == 0. tfmot's default power is 3: sparsity rises
    fast at first and levels off towards `final` (Zhu and Gupta, arXiv:1710.01878).
    """

    initial_sparsity: float
    final_sparsity: float
    begin_step: int
    end_step: int
    frequency: int = 100
    power: float = 3

    def __post_init__(self) -> None:
        # the checks of tfmot's _validate_step (end_step -1 is not allowed here either)
        # and _validate_sparsity
        for name in ("initial_sparsity", "final_sparsity"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConversionError(f"{name} must be in [0, 1), got {value}")
        if self.begin_step < 0:
            raise ConversionError(f"begin_step must be >= 0, got {self.begin_step}")
        if self.end_step <= self.begin_step:
            raise ConversionError(
                f"end_step ({self.end_step}) must come after begin_step ({self.begin_step})"
            )
        if self.frequency <= 0:
            raise ConversionError(f"frequency must be > 0, got {self.frequency}")

    def sparsity(self, step: int) -> float:
        p = min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1 - p) ** self.power

    def should_prune(self, step: int) -> bool:
        in_range = self.begin_step <= step <= self.end_step
        return in_range and (step - self.begin_step) % self.frequency == 0


@dataclass
class PruneTarget:
    """One kernel being pruned: its layer, the variable and the current mask."""

    layer: keras.layers.Layer
    variable: keras.Variable
    mask: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.mask = np.ones(tuple(self.variable.shape), dtype=np.float32)

    @property
    def name(self) -> str:
        return self.layer.name


def prunable_weights(model: keras.Model, include_depthwise: bool = True) -> list[PruneTarget]:
    """The kernels that get masks, in layer order (nested models included)."""
    targets: list[PruneTarget] = []
    for layer in _walk(model):
        for cls, attribute in KERNEL_ATTRIBUTES:
            if cls is keras.layers.DepthwiseConv2D and not include_depthwise:
                continue
            if isinstance(layer, cls) and getattr(layer, attribute, None) is not None:
                targets.append(PruneTarget(layer, getattr(layer, attribute)))
                break
    return targets


def _walk(model: keras.Model) -> list[keras.layers.Layer]:
    return leaf_layers(model)


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """1 for the round(size * (1 - sparsity)) largest |weights| (at least one), else 0.

    tfmot keeps every weight >= the k-th largest magnitude, so ties can keep more than k;
    this keeps exactly k (ties broken by position), which keeps the reached sparsity exact.
    """
    flat = np.abs(np.asarray(weights, dtype=np.float32)).ravel()
    keep = max(round(flat.size * (1.0 - sparsity)), 1)
    mask = np.zeros(flat.size, dtype=np.float32)
    if keep >= flat.size:
        mask[:] = 1.0
    else:
        mask[np.argpartition(-flat, keep - 1)[:keep]] = 1.0
    return mask.reshape(np.shape(weights))


def m_by_n_mask(weights: np.ndarray, m_by_n: tuple[int, int]) -> np.ndarray:
    """m zeros (the smallest magnitudes) in every block of n weights along the input channels.

    The input-channel axis is the second to last of a Keras kernel (Dense (in, out), Conv2D
    (h, w, in, out), DepthwiseConv2D (h, w, in, multiplier)) and the last of TFLite's layout,
    which is where tfmot's `generate_m_by_n_mask` puts its blocks. A channel count that is not
    a multiple of n is padded first (tfmot pads with zeros), so the short last block keeps at
    most n - m of its weights.
    """
    zeros, block = m_by_n
    w = np.moveaxis(np.abs(np.asarray(weights, dtype=np.float32)), -2, -1)  # (..., in)
    channels = w.shape[-1]
    rows = w.reshape(-1, channels)
    pad = (-channels) % block
    # padding ranks below every real weight (even one of exactly 0), so it is dropped first
    ranked = np.concatenate([rows, np.full((rows.shape[0], pad), -1.0, np.float32)], axis=1)
    blocks = ranked.reshape(-1, block)
    smallest = np.argpartition(blocks, zeros - 1, axis=1)[:, :zeros]
    mask = np.ones_like(blocks)
    np.put_along_axis(mask, smallest, 0.0, axis=1)
    mask = mask.reshape(ranked.shape)[:, :channels].reshape(w.shape)
    return np.moveaxis(mask, -1, -2)


class MagnitudePruning(keras.callbacks.Callback):
    """Pass to `model.fit(callbacks=[...])`: updates masks on schedule, applies them every step.

    The step counter counts training batches across epochs; it starts at 0 and, like
    tfmot's `pruning_step`, the first batch is step 1. Use one callback for one `fit`.
    """

    def __init__(
        self,
        schedule: PolynomialSchedule,
        m_by_n: tuple[int, int] | None = None,
        include_depthwise: bool = True,
    ):
        super().__init__()
        self.schedule = schedule
        self.m_by_n = check_m_by_n(m_by_n)
        self.include_depthwise = include_depthwise
        self.step = 0
        self.targets: list[PruneTarget] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not self.targets:
            self.targets = prunable_weights(self.model, self.include_depthwise)
        self._prepare_step(self.step + 1)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.step += 1
        self._prepare_step(self.step + 1)

    def _prepare_step(self, step: int) -> None:
        """Before STEP's forward pass: new masks if STEP is an update step, then mask."""
        # m-by-n: as tfmot, "Update structured sparsity masks only at step 1"
        due = step == 1 if self.m_by_n is not None else self.schedule.should_prune(step)
        if due:
            sparsity = self.schedule.sparsity(step)
            for target in self.targets:
                weights = np.asarray(target.variable.numpy())
                if self.m_by_n is not None:
                    target.mask = m_by_n_mask(weights, self.m_by_n)
                else:
                    target.mask = magnitude_mask(weights, sparsity)
        self.apply_masks()

    def apply_masks(self) -> None:
        for target in self.targets:
            target.variable.assign(
                keras.ops.multiply(target.variable.value, keras.ops.cast(target.mask, target.variable.dtype))
            )


def strip(model: keras.Model, pruning: MagnitudePruning) -> keras.Model:
    """A plain, uncompiled copy of MODEL with the final masks applied (zeros are real zeros).

    Like tfmot's `strip_pruning` it clones the model; there are no wrappers to remove
    since this implementation never adds any.
    """
    pruning.apply_masks()
    try:
        stripped = keras.models.clone_model(model)
    except Exception as exc:  # subclassed models cannot be cloned
        raise ConversionError(f"could not copy the pruned model: {exc}") from exc
    stripped.set_weights(model.get_weights())
    return stripped
