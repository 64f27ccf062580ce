"""How far a converted model's outputs are from the float model's, and how accurate both are.

Plain NumPy, so the same figures serve every variant (int8, float16, pruned...) whichever
runtime produced the outputs. Every value returned is a plain ``float``/``int`` (never NaN
or infinity), ready for ``json.dumps``.

Every output, whatever its shape, gets ``snr_db``, ``cosine`` and ``max_abs_error``
against the float model (:func:`compare_outputs`). Outputs of class scores, (samples,
classes), also get ``agreement`` (how often the variant picks the float model's top
class) and, with labels, ``top1`` and ``topk`` (:func:`compare` for one such output).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgefleet.converter.errors import ConversionError
from edgefleet.tensors import Arrays

# SNR reported for identical outputs (and the floor for outputs with no signal at all).
# Float32 round-off alone stays below about 150 dB, so the cap never hides a real error.
MAX_SNR_DB = 200.0
DEFAULT_TOP_K = 5


def compare(
    reference: np.ndarray,
    outputs: np.ndarray,
    labels: np.ndarray | None = None,
    top_k: int = DEFAULT_TOP_K,
) -> dict[str, Any]:
    """Figures for a variant's OUTPUTS against the float model's REFERENCE outputs.

    Both are (N, classes) scores for the same N inputs. Returns:

    - ``samples``: N.
    - ``agreement``: share of samples whose top class (argmax) equals the reference's.
    - ``snr_db``: 10*log10(sum(reference^2) / sum((outputs - reference)^2)). Identical
      outputs would give infinity; the value is capped to +/- ``MAX_SNR_DB`` (200 dB) so
      it stays JSON-safe and comparable: 200.0 means "identical".
    - ``cosine``: mean over samples of the cosine similarity of the two score vectors
      (1.0 for two all-zero vectors, 0.0 when only one of them is all zero).
    - with LABELS (N integer class indices) also ``top1``, ``topk`` (share of samples
      whose label is among the K highest outputs) and ``k`` = min(TOP_K, classes).
    """
    reference = _scores(reference, "reference outputs")
    outputs = _scores(outputs, "outputs")
    if reference.shape != outputs.shape:
        raise ConversionError(
            f"cannot compare outputs of shape {outputs.shape} with reference outputs of shape "
            f"{reference.shape}: both must be (samples, classes) for the same inputs"
        )
    result: dict[str, Any] = {
        "samples": len(outputs),
        "agreement": float(np.mean(outputs.argmax(axis=1) == reference.argmax(axis=1))),
        "snr_db": snr_db(reference, outputs),
        "cosine": _mean_cosine(reference, outputs),
    }
    if labels is not None:
        result.update(_label_metrics(outputs, labels, top_k))
    return result


def reference_metrics(
    reference: np.ndarray, labels: np.ndarray | None, top_k: int = DEFAULT_TOP_K
) -> dict[str, Any]:
    """``samples``, ``top1``, ``topk`` and ``k`` of the float model itself on labelled data.

    Without LABELS only ``samples``: the accuracy gate then falls back to agreement.
    """
    reference = _scores(reference, "reference outputs")
    if labels is None:
        return {"samples": len(reference)}
    return {"samples": len(reference), **_label_metrics(reference, labels, top_k)}


def snr_db(reference: np.ndarray, outputs: np.ndarray) -> float:
    """Signal-to-noise ratio of OUTPUTS against REFERENCE in dB, capped to +/- MAX_SNR_DB."""
    reference = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((np.asarray(outputs, dtype=np.float64) - reference) ** 2))
    signal = float(np.sum(reference**2))
    if noise == 0.0:
        return MAX_SNR_DB
    if signal == 0.0:
        return -MAX_SNR_DB
    return float(np.clip(10.0 * np.log10(signal / noise), -MAX_SNR_DB, MAX_SNR_DB))


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    dots = np.sum(a64 * b64, axis=1)
    both_zero = ~a64.any(axis=1) & ~b64.any(axis=1)
    cosine = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    cosine[both_zero] = 1.0
    return float(np.mean(np.clip(cosine, -1.0, 1.0)))


def _label_metrics(outputs: np.ndarray, labels: np.ndarray, top_k: int) -> dict[str, Any]:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(outputs):
        raise ConversionError(
            f"labels of shape {labels.shape} do not fit {len(outputs)} outputs: "
            "expected one class index per sample"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ConversionError("labels must be integer class indices (not one-hot or scores)")
        labels = labels.astype(np.int64)
    if top_k < 1:
        raise ConversionError(f"top_k must be at least 1 (got {top_k})")
    k = min(top_k, outputs.shape[1])
    # the K highest scores per row, in no particular order
    best = np.argpartition(-outputs, k - 1, axis=1)[:, :k]
    return {
        "top1": float(np.mean(outputs.argmax(axis=1) == labels)),
        "topk": float(np.mean(np.any(best == labels[:, None], axis=1))),
        "k": int(k),
    }


def _scores(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or len(x) == 0 or x.shape[1] == 0:
        raise ConversionError(
            f"{what} of shape {x.shape} are not (samples, classes) scores; these figures need a "
            "classifier's outputs for at least one sample"
        )
    if not np.all(np.isfinite(x)):
        raise ConversionError(f"{what} contain NaN or infinite values")
    return x.astype(np.float32, copy=False)


# --- every output, by name -------------------------------------------------------------------


def compare_outputs(
    reference: Arrays, outputs: Arrays, class_outputs: list[str], labels: np.ndarray | None = None,
    labelled: str | None = None, top_k: int = DEFAULT_TOP_K,
) -> dict[str, Any]:
    """Figures per output of a variant's OUTPUTS against the float model's REFERENCE (both by
    the reference's output names), and a headline: ``agreement``, ``top1``, ``topk``, ``k`` of
    the LABELLED (else the first) class-score output, the lowest ``snr_db`` and ``cosine``
    over all outputs. LABELS (class indices) belong to the output named LABELLED."""
    per: dict[str, dict[str, Any]] = {}
    for name, ref in reference.items():
        out = np.asarray(outputs[name])
        if out.shape != ref.shape:
            raise ConversionError(f"output {name!r}: shape {out.shape} cannot be compared with the float "
                                  f"model's {ref.shape}")
        if name in class_outputs:
            figures = compare(ref, out, labels if name == labelled else None, top_k)
            figures["max_abs_error"] = max_abs_error(ref, out)
        else:
            flat_ref, flat_out = _rows(ref), _rows(out)
            figures = {"samples": len(ref), "snr_db": snr_db(flat_ref, flat_out),
                       "cosine": _mean_cosine(flat_ref, flat_out), "max_abs_error": max_abs_error(ref, out)}
        figures["class_scores"] = name in class_outputs
        figures["constant"] = is_constant(out)
        per[name] = figures
    return {"samples": _count(reference), **_headline(per, class_outputs, labelled), "outputs": per}


def reference_figures(reference: Arrays, class_outputs: list[str], labels: np.ndarray | None = None,
                      labelled: str | None = None, top_k: int = DEFAULT_TOP_K) -> dict[str, Any]:
    """The float model's own figures per output (top-1/top-k of the LABELLED output, and
    whether each output is ``constant`` over the data), with the same headline keys."""
    per: dict[str, dict[str, Any]] = {}
    for name, ref in reference.items():
        figures: dict[str, Any] = {"class_scores": name in class_outputs, "constant": is_constant(ref)}
        if name == labelled and labels is not None:
            figures.update(reference_metrics(ref, labels, top_k))
        per[name] = figures
    return {"samples": _count(reference), **_headline(per, class_outputs, labelled), "outputs": per}


def max_abs_error(reference: np.ndarray, outputs: np.ndarray) -> float:
    diff = np.abs(np.asarray(outputs, np.float64) - np.asarray(reference, np.float64))
    return float(np.max(diff)) if diff.size else 0.0


def is_constant(values: np.ndarray) -> bool:
    """The same output for every sample (at least two): agreeing with it proves nothing."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return False
    tolerance = 1e-6 * max(1.0, float(np.max(np.abs(v))) if v.size else 0.0)
    return bool(np.all(np.abs(v - v[:1]) <= tolerance))


def _rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x.reshape(len(x), -1) if x.ndim != 1 else x[:, None]


def _count(arrays: Arrays) -> int:
    return len(next(iter(arrays.values()))) if arrays else 0


def _headline(per: dict[str, dict[str, Any]], class_outputs: list[str],
              labelled: str | None) -> dict[str, Any]:
    headline: dict[str, Any] = {}
    primary = labelled if labelled in per else next((n for n in class_outputs if n in per), None)
    if primary is not None:
        headline.update({k: per[primary][k] for k in ("agreement", "top1", "topk", "k") if k in per[primary]})
    snrs = [f["snr_db"] for f in per.values() if "snr_db" in f]
    if snrs:
        headline["snr_db"] = min(snrs)
        headline["cosine"] = min(f["cosine"] for f in per.values() if "cosine" in f)
    return headline
