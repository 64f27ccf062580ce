"""The golden self-test set a bundle carries: which samples, how compactly, and the
tolerance the device applies to each output (the format is edgefleet.protocol.golden).

A size budget keeps a bundle about the size of its model: as many samples as fit (4 at
least, 16 at most), image inputs shrunk by a power of two where even 4 would not fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgefleet.protocol import golden as fmt
from edgefleet.runtime import TensorSpec, TFLiteModel
from edgefleet.tensors import Arrays, are_probabilities, has_scores_shape

MIN_SAMPLES, MAX_SAMPLES = 4, 16
# Self-test tolerance in output quantisation steps: another correct kernel (another runtime
# version, an accelerator) may round a step differently; a wrong model is off by far more.
SELFTEST_TOLERANCE_STEPS = 2
# Float outputs: kernels differ by ~1e-6 here; fp16 arithmetic on an accelerator by ~1e-3
# (relative to the output's size, for outputs far from 0..1 such as box coordinates).
FLOAT_TOLERANCE = 2e-3
# Golden samples need this lead of the top class over the next (in output steps): kernels
# measured here differ by up to 3 steps on single outputs, so a correct board keeps argmax.
GOLDEN_MIN_MARGIN_STEPS = 16
GOLDEN_MIN_MARGIN_FLOAT = 0.05  # the same idea for float outputs (probabilities)
GOLDEN_POOL = 512  # candidates the golden set is chosen from, at most
POOL_BYTES = 64 * 2**20  # and at most this many bytes of them, restored (images are large)
CHUNK = 32  # candidates run at a time


def golden_budget(model_size: int) -> int:
    """Bytes the golden set may take: 32 KiB plus 5 % of the model."""
    return 32 * 1024 + model_size // 20


def selftest_tolerance(output: TensorSpec, reference: np.ndarray | None = None) -> float:
    """Largest mean absolute output error a correct model may show on another kernel."""
    if output.quantized:
        return SELFTEST_TOLERANCE_STEPS * output.scale
    size = float(np.mean(np.abs(reference))) if reference is not None and np.size(reference) else 0.0
    return FLOAT_TOLERANCE * max(1.0, size)


def class_score_outputs(model: TFLiteModel, outputs: Arrays, classes: int | None = None,
                        task: str | None = None) -> list[str]:
    """The outputs that hold class scores: one row per sample, and either the task says
    classification, labels with CLASSES classes fit the row, or the rows are probabilities."""
    found = []
    for spec in model.outputs:
        if not has_scores_shape(spec):
            continue
        width = spec.sample_shape[0]
        if task == "classification" or (classes is not None and width >= classes) \
                or (task is None and are_probabilities(outputs[spec.name])):
            found.append(spec.name)
    return found


@dataclass(frozen=True)
class Layout:
    samples: int
    upsample: dict[str, int]  # input name -> factor (1: stored whole)
    bytes_per_sample: int


def _stored_dtype(spec: TensorSpec) -> np.dtype:
    return np.dtype(spec.dtype) if np.issubdtype(np.dtype(spec.dtype), np.integer) else np.dtype(np.float16)


def _output_bytes(spec: TensorSpec, class_scores: bool) -> int:
    per_sample = int(np.prod(spec.sample_shape, dtype=np.int64)) if spec.sample_shape else 1
    compared = per_sample if class_scores else min(per_sample, fmt.SAMPLED_ELEMENTS)
    return compared * (1 if spec.quantized and spec.dtype != "int16" else 4)


def choose_layout(model: TFLiteModel, class_outputs: list[str], budget: int) -> Layout:
    """The fewest shrinking and the most samples that fit BUDGET (at least MIN_SAMPLES)."""
    outputs = sum(_output_bytes(s, s.name in class_outputs) for s in model.outputs)
    factors = {s.name: 1 for s in model.inputs}

    def per_sample() -> int:
        total = outputs
        for s in model.inputs:
            elements = int(np.prod(s.sample_shape, dtype=np.int64)) if s.sample_shape else 1
            total += elements * _stored_dtype(s).itemsize // factors[s.name] ** 2
        return total

    shrinkable = [s for s in model.inputs if fmt.image_like(s.shape)]
    while per_sample() * MIN_SAMPLES > budget:
        grown = False
        for s in sorted(shrinkable, key=lambda s: -int(np.prod(s.sample_shape))):
            f = factors[s.name] * 2
            if f <= fmt.MAX_UPSAMPLE and s.shape[1] % f == 0 and s.shape[2] % f == 0 and s.shape[1] // f >= 4:
                factors[s.name] = f
                grown = True
                break
        if not grown:
            break  # as small as it gets: MIN_SAMPLES anyway, over the budget
    size = per_sample()
    return Layout(max(MIN_SAMPLES, min(MAX_SAMPLES, budget // max(size, 1))), factors, size)


def _store(spec: TensorSpec, x: np.ndarray, factor: int) -> np.ndarray:
    """Inputs as the golden set keeps them: in the tensor's own integer type, else float16.
    X holds real values, or the raw tensor when it already has the tensor's integer type."""
    x = np.asarray(x)
    raw = x.dtype == np.dtype(spec.dtype) and np.issubdtype(x.dtype, np.integer)
    if factor > 1:
        shrunk = fmt.shrink(x.astype(np.float32), factor)
        x = np.round(shrunk).astype(x.dtype) if raw else shrunk
    if np.issubdtype(_stored_dtype(spec), np.integer):
        return spec.quantize(x)  # a raw tensor stays as it is
    return x.astype(np.float32).astype(np.float16)


def _margins(model: TFLiteModel, stored: Arrays, upsample: dict[str, int],
             class_outputs: list[str]) -> np.ndarray:
    """Per candidate, the lead of its top class over the next, in units of the lead needed
    (the smallest over the class-score outputs). Run a chunk at a time: candidates for an
    image model are megabytes each once restored."""
    specs = [next(s for s in model.outputs if s.name == name) for name in class_outputs]
    count = len(next(iter(stored.values())))
    found = []
    for start in range(0, count, CHUNK):
        chunk = {name: fmt.restore(a[start:start + CHUNK], upsample[name]) for name, a in stored.items()}
        outputs, _ = model.run(chunk)
        margins = []
        for spec in specs:
            top2 = np.sort(outputs[spec.name].reshape(len(outputs[spec.name]), -1), axis=1)[:, -2:]
            needed = GOLDEN_MIN_MARGIN_STEPS * spec.scale if spec.quantized else GOLDEN_MIN_MARGIN_FLOAT
            margins.append((top2[:, 1] - top2[:, 0]) / needed)
        found.append(np.min(margins, axis=0))
    return np.concatenate(found)


def _pick(margin: np.ndarray | None, count: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """N candidate indices that make a sharp self-test.

    With class scores (MARGIN given), every pick has a clear lead of its top class, so a
    kernel that rounds differently cannot flip the argmax of a correct model; half the
    picks are the least confident of those (confident inputs give near 0/1 outputs that
    even a different model reproduces), half are random. Without class scores, random picks.
    """
    if margin is None:
        return np.sort(rng.permutation(count)[:n])
    clear = np.flatnonzero(margin >= 1.0)
    if len(clear) <= n:
        return np.sort(np.argsort(-margin, kind="stable")[:n])
    by_margin = clear[np.argsort(margin[clear], kind="stable")]
    hardest = by_margin[: n // 2]
    rest = rng.permutation(by_margin[n // 2:])[: n - len(hardest)]
    return np.sort(np.concatenate([hardest, rest]))


def _restored_bytes(model: TFLiteModel) -> int:
    """Bytes of one sample's inputs as the model takes them (float32 for float inputs)."""
    total = 0
    for s in model.inputs:
        elements = int(np.prod(s.sample_shape, dtype=np.int64)) if s.sample_shape else 1
        total += elements * max(np.dtype(s.dtype).itemsize, 1)
    return max(total, 1)


def build_golden(model: TFLiteModel, pool: Arrays, class_outputs: list[str],
                 budget: int, max_samples: int = MAX_SAMPLES) -> tuple[bytes, dict[str, Any]]:
    """golden.npz and the manifest's `selftest` section for MODEL, chosen from POOL
    (real-valued inputs by input name). The references are MODEL's own outputs on the
    inputs exactly as the device will restore them. MAX_SAMPLES caps the count below what
    the budget allows (`convert(golden_samples=...)`)."""
    layout = choose_layout(model, class_outputs, budget)
    wanted = min(layout.samples, max_samples)
    rng = np.random.default_rng(0)
    count = len(next(iter(pool.values())))
    # candidates: up to GOLDEN_POOL, but no more than POOL_BYTES of restored inputs
    candidates = max(wanted, min(GOLDEN_POOL, POOL_BYTES // _restored_bytes(model)))
    order = np.sort(rng.permutation(count)[:candidates])
    stored = {s.name: _store(s, np.asarray(pool[s.name])[order], layout.upsample[s.name])
              for s in model.inputs}
    margin = _margins(model, stored, layout.upsample, class_outputs) if class_outputs else None
    picks = _pick(margin, len(order), min(wanted, len(order)), rng)
    stored = {name: a[picks] for name, a in stored.items()}
    outputs, _ = model.run({name: fmt.restore(a, layout.upsample[name]) for name, a in stored.items()})
    checks = {}
    for spec in model.outputs:
        checks[spec.name] = fmt.OutputCheck(
            selftest_tolerance(spec, outputs[spec.name]), class_scores=spec.name in class_outputs,
            scale=spec.scale if spec.quantized else 0.0, zero_point=spec.zero_point if spec.quantized else 0)
    data, section = fmt.encode(stored, layout.upsample, outputs, checks)
    section["budget_bytes"] = budget
    return data, section
