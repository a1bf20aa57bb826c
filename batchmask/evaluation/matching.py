"""One-to-one matching of predicted to ground-truth boxes, highest score first, IoU > 0.5."""

from __future__ import annotations

import numpy as np

SIZE_BUCKETS = ((0, 16), (16, 32), (32, 64), (64, 128), (128, float("inf")))


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match(pred_boxes, pred_scores, gt_boxes, iou_threshold: float = 0.5) -> np.ndarray:
    """For each prediction, the index of its ground-truth box or -1.

    Predictions are taken in decreasing score order; each takes the unmatched
    ground-truth box it overlaps most, if that IoU is above the threshold.
    """
    pred_scores = np.asarray(pred_scores, np.float64).reshape(-1)
    assignment = np.full(len(pred_scores), -1, int)
    if len(pred_scores) == 0 or len(gt_boxes) == 0:
        return assignment
    ious = iou_matrix(pred_boxes, gt_boxes)
    taken = np.zeros(ious.shape[1], bool)
    for i in np.argsort(-pred_scores, kind="stable"):
        row = np.where(taken, -1.0, ious[i])
        j = int(np.argmax(row))
        if row[j] > iou_threshold:
            assignment[i] = j
            taken[j] = True
    return assignment


def size_bucket(width: float) -> str:
    for lo, hi in SIZE_BUCKETS:
        if lo <= width < hi:
            return f"<{hi:g}" if lo == 0 else (f">={lo:g}" if hi == float("inf") else f"{lo:g}-{hi:g}")
    raise ValueError(width)


def bucket_names() -> list[str]:
    return [size_bucket(lo) for lo, _ in SIZE_BUCKETS]
