"""Choose a classifier's crop margin, crop levels and mask threshold on annotated real photos.

The default detector runs over the first `tuning` photos by sorted name and their
near-duplicates (`tuning_split.py`; the rest stay held out for the report) and every detected face is classified at each crop
margin, with the crops as cut and with their levels stretched (`stretch_levels`).
Rule, per margin and levels: the threshold with the highest TNR whose FNR plus one
standard error stays within `max_fnr` (ties: the higher threshold); then the
variant whose choice gives the highest TNR (ties: lower FNR, then the margin
nearest the training framing, then crops as cut). The standard error is there because a rule that
rides the limit exactly did not hold beyond the tuning photos (README, "Classifier").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from ..classifier import CROP_MARGIN, crop_faces, stretch_levels
from ..faces import Faces
from ..images import ImageError, load_image
from ..models import default_detector_path
from ..storage import atomic_write_json
from .groundtruth import load_ground_truth
from .metrics import Prediction, compute_metrics
from .tuning_split import tuning_photos

MARGINS = (1.1, 1.15, 1.2, 1.25, 1.3)
THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.20, 0.801, 0.05), 2))
LEVELS = (None, (1.0, 99.0))  # crops as cut; luminance from the 1st to the 99th percentile stretched


class CalibrationError(Exception):
    """Nothing to calibrate on."""


def classified_at_margin(worker, img: np.ndarray, raw: Faces, margin: float, levels: tuple[float, float] | None = None) -> Faces:
    """The detector's faces classified from crops at `margin` (levels stretched when given, instead
    of the model's own setting), in the reported convention (and order: `reported` sorts, so the
    scores travel inside the Faces)."""
    faces = raw[np.arange(len(raw))]
    if len(faces):
        crops = crop_faces(img, raw.boxes, worker.classifier.input_size, margin)
        faces.set_probabilities(worker.classifier.classify(stretch_levels(crops, *levels) if levels else crops))
    return worker.detector.reported(faces, *img.shape[:2])


FEW_FACES = 50  # fewer masked or unmasked tuning faces than this: the choice is announced as unreliable


def choose_operating_point(model: Path, images: Path, boxes: Path, tuning: int = 300, max_fnr: float = 0.05,
                           margins: tuple[float, ...] = MARGINS, thresholds: tuple[float, ...] = THRESHOLDS,
                           levels: tuple[tuple[float, float] | None, ...] = LEVELS,
                           progress: Callable[[int, int], None] | None = None, min_tnr: float = 0.5,
                           near_duplicates: list[tuple[str, str]] = (), near_duplicates_file: str = "") -> dict:
    """Sweep margins × levels × thresholds, write the choice and the sweep into MODEL/model.json; returns the chosen row.

    Unreadable photos are left out (listed under "skipped" and in model.json).
    """
    from ..worker import Worker, WorkerConfig

    gt = load_ground_truth(boxes)
    names, added = tuning_photos(gt, tuning, near_duplicates)
    warnings = []
    if len(names) >= len(gt):
        warnings.append(f"the {len(names)} tuning photos (the first {min(tuning, len(gt))} and their near-duplicates) are all "
                        f"{len(gt)} annotated photos: none is left held out for evaluate --exclude-first {tuning}")
    tuning_gt = {k: gt[k] for k in names}
    worker = Worker(WorkerConfig(str(default_detector_path()), str(model)))
    variants = [(m, lv) for m in margins for lv in levels]
    preds: dict[tuple, dict[str, list[Prediction]]] = {v: {} for v in variants}
    skipped: dict[str, str] = {}
    for i, name in enumerate(names):
        try:
            loaded = load_image(str(images / name), target_side=worker.config.detector.max_side)
        except ImageError as e:  # left out of the sweep (not counted as missed faces), and reported
            skipped[name] = str(e)
            del tuning_gt[name]
            continue
        img = loaded.pixels
        raw = worker.detector.detect(img)
        for m, lv in variants:
            shown = classified_at_margin(worker, img, raw, m, lv).scaled(loaded.scale, loaded.height / img.shape[0])
            preds[(m, lv)][name] = [Prediction(b.tolist(), float(s), float(q), float(r))
                              for b, s, q, r in zip(shown.boxes, shown.det_scores, shown.mask_scores, shown.incorrect_scores)]
        if progress:
            progress(i + 1, len(names))

    if not tuning_gt:
        name, reason = next(iter(skipped.items()))
        raise CalibrationError(f"none of the {len(names)} tuning photos could be read from {images} (first: {name}: {reason})")
    counts = compute_metrics(tuning_gt, preds[variants[0]], 0.5)["table"]
    for label in ("masked", "unmasked"):
        if not counts[label]["ground_truth"]:
            raise CalibrationError(f"the {len(tuning_gt)} tuning photos have no {label} face at least 16 px wide: "
                                   "TNR and FNR cannot both be measured")
    rows, best = [], []
    for m, lv in variants:
        per = []
        for t in thresholds:
            r = compute_metrics(tuning_gt, preds[(m, lv)], t)
            n = r["table"]["masked"]["ground_truth"]
            se = float(np.sqrt(r["fnr"] * (1 - r["fnr"]) / max(1, n)))
            three = r["three_labels"] or {}
            per.append({"margin": m, "levels": list(lv) if lv else None, "threshold": t, "tnr": round(r["tnr"], 4), "fnr": round(r["fnr"], 4), "fnr_se": round(se, 4),
                        "incorrect_noncompliant": round(three.get("incorrect_labelled_noncompliant", float("nan")), 4),
                        "incorrect_exact": round(three.get("incorrect_labelled_incorrect", float("nan")), 4)})
        ok = [r for r in per if r["fnr"] + r["fnr_se"] <= max_fnr]
        if ok:
            best.append(max(ok, key=lambda r: (r["tnr"], r["threshold"])))
        rows += per
    if not best:
        low = min(rows, key=lambda r: (r["fnr"] + r["fnr_se"], -r["tnr"]))
        raise CalibrationError(
            f"no crop margin and threshold keeps FNR + 1 SE within {max_fnr} on the tuning photos (lowest: FNR {low['fnr']:.3f} "
            f"+ {low['fnr_se']:.3f} at margin {low['margin']:g}{', levels stretched' if low['levels'] else ''}, threshold {low['threshold']:.2f}); model.json is unchanged. "
            "Raise --max-fnr, or use a better model")
    choice = max(best, key=lambda r: (r["tnr"], -r["fnr"], -abs(r["margin"] - CROP_MARGIN), r["levels"] is None))
    if choice["tnr"] < min_tnr:  # a model that calls (almost) every face masked must not become anyone's default
        raise CalibrationError(
            f"at its best point within the FNR limit (margin {choice['margin']:g}, threshold {choice['threshold']:.2f}, FNR {choice['fnr']:.3f}) "
            f"the model catches only {choice['tnr']:.0%} of the unmasked tuning faces, under --min-tnr {min_tnr:g}: it barely tells masks "
            "apart (untrained, or unsuited to these photos?); model.json is unchanged")

    meta_path = Path(model) / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["threshold"] = choice["threshold"]
    meta["crop_margin"] = choice["margin"]
    if choice["levels"]:
        meta["crop_levels"] = choice["levels"]
    else:
        meta.pop("crop_levels", None)
    meta["threshold_choice"] = {
        "rule": f"per crop margin and levels, the highest TNR with FNR + 1 SE <= {max_fnr} (ties: higher threshold); "
                "then the variant with the highest TNR (ties: lower FNR, margin nearest the training framing, crops as cut)",
        "tuning_photos": f"first {min(tuning, len(gt))} of {Path(boxes).name} by sorted name"
                         + (f" and {len(added)} near-duplicate{'s' if len(added) != 1 else ''} of them ({near_duplicates_file}: "
                            f"{', '.join(added)})" if added else "")
                         + (f", {len(tuning_gt)} of them readable" if skipped else ""),
        "skipped_photos": skipped,
        "sweep": rows,
    }
    few = {label: counts[label]["ground_truth"] for label in ("masked", "unmasked") if counts[label]["ground_truth"] < FEW_FACES}
    if few:
        warnings.append(f"the tuning photos hold only {' and '.join(f'{n} {label}' for label, n in few.items())} faces >= 16 px: "
                        f"a choice on under {FEW_FACES} faces of a class is mostly chance (raise --tuning)")
    if choice["threshold"] in (min(thresholds), max(thresholds)):
        warnings.append(f"the chosen threshold {choice['threshold']:.2f} is at the edge of the searched range "
                        f"({min(thresholds):.2f}-{max(thresholds):.2f}): the best one may lie beyond it")
    if choice["tnr"] < 0.5:
        warnings.append(f"at the chosen point the model catches only {choice['tnr']:.0%} of the unmasked tuning faces: "
                        "it barely tells masks apart (an untrained or unsuited model?)")
    meta["threshold_choice"]["warnings"] = warnings
    atomic_write_json(meta_path, meta)
    return {**choice, "skipped": skipped, "warnings": warnings, "near_duplicates_added": added}
