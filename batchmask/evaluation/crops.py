"""Classifier-only evaluation on folders of face crops (`batchmask evaluate CROPS --crops`).

CROPS holds `masked/`, `incorrect/` (optional) and `unmasked/` folders of face crops,
or a `data build` output, whose `test/` split is used. Crops made by `data build`
carry a wider margin than inference framing (recorded in its summary.json); they
are centre-cropped to the classifier's framing, as training does. Other crops are
taken as framed. The metric functions are shared with training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..classifier import CLASSES, CROP_MARGIN, decide
from .metrics import sweep_thresholds


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC (tied scores count half, as they should); NaN when one class is absent."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """Masked against unmasked crops (incorrect ones left out), P(masked) against the threshold."""
    keep = y != CLASSES.index("incorrect")
    y, p = (y[keep] == CLASSES.index("masked")).astype(int), p[keep]
    pred = p >= threshold
    masked, unmasked = y == 1, y == 0
    return {
        "n": int(len(y)),
        "masked": int(masked.sum()),
        "unmasked": int(unmasked.sum()),
        "accuracy": float((pred == (y == 1)).mean()) if len(y) else float("nan"),
        "tnr": float((~pred[unmasked]).mean()) if unmasked.any() else float("nan"),  # unmasked caught
        "fnr": float((~pred[masked]).mean()) if masked.any() else float("nan"),  # masked flagged unmasked
        "auc": _roc_auc(y, p),
    }


def three_label_metrics(y: np.ndarray, probs: np.ndarray, threshold: float) -> dict:
    """Confusion matrix (rows: truth, columns: label given, both in `CLASSES` order) and per-class recall."""
    pred = np.array([CLASSES.index(lab) for lab in decide(probs, threshold, 3)], int)
    confusion = np.zeros((3, 3), int)
    np.add.at(confusion, (y.astype(int), pred), 1)
    recall = {c: float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else float("nan") for i, c in enumerate(CLASSES)}
    masked = CLASSES.index("masked")
    noncompliant = y != masked
    return {
        "labels": list(CLASSES),
        "confusion": confusion.tolist(),
        "recall": recall,
        "noncompliant_recall": float((pred[noncompliant] != masked).mean()) if noncompliant.any() else float("nan"),
    }


def best_balanced_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold maximising balanced accuracy of masked against unmasked crops (ties: closest to 0.5)."""
    keep = y != CLASSES.index("incorrect")
    y, p = (y[keep] == CLASSES.index("masked")).astype(int), p[keep]
    if not (y == 1).any() or not (y == 0).any():
        return 0.5
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    best = max(grid, key=lambda t: (0.5 * ((p[y == 1] >= t).mean() + (p[y == 0] < t).mean()), -abs(t - 0.5)))
    return float(best)


class CropsError(Exception):
    pass


def crop_folders(root: Path) -> tuple[Path, float]:
    """The folder holding the class folders, and the margin its crops were cut with."""
    summary = root / "summary.json"
    margin = CROP_MARGIN
    if summary.is_file():
        margin = float(json.loads(summary.read_text()).get("crop_margin", CROP_MARGIN))
    built = summary.is_file() or any((root / s).is_dir() for s in ("train", "val"))
    if (root / "test").is_dir():
        root = root / "test"
    elif built:
        raise CropsError(f"{root} is a `data build` output without a test split (too few photos or sources for "
                         "three splits: build with more, or give a folder of masked/, incorrect/, unmasked/ crops)")
    if not any((root / c).is_dir() for c in CLASSES):
        raise CropsError(f"{root} has no masked/, incorrect/ or unmasked/ folder of crops")
    return root, margin


def evaluate_crops(root: Path, model_dir: Path, threshold: float | None = None, progress=None) -> dict:
    import cv2

    from ..classifier import MaskClassifier
    from ..images import ImageError, is_image_name, load_image

    folder, margin = crop_folders(Path(root))
    clf = MaskClassifier(model_dir)
    threshold = clf.threshold if threshold is None else threshold
    keep = min(1.0, clf.margin / margin)
    files, skipped = [], []
    for i, c in enumerate(CLASSES):
        if not (folder / c).is_dir():
            continue
        unreadable: list[OSError] = []
        for dirpath, dirnames, filenames in os.walk(folder / c, onerror=unreadable.append):
            dirnames.sort()
            files += [(Path(dirpath) / n, i) for n in sorted(filenames) if is_image_name(n) and (Path(dirpath) / n).is_file()]
        skipped += [f"{Path(e.filename).relative_to(folder).as_posix()}/: cannot read folder ({e.strerror})" for e in unreadable]
    if not files:
        raise CropsError(f"no crops under {folder}" + (f" ({skipped[0]})" if skipped else ""))
    probs, labels = [], []
    batch, batch_labels = [], []

    def flush():
        if batch:
            probs.append(clf.predict_crops(np.stack(batch)))
            labels.extend(batch_labels)
            batch.clear()
            batch_labels.clear()

    for path, label in files:
        try:
            img = load_image(str(path)).pixels
        except ImageError as e:
            skipped.append(f"{path.relative_to(folder)}: {e}")
            continue
        h, w = img.shape[:2]
        side = int(round(min(h, w) * keep))
        y0, x0 = (h - side) // 2, (w - side) // 2
        crop = img[y0 : y0 + side, x0 : x0 + side]
        batch.append(cv2.resize(crop, (clf.input_size, clf.input_size), interpolation=cv2.INTER_AREA if side > clf.input_size else cv2.INTER_LINEAR))
        batch_labels.append(label)
        if len(batch) == 64:
            flush()
            if progress:
                progress(len(labels), len(files))
    flush()
    p = np.concatenate(probs) if probs else np.zeros((0, 3), np.float32)
    y = np.array(labels, int)
    sweep = [{"threshold": float(t), **{k: v for k, v in binary_metrics(y, p[:, 0], float(t)).items() if k in ("tnr", "fnr")}}
             for t in sweep_thresholds(threshold)]
    return {
        "crops": str(folder),
        "crop_margin": margin,
        "model": str(model_dir),
        "threshold": threshold,
        "counts": {c: int((y == i).sum()) for i, c in enumerate(CLASSES)},
        "skipped": skipped,
        "binary": binary_metrics(y, p[:, 0], threshold),
        "three_labels": three_label_metrics(y, p, threshold),
        "threshold_sweep": sweep,
    }


def render_crops_markdown(m: dict, title: str) -> str:
    from .report import fmt as f
    from .report import confusion_md, sweep_md

    b, t = m["binary"], m["three_labels"]
    return "\n".join([
        f"# {title}",
        "",
        f"Classifier only, on the face crops in {m['crops']} ({', '.join(f'{v} {k}' for k, v in m['counts'].items())}); "
        f"model {m['model']}, threshold {m['threshold']:.2f}. {len(m['skipped'])} unreadable crops or folders skipped.",
        "",
        "## Masked against unmasked",
        "",
        "| accuracy | TNR | FNR | ROC AUC |",
        "|---:|---:|---:|---:|",
        f"| {f(b['accuracy'])} | {f(b['tnr'])} | {f(b['fnr'])} | {f(b['auc'])} |",
        "",
        "## Three labels",
        "",
        *confusion_md(t),
        "",
        f"Non-compliant recall (incorrect or unmasked not labelled masked): {f(t['noncompliant_recall'])}.",
        "",
        "## Threshold sweep",
        "",
        *sweep_md(m["threshold_sweep"], m["threshold"]),
        "",
    ])
