"""Measure detector recall per face-size bucket for several scale policies.

    python bench/detector_scales.py [--data ../shared/data] [--limit N]

Prints, per policy and set: recall (IoU > 0.5) per face-width bucket, recall on
faces >= 16 px and >= 32 px, false detections per image and mean ms per image
(one thread). `--limit 300` looks at the Kaggle tuning photos only.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from batchmask.detector import DetectorConfig, RetinaFace
from batchmask.evaluation.matching import bucket_names, match, size_bucket
from batchmask.images import load_image
from batchmask.models import default_detector_path

RAW_BOXES = dict(box_scale=(1.0, 1.0), box_shift=(0.0, 0.0))
FULL = dict(refine_score=None, contained=None, **RAW_BOXES)
POLICIES = {
    # full passes, RetinaFace's own boxes: how the scale policy was chosen
    "orig": dict(scales=(0,), **FULL),
    "orig+960": dict(scales=(0, 960), **FULL),
    "orig+800": dict(scales=(0, 800), **FULL),
    "orig+720": dict(scales=(0, 720), **FULL),
    "orig+1280": dict(scales=(0, 1280), **FULL),
    "orig+640+1280": dict(scales=(0, 640, 1280), **FULL),
    "640": dict(scales=(640,), **FULL),
    "orig+640": dict(scales=(0, 640), **FULL),
    "960": dict(scales=(960,), **FULL),
    "640+1280": dict(scales=(640, 1280), **FULL),
    "320+640+1280": dict(scales=(320, 640, 1280), **FULL),
    # then, on the chosen scales: boxes in the annotation convention, parts of a face
    # suppressed, and the cascade (the default)
    "+box": dict(scales=(0, 960), refine_score=None, contained=None),
    "+box+contained": dict(scales=(0, 960), refine_score=None),
    "default": dict(),
}


def load_gt(folder: Path):
    gt = defaultdict(list)
    with open(folder / "boxes.csv", newline="") as f:
        for row in csv.DictReader(f):
            gt[row["image"]].append([float(row[k]) for k in ("x1", "y1", "x2", "y2")])
    return {k: np.array(v) for k, v in gt.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--score", type=float, default=0.5)
    ap.add_argument("--policies", default=",".join(POLICIES))
    args = ap.parse_args()
    for set_name in ("kaggle_andrewmvd_facemask", "formatcom_webcam"):
        folder = Path(args.data) / set_name
        gt = load_gt(folder)
        names = sorted(gt)[: args.limit or None]
        images = {n: load_image(str(folder / "images" / n)).pixels for n in names}
        print(f"\n{set_name}: {len(names)} images, {sum(len(gt[n]) for n in names)} faces")
        print(f"{'policy':14s} " + " ".join(f"{b:>7s}" for b in bucket_names()) + "   >=16   >=32  fd/img  ms/img")
        for pname in args.policies.split(","):
            det = RetinaFace(str(default_detector_path()), DetectorConfig(score_threshold=args.score, **POLICIES[pname]))
            hit, tot = defaultdict(int), defaultdict(int)
            false_det, times = 0, []
            for n in names:
                t = time.perf_counter()
                faces = det.detect(images[n])
                times.append(time.perf_counter() - t)
                faces = det.reported(faces, *images[n].shape[:2])
                g = gt[n]
                a = match(faces.boxes, faces.det_scores, g)
                false_det += int((a < 0).sum())
                matched = set(a[a >= 0].tolist())
                for j, box in enumerate(g):
                    b = size_bucket(box[2] - box[0])
                    tot[b] += 1
                    hit[b] += j in matched
            rec = [hit[b] / tot[b] if tot[b] else float("nan") for b in bucket_names()]
            ge16 = sum(hit[b] for b in bucket_names()[1:]) / max(1, sum(tot[b] for b in bucket_names()[1:]))
            ge32 = sum(hit[b] for b in bucket_names()[2:]) / max(1, sum(tot[b] for b in bucket_names()[2:]))
            print(
                f"{pname:14s} " + " ".join(f"{r:7.3f}" for r in rec)
                + f"  {ge16:.3f}  {ge32:.3f}  {false_det / len(names):6.2f}  {1000 * np.mean(times):6.1f}"
            )
        print("faces per bucket:", {b: tot[b] for b in bucket_names()})


if __name__ == "__main__":
    main()
