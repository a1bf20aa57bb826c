"""Pipeline accuracy on the annotated real photos (DESIGN.md protocol, IoU > 0.5).

    python bench/pipeline_accuracy.py [--data ../shared/data] [--model DIR] [--threshold T]

Kaggle photos are split deterministically: names whose sorted position is < 300
were used to choose the detector's scale policy ("tuning"); the rest are
reported as "held-out". Prints detector recall per face-width bucket, and the
seed's table (identified+correct / identified+wrong / missed) with TNR / FNR.
`incorrect` faces are reported on their own row.
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from batchmask.api import MaskDetector
from batchmask.detector import DetectorConfig
from batchmask.evaluation.matching import bucket_names, match, size_bucket


def load_gt(folder: Path):
    gt = defaultdict(list)
    with open(folder / "boxes.csv", newline="") as f:
        for row in csv.DictReader(f):
            gt[row["image"]].append(([float(row[k]) for k in ("x1", "y1", "x2", "y2")], row["label"]))
    return gt


def evaluate(det: MaskDetector, folder: Path, names: list[str], gt, min_width: float = 16.0) -> dict:
    hit, tot = Counter(), Counter()
    table = {lab: Counter() for lab in ("masked", "unmasked", "incorrect")}
    false_det = false_unmasked = 0
    for n in names:
        faces = det.detect(folder / "images" / n)
        labels = det.labels(faces)
        boxes = np.array([b for b, _ in gt[n]])
        a = match(faces.boxes, faces.det_scores, boxes)
        false_det += int((a < 0).sum())
        false_unmasked += sum(1 for i in np.flatnonzero(a < 0) if labels[i] == "unmasked")
        pred_for = {int(j): i for i, j in enumerate(a) if j >= 0}
        for j, (box, lab) in enumerate(gt[n]):
            w = box[2] - box[0]
            b = size_bucket(w)
            tot[b] += 1
            hit[b] += j in pred_for
            if w < min_width:
                continue
            if j not in pred_for:
                table[lab]["missed"] += 1
            elif lab == "incorrect":
                table[lab][labels[pred_for[j]]] += 1
            else:
                table[lab]["correct" if labels[pred_for[j]] == lab else "wrong"] += 1
    return {"hit": hit, "tot": tot, "table": table, "false_det": false_det, "false_unmasked": false_unmasked, "images": len(names)}


def report(name: str, r: dict) -> None:
    hit, tot, t = r["hit"], r["tot"], r["table"]
    print(f"\n== {name}: {r['images']} images")
    print("recall by face width: " + ", ".join(f"{b} {hit[b]}/{tot[b]}={hit[b] / tot[b]:.3f}" for b in bucket_names() if tot[b]))
    big = bucket_names()[1:]
    print(f"recall >=16 px: {sum(hit[b] for b in big) / max(1, sum(tot[b] for b in big)):.3f}; "
          f">=32 px: {sum(hit[b] for b in big[1:]) / max(1, sum(tot[b] for b in big[1:])):.3f}")
    print("faces >= 16 px      | ground truth | identified+correct | identified+wrong | not identified")
    for lab in ("masked", "unmasked"):
        c = t[lab]
        n = c["correct"] + c["wrong"] + c["missed"]
        print(f"{lab:19s} | {n:12d} | {c['correct']:18d} | {c['wrong']:16d} | {c['missed']:14d}")
    ci = t["incorrect"]
    print(f"{'incorrect (own row)':19s} | {sum(ci.values()):12d} | labelled masked {ci['masked']}, unmasked {ci['unmasked']}, missed {ci['missed']}")
    u, m = t["unmasked"], t["masked"]
    nu, nm = sum(u.values()), sum(m.values())
    print(f"TNR {u['correct'] / max(1, nu):.3f}  FNR {m['wrong'] / max(1, nm):.3f}  "
          f"false detections {r['false_det']} ({r['false_det'] / r['images']:.2f}/image, {r['false_unmasked']} flagged unmasked)")


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
    gt = load_gt(kaggle)
    names = sorted(gt)
    report("Kaggle held-out (sorted position >= 300)", evaluate(det, kaggle, names[300:], gt))
    report("Kaggle tuning part (first 300, used for the scale policy)", evaluate(det, kaggle, names[:300], gt))
    webcam = Path(args.data) / "formatcom_webcam"
    gtw = load_gt(webcam)
    report("formatcom_webcam", evaluate(det, webcam, sorted(gtw), gtw))


if __name__ == "__main__":
    main()
