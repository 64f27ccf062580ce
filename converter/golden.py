"""The golden self-test set a bundle carries, and the tolerance the device applies."""

from __future__ import annotations

import io

import numpy as np

from edgefleet.converter.evaluate import tflite_outputs
from edgefleet.runtime import TensorSpec, TFLiteModel

# Self-test tolerance in output quantisation steps: another correct kernel (another runtime
# version, an accelerator) may round a step differently; a wrong model is off by far more.
SELFTEST_TOLERANCE_STEPS = 2
# Float outputs: kernels differ by ~1e-6 here; fp16 arithmetic on an accelerator by ~1e-3.
FLOAT_TOLERANCE = 2e-3
# Golden samples need this lead of the top class over the next (in output steps): kernels
# measured here differ by up to 3 steps on single outputs, so a correct board keeps argmax.
GOLDEN_MIN_MARGIN_STEPS = 16
GOLDEN_MIN_MARGIN_FLOAT = 0.05  # the same idea for float outputs (probabilities)
GOLDEN_POOL = 512  # candidates the golden set is chosen from


def selftest_tolerance(output: TensorSpec) -> float:
    """Largest mean absolute output error a correct model may show on another kernel."""
    if output.quantized:
        return SELFTEST_TOLERANCE_STEPS * output.scale
    return FLOAT_TOLERANCE


def pick_golden(model: TFLiteModel, x: np.ndarray, n: int) -> np.ndarray:
    """N inputs from X that make a sharp self-test for the converted model.

    Every pick has a clear lead of its top class, so a kernel that rounds differently
    cannot flip the argmax of a correct model and fail `min_top1_agreement = 1.0`.
    Within that, half the picks are the least confident inputs: confident inputs give
    near 0/1 outputs that even a different model reproduces, less confident ones expose
    wrong weights or arithmetic. The other half are random (typical inputs). Falls back
    to the largest margins when too few inputs have a clear lead.
    """
    rng = np.random.default_rng(0)
    pool = x[np.sort(rng.permutation(len(x))[:GOLDEN_POOL])]
    outputs = tflite_outputs(model, pool)
    if outputs.ndim != 2 or outputs.shape[1] < 2:
        return pool[:n]  # not a classifier's scores: any inputs serve
    top2 = np.sort(outputs, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    spec = model.outputs[0]
    needed = GOLDEN_MIN_MARGIN_STEPS * spec.scale if spec.quantized else GOLDEN_MIN_MARGIN_FLOAT
    clear = np.flatnonzero(margin >= needed)
    if len(clear) <= n:
        return pool[np.sort(np.argsort(-margin, kind="stable")[:n])]
    by_margin = clear[np.argsort(margin[clear], kind="stable")]
    hardest = by_margin[: n // 2]
    rest = rng.permutation(by_margin[n // 2 :])[: n - len(hardest)]
    return pool[np.sort(np.concatenate([hardest, rest]))]


def golden_npz(model: TFLiteModel, x: np.ndarray, float_outputs: np.ndarray) -> bytes:
    """golden.npz for inputs X: the converted model's outputs here are the reference."""
    buf = io.BytesIO()
    np.savez(buf, inputs=np.asarray(x, np.float32),
             reference_outputs=np.asarray(tflite_outputs(model, x), np.float32),
             float_outputs=np.asarray(float_outputs, np.float32))
    return buf.getvalue()
