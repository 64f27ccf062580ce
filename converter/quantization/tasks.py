"""Figures of a declared task (``--task``), a variant's outputs against the float model's.

The layouts assumed, which are MediaPipe's (and most raw SSD-style detectors'):

- ``detection``: a boxes output (samples, anchors, K >= 4) whose first 4 values per anchor
  row are the box as (x_center, y_center, width, height), and a scores output (samples,
  anchors, 1) or (samples, anchors) with the same anchors; scores outside 0..1 are logits
  (a sigmoid makes them probabilities). An anchor is a detection when its probability is
  above 0.5. A float detection is matched when the variant detects the same anchor with a
  box of IoU >= 0.5: both rows are relative to the same anchor and IoU does not change
  under a shift, so no anchor decoding is needed.
- ``landmarks``: every output of 6 or more values per sample that divide into points of
  3 values (x, y, z), else of 2 (x, y); the mean point error is the mean Euclidean distance
  of (x, y), in the output's units and relative to the float points' extent.
- ``segmentation``: every output (samples, H, W) or (samples, H, W, C) with H, W >= 8;
  one channel: the mask is probability > 0.5 (logits through a sigmoid); several channels:
  the class map is the argmax, IoU averaged over the classes present. Mask IoU is averaged
  over samples (1.0 where both masks are empty).
- ``classification``: top-1/top-k and agreement of the class-score outputs (converter.golden's
  class_score_outputs decides which), nothing more here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgefleet.converter.errors import ConversionError
from edgefleet.tensors import Arrays

TASKS = ("classification", "detection", "landmarks", "segmentation")
SCORE_THRESHOLD = 0.5
MATCH_IOU = 0.5
MASK_THRESHOLD = 0.5


def check_task(task: str | None) -> None:
    if task is not None and task not in TASKS:
        raise ConversionError(f"--task {task!r}: choose one of {', '.join(TASKS)}")


def task_figures(task: str | None, reference: Arrays, outputs: Arrays) -> dict[str, Any] | None:
    """{"task", "outputs": {name: figures}, "note"?} for TASK, or None without a task."""
    if task is None or task == "classification":
        return None
    if task == "detection":
        found = {boxes: _detection(reference[boxes], outputs[boxes], reference[scores], outputs[scores])
                 | {"scores": scores} for boxes, scores in detection_pairs(reference)}
    elif task == "landmarks":
        found = {n: f for n in reference if (f := _landmarks(reference[n], outputs[n])) is not None}
    elif task == "segmentation":
        found = {n: f for n in reference if (f := _segmentation(reference[n], outputs[n])) is not None}
    else:
        raise ConversionError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    result: dict[str, Any] = {"task": task, "outputs": found}
    if not found:
        result["note"] = f"no output has the {task} layout assumed (see converter.quantization.tasks)"
    return result


# --- detection -------------------------------------------------------------------------------


def detection_pairs(reference: Arrays) -> list[tuple[str, str]]:
    """(boxes, scores) output names with the same anchor count."""
    boxes = [n for n, a in reference.items() if a.ndim == 3 and a.shape[2] >= 4]
    scores = [n for n, a in reference.items() if (a.ndim == 3 and a.shape[2] == 1) or a.ndim == 2]
    pairs = []
    for b in boxes:
        match = next((s for s in scores if s != b and reference[s].shape[1] == reference[b].shape[1]), None)
        if match is not None:
            pairs.append((b, match))
    return pairs


def _probabilities(values: np.ndarray, logits: bool) -> np.ndarray:
    v = np.asarray(values, np.float64).reshape(len(values), -1)
    return 1.0 / (1.0 + np.exp(-np.clip(v, -60, 60))) if logits else v


def _iou_cxcywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes (..., 4) given as (x_center, y_center, width, height)."""
    wa, ha, wb, hb = np.abs(a[..., 2]), np.abs(a[..., 3]), np.abs(b[..., 2]), np.abs(b[..., 3])
    w = np.clip(np.minimum(a[..., 0] + wa / 2, b[..., 0] + wb / 2)
                - np.maximum(a[..., 0] - wa / 2, b[..., 0] - wb / 2), 0, None)
    h = np.clip(np.minimum(a[..., 1] + ha / 2, b[..., 1] + hb / 2)
                - np.maximum(a[..., 1] - ha / 2, b[..., 1] - hb / 2), 0, None)
    inter = w * h
    union = wa * ha + wb * hb - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _detection(ref_boxes: np.ndarray, out_boxes: np.ndarray, ref_scores: np.ndarray,
               out_scores: np.ndarray) -> dict[str, Any]:
    logits = bool(np.min(ref_scores) < 0 or np.max(ref_scores) > 1)
    p_ref, p_out = _probabilities(ref_scores, logits), _probabilities(out_scores, logits)
    ref_det, out_det = p_ref > SCORE_THRESHOLD, p_out > SCORE_THRESHOLD
    iou = _iou_cxcywh(np.asarray(ref_boxes, np.float64)[..., :4], np.asarray(out_boxes, np.float64)[..., :4])
    matched = ref_det & out_det & (iou >= MATCH_IOU)
    n_ref, n_out, n_matched = int(ref_det.sum()), int(out_det.sum()), int(matched.sum())
    return {
        "layout": "boxes (x_center, y_center, width, height) per anchor; scores "
                  + ("logits" if logits else "probabilities"),
        "score_threshold": SCORE_THRESHOLD, "match_iou": MATCH_IOU,
        "float_detections": n_ref, "variant_detections": n_out, "matched": n_matched,
        "recall": n_matched / n_ref if n_ref else None,
        "precision": n_matched / n_out if n_out else None,
        "mean_iou": float(np.mean(iou[matched])) if n_matched else None,
    }


# --- landmarks -------------------------------------------------------------------------------


def _landmarks(ref: np.ndarray, out: np.ndarray) -> dict[str, Any] | None:
    per_sample = int(np.prod(ref.shape[1:], dtype=np.int64)) if ref.ndim > 1 else 1
    dims = next((d for d in (3, 2) if per_sample >= 6 and per_sample % d == 0), 0)
    if not dims:
        return None
    r = np.asarray(ref, np.float64).reshape(len(ref), -1, dims)[..., :2]
    o = np.asarray(out, np.float64).reshape(len(out), -1, dims)[..., :2]
    error = float(np.mean(np.linalg.norm(r - o, axis=-1)))
    extent = float(np.mean(np.linalg.norm(r.max(axis=1) - r.min(axis=1), axis=-1)))
    return {"points": r.shape[1], "values_per_point": dims, "mean_point_error": error,
            "relative_to_extent": error / extent if extent > 0 else None}


# --- segmentation ----------------------------------------------------------------------------


def _segmentation(ref: np.ndarray, out: np.ndarray) -> dict[str, Any] | None:
    if ref.ndim == 3:
        ref, out = ref[..., None], out[..., None]
    if ref.ndim != 4 or ref.shape[1] < 8 or ref.shape[2] < 8:
        return None
    if ref.shape[3] == 1:
        logits = bool(np.min(ref) < 0 or np.max(ref) > 1)
        masks = [(_probabilities(ref, logits) > MASK_THRESHOLD, _probabilities(out, logits) > MASK_THRESHOLD)]
    else:
        a, b = ref.argmax(axis=-1).reshape(len(ref), -1), out.argmax(axis=-1).reshape(len(out), -1)
        masks = [(a == c, b == c) for c in range(ref.shape[3])]
    ious = []
    for i in range(len(ref)):
        per_class = []
        for m_ref, m_out in masks:
            union = np.logical_or(m_ref[i], m_out[i]).sum()
            if union:
                per_class.append(np.logical_and(m_ref[i], m_out[i]).sum() / union)
        ious.append(float(np.mean(per_class)) if per_class else 1.0)
    return {"mask_iou": float(np.mean(ious)), "threshold": MASK_THRESHOLD if ref.shape[3] == 1 else None,
            "channels": int(ref.shape[3])}
