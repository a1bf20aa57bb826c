"""Pipeline metrics on matched faces: the seed's table, TNR/FNR, recall by size, AP50, ROC, sweep.

Conventions (the seed's protocol, made exact): one-to-one matching at IoU > 0.5, highest score first;
TNR = unmasked faces labelled unmasked / all unmasked faces (missed ones count
as not caught); FNR = masked faces labelled unmasked / all masked faces;
`incorrect` faces are counted on their own row, never folded into either class.
With three-label predictions, `three_labels` adds the 3×3 confusion matrix over
matched faces, per-class recall and precision, and non-compliant recall.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..classifier import CLASSES, decide
from .groundtruth import IGNORE
from .matching import bucket_names, iou_matrix, match, size_bucket


@dataclass
class Prediction:
    box: list[float]
    det_score: float
    mask_score: float | None
    incorrect_score: float | None = None  # None: a two-label predictor


@dataclass
class MatchedSet:
    """Every ground-truth face and every prediction, after matching."""

    gt_label: list[str] = field(default_factory=list)
    gt_width: list[float] = field(default_factory=list)
    gt_mask_score: list[float] = field(default_factory=list)  # NaN when missed
    gt_incorrect_score: list[float] = field(default_factory=list)  # NaN when missed or two-label
    gt_det_score: list[float] = field(default_factory=list)  # NaN when missed
    pred_score: list[float] = field(default_factory=list)
    pred_matched: list[bool] = field(default_factory=list)
    pred_mask_score: list[float] = field(default_factory=list)
    pred_gt_width: list[float] = field(default_factory=list)  # NaN for false detections
    images: int = 0


def _on_ignored(pred_boxes: np.ndarray, ignored: np.ndarray) -> np.ndarray:
    """Predictions on an ignored region: IoU > 0.5 with it, or at least half inside it (one face of a crowd box)."""
    if len(ignored) == 0 or len(pred_boxes) == 0:
        return np.zeros(len(pred_boxes), bool)
    tl = np.maximum(pred_boxes[:, None, :2], ignored[None, :, :2])
    br = np.minimum(pred_boxes[:, None, 2:], ignored[None, :, 2:])
    inside = np.prod(np.clip(br - tl, 0, None), axis=2) / np.maximum(np.prod(pred_boxes[:, 2:] - pred_boxes[:, :2], axis=1), 1e-9)[:, None]
    return ((iou_matrix(pred_boxes, ignored) > 0.5) | (inside >= 0.5)).any(1)


def match_all(gt: dict, preds: dict[str, list[Prediction]]) -> MatchedSet:
    m = MatchedSet()
    for image, all_faces in gt.items():
        m.images += 1
        faces = [(b, lab) for b, lab in all_faces if lab != IGNORE]
        ignored = np.array([b for b, lab in all_faces if lab == IGNORE], np.float64).reshape(-1, 4)
        p = preds.get(image, [])
        boxes = np.array([b for b, _ in faces], np.float64).reshape(-1, 4)
        pb = np.array([x.box for x in p], np.float64).reshape(-1, 4)
        a = match(pb, [x.det_score for x in p], boxes)
        left_out = _on_ignored(pb, ignored) & (a < 0)
        by_gt = {int(j): i for i, j in enumerate(a) if j >= 0}
        for j, (box, label) in enumerate(faces):
            i = by_gt.get(j)
            m.gt_label.append(label)
            m.gt_width.append(box[2] - box[0])
            m.gt_mask_score.append(np.nan if i is None or p[i].mask_score is None else p[i].mask_score)
            m.gt_incorrect_score.append(np.nan if i is None or p[i].incorrect_score is None else p[i].incorrect_score)
            m.gt_det_score.append(np.nan if i is None else p[i].det_score)
        for i, x in enumerate(p):
            if left_out[i]:
                continue
            m.pred_score.append(x.det_score)
            m.pred_matched.append(bool(a[i] >= 0))
            m.pred_mask_score.append(np.nan if x.mask_score is None else x.mask_score)
            m.pred_gt_width.append(faces[a[i]][0][2] - faces[a[i]][0][0] if a[i] >= 0 else np.nan)
    return m


def average_precision(scores: np.ndarray, matched: np.ndarray, n_gt: int) -> float:
    """VOC-style AP (all points) of detections against all ground-truth faces."""
    if n_gt == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(matched[order])
    fp = np.cumsum(~matched[order])
    recall = np.concatenate([[0.0], tp / n_gt, [tp[-1] / n_gt if len(tp) else 0.0]])
    precision = np.concatenate([[1.0], tp / np.maximum(tp + fp, 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(recall) * precision[1:]))


def seed_table(m: MatchedSet, threshold: float, min_width: float) -> dict:
    labels = np.array(m.gt_label)
    widths = np.array(m.gt_width)
    scores = np.array(m.gt_mask_score)
    keep = widths >= min_width
    found = ~np.isnan(scores)
    predicted_masked = scores >= threshold
    incorrect_scores = np.array(m.gt_incorrect_score, np.float64)
    three = ~np.isnan(incorrect_scores)
    unmasked_scores = 1.0 - scores - np.nan_to_num(incorrect_scores)
    predicted_incorrect = three & ~predicted_masked & (incorrect_scores > unmasked_scores)
    table = {}
    for label in ("masked", "unmasked"):
        sel = keep & (labels == label)
        right = predicted_masked if label == "masked" else ~predicted_masked
        table[label] = {
            "ground_truth": int(sel.sum()),
            "identified_correct": int((sel & found & right).sum()),
            "identified_wrong": int((sel & found & ~right).sum()),
            "not_identified": int((sel & ~found).sum()),
        }
    sel = keep & (labels == "incorrect")
    table["incorrect"] = {
        "ground_truth": int(sel.sum()),
        "labelled_masked": int((sel & found & predicted_masked).sum()),
        "labelled_incorrect": int((sel & found & predicted_incorrect).sum()),
        "labelled_unmasked": int((sel & found & ~predicted_masked & ~predicted_incorrect).sum()),
        "not_identified": int((sel & ~found).sum()),
    }
    u, k = table["unmasked"], table["masked"]
    return {
        "table": table,
        "tnr": u["identified_correct"] / u["ground_truth"] if u["ground_truth"] else float("nan"),
        "fnr": k["identified_wrong"] / k["ground_truth"] if k["ground_truth"] else float("nan"),
    }


def three_labels(m: MatchedSet, threshold: float, min_width: float) -> dict | None:
    """Confusion of ground truth (rows) against labels given (columns) over matched faces ≥ min_width.

    None when the predictions carry no incorrect score (a two-label predictor).
    """
    inc = np.array(m.gt_incorrect_score, np.float64)
    if not (~np.isnan(inc)).any():
        return None
    labels = np.array(m.gt_label)
    mask = np.array(m.gt_mask_score, np.float64)
    sel = (np.array(m.gt_width) >= min_width) & ~np.isnan(mask) & ~np.isnan(inc)
    probs = np.stack([mask, inc, 1.0 - mask - inc], axis=1)[sel]
    given = np.array([CLASSES.index(x) for x in decide(probs, threshold, 3)], int)
    truth = np.array([CLASSES.index(x) for x in labels[sel]], int)
    confusion = np.zeros((3, 3), int)
    np.add.at(confusion, (truth, given), 1)

    def ratio(a, b):
        return float(a / b) if b else float("nan")

    recall = {c: ratio(confusion[i, i], confusion[i].sum()) for i, c in enumerate(CLASSES)}
    precision = {c: ratio(confusion[i, i], confusion[:, i].sum()) for i, c in enumerate(CLASSES)}
    k, i_, u = (CLASSES.index(c) for c in ("masked", "incorrect", "unmasked"))
    noncompliant = confusion[[i_, u]]
    return {
        "labels": list(CLASSES),
        "confusion": confusion.tolist(),
        "recall": recall,
        "precision": precision,
        "noncompliant_recall": ratio(noncompliant[:, [i_, u]].sum(), noncompliant.sum()),
        "incorrect_labelled_noncompliant": ratio(confusion[i_, [i_, u]].sum(), confusion[i_].sum()),
        "incorrect_labelled_incorrect": recall["incorrect"],
        "masked_labelled_incorrect": ratio(confusion[k, i_], confusion[k].sum()),
    }


def pipeline_roc_points(m: MatchedSet, min_width: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unmasked = positive (the alert); missed faces count as predicted masked, as the seed did."""
    labels = np.array(m.gt_label)
    keep = (np.array(m.gt_width) >= min_width) & np.isin(labels, ["masked", "unmasked"])
    y = (labels[keep] == "unmasked").astype(int)
    scores = np.array(m.gt_mask_score)[keep]
    unmasked_score = np.where(np.isnan(scores), 0.0, 1.0 - scores)
    return y, unmasked_score, ~np.isnan(scores)


def roc(y: np.ndarray, score: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score, roc_curve

    if len(set(y.tolist())) < 2:
        return {"auc": float("nan"), "fpr": [], "tpr": []}
    fpr, tpr, _ = roc_curve(y, score)
    return {"auc": float(roc_auc_score(y, score)), "fpr": fpr.tolist(), "tpr": tpr.tolist()}


def sweep_thresholds(used: float) -> list[float]:
    """0.05, 0.10, ... 0.95 and the threshold in use (which may lie between them)."""
    return sorted({*np.round(np.arange(0.05, 0.951, 0.05), 2).tolist(), round(float(used), 4)})


def compute_metrics(gt: dict, preds: dict[str, list[Prediction]], threshold: float, min_width: float = 16.0) -> dict:
    m = match_all(gt, preds)
    widths = np.array(m.gt_width)
    found = ~np.isnan(np.array(m.gt_det_score))
    buckets = {}
    for b in bucket_names():
        sel = np.array([size_bucket(w) == b for w in widths], bool)
        buckets[b] = {"faces": int(sel.sum()), "found": int((sel & found).sum()), "recall": float((sel & found).sum() / sel.sum()) if sel.any() else None}
    pred_matched = np.array(m.pred_matched, bool)
    pred_mask = np.array(m.pred_mask_score)
    false_det = ~pred_matched
    keep = widths >= min_width
    y, score, matched = pipeline_roc_points(m, min_width)
    sweep = []
    for t in sweep_thresholds(threshold):
        s = seed_table(m, float(t), min_width)
        sweep.append({"threshold": float(t), "tnr": s["tnr"], "fnr": s["fnr"]})
    out = {
        "images": m.images,
        "threshold": threshold,
        "min_width": min_width,
        "faces": {"all": len(widths), f">={min_width:g}px": int(keep.sum())},
        "recall": float(found[keep].mean()) if keep.any() else None,
        "recall_all_sizes": float(found.mean()) if len(found) else None,
        "recall_ge32": float(found[widths >= 32].mean()) if (widths >= 32).any() else None,
        "recall_by_width": buckets,
        "predictions": len(pred_matched),
        "precision": float(pred_matched.mean()) if len(pred_matched) else None,
        "ap50": average_precision(np.array(m.pred_score), pred_matched, len(widths)),
        "false_detections": int(false_det.sum()),
        "false_detections_per_image": float(false_det.sum() / max(1, m.images)),
        "false_detections_flagged_unmasked": int((false_det & (pred_mask < threshold)).sum()),
        **seed_table(m, threshold, min_width),
        "three_labels": three_labels(m, threshold, min_width),
        "pipeline_roc": roc(y, score),
        "classifier_roc": roc(y[matched], score[matched]),
        "threshold_sweep": sweep,
    }
    return out
