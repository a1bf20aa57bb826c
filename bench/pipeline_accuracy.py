"""Pipeline accuracy on the annotated real photos, split into tuning and held-out parts.

    python bench/pipeline_accuracy.py [--data ../shared/data] [--model DIR] [--threshold T] [--box sx,sy,dx,dy]

Same metrics code as `batchmask evaluate` (batchmask.evaluation.metrics), in one
process so detector settings can be varied. The first 300 Kaggle photos by
sorted name and their near-duplicates chose the detector's scale policy ("tuning"); the rest are "held-out".
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from batchmask.api import MaskDetector
from batchmask.detector import DetectorConfig
from batchmask.evaluation.groundtruth import load_ground_truth
from batchmask.evaluation.metrics import Prediction, compute_metrics
from batchmask.evaluation.tuning_split import tuning_and_held_out


def predict(det: MaskDetector, folder: Path, names: list[str]) -> dict[str, list[Prediction]]:
    out = {}
    for n in names:
        faces = det.detect(folder / "images" / n)
        out[n] = [Prediction(b.tolist(), float(s), float(m), float(i)) for b, s, m, i in zip(faces.boxes, faces.det_scores, faces.mask_scores, faces.incorrect_scores)]
    return out


def report(name: str, m: dict) -> None:
    t = m["table"]
    print(f"\n== {name}: {m['images']} images")
    print("recall by face width: " + ", ".join(f"{b} {v['found']}/{v['faces']}={v['recall']:.3f}" for b, v in m["recall_by_width"].items() if v["faces"]))
    print(f"recall >=16 px: {m['recall']:.3f}; >=32 px: {m['recall_ge32']:.3f}")
    print("faces >= 16 px      | ground truth | identified+correct | identified+wrong | not identified")
    for lab in ("masked", "unmasked"):
        r = t[lab]
        print(f"{lab:19s} | {r['ground_truth']:12d} | {r['identified_correct']:18d} | {r['identified_wrong']:16d} | {r['not_identified']:14d}")
    i = t["incorrect"]
    print(f"{'incorrect (own row)':19s} | {i['ground_truth']:12d} | labelled incorrect {i['labelled_incorrect']}, unmasked {i['labelled_unmasked']}, "
          f"masked {i['labelled_masked']}, missed {i['not_identified']}")
    three = m["three_labels"]
    if three:
        print("3 labels, matched faces >= 16 px (rows: truth masked/incorrect/unmasked; columns: labelled the same order): "
              + " ".join(str(row) for row in three["confusion"]))
        print(f"incorrect faces labelled non-compliant {three['incorrect_labelled_noncompliant']:.3f}, exactly incorrect "
              f"{three['incorrect_labelled_incorrect']:.3f}; masked faces labelled incorrect {three['masked_labelled_incorrect']:.3f}")
    print(f"TNR {m['tnr']:.3f}  FNR {m['fnr']:.3f}  false detections {m['false_detections']} "
          f"({m['false_detections_per_image']:.2f}/image, {m['false_detections_flagged_unmasked']} flagged unmasked)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--model", default=None)
    ap.add_argument("--threshold", type=float, default=None)
    ap.add_argument("--box", default=None, help="box_scale and box_shift: sx,sy,dx,dy (default: the detector's)")
    args = ap.parse_args()
    config = DetectorConfig()
    if args.box:
        sx, sy, dx, dy = map(float, args.box.split(","))
        config = replace(config, box_scale=(sx, sy), box_shift=(dx, dy))
    print(f"detector: {config}")
    det = MaskDetector(args.model, args.threshold, detector=config, threads=2)
    print(f"mask threshold {det.threshold:.2f}")
    kaggle = Path(args.data) / "kaggle_andrewmvd_facemask"
    gt = load_ground_truth(kaggle / "boxes.csv")
    names = sorted(gt)
    preds = predict(det, kaggle, names)
    tuning, held_out = tuning_and_held_out(gt, 300, kaggle / "boxes.csv", kaggle / "images")
    for title, part in ((f"Kaggle held-out ({len(held_out)} photos)", held_out),
                        (f"Kaggle tuning part (first 300 and their near-duplicates, chose the scale policy; {len(tuning)} photos)", tuning)):
        report(title, compute_metrics({n: gt[n] for n in part}, preds, det.threshold))
    webcam = Path(args.data) / "formatcom_webcam"
    gtw = load_ground_truth(webcam / "boxes.csv")
    report("formatcom_webcam", compute_metrics(gtw, predict(det, webcam, sorted(gtw)), det.threshold))


if __name__ == "__main__":
    main()
