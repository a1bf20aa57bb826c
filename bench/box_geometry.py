"""How RetinaFace boxes relate to the boxes people draw (the annotation convention).

    python bench/box_geometry.py [--data ../shared/data]

On the Kaggle tuning part (first 300 names, the same part that chose the scale
policy), pairs each annotated face with the detection it overlaps most (IoU > 0.3)
and prints the median ratios of the annotated box to the detected one: width,
height, and centre offsets in units of the detected box. Those medians are the
detector's `box_scale` and `box_shift` defaults; the held-out part and the webcam
set then show whether they generalise (bench/pipeline_accuracy.py).
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from batchmask.detector import DetectorConfig, RetinaFace
from batchmask.evaluation.matching import iou_matrix
from batchmask.evaluation.tuning_split import tuning_and_held_out
from batchmask.images import load_image
from batchmask.models import default_detector_path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    args = ap.parse_args()
    folder = Path(args.data) / "kaggle_andrewmvd_facemask"
    gt = defaultdict(list)
    with open(folder / "boxes.csv") as f:
        for row in csv.DictReader(f):
            gt[row["image"]].append([float(row[k]) for k in ("x1", "y1", "x2", "y2")])
    det = RetinaFace(str(default_detector_path()), DetectorConfig(box_scale=(1.0, 1.0), box_shift=(0.0, 0.0)), threads=2)
    stats = []
    for name in tuning_and_held_out(gt, 300, folder / "boxes.csv", folder / "images")[0]:
        faces = det.detect(load_image(str(folder / "images" / name)).pixels)
        g = np.array(gt[name])
        if not len(faces):
            continue
        ious = iou_matrix(g, faces.boxes)
        for i, row in enumerate(ious):
            j = int(np.argmax(row))
            if row[j] > 0.3:
                p = faces.boxes[j]
                pw, ph = p[2] - p[0], p[3] - p[1]
                gw, gh = g[i, 2] - g[i, 0], g[i, 3] - g[i, 1]
                stats.append([gw / pw, gh / ph, ((g[i, 0] + g[i, 2]) - (p[0] + p[2])) / 2 / pw, ((g[i, 1] + g[i, 3]) - (p[1] + p[3])) / 2 / ph, gw])
    s = np.array(stats)
    print(f"{len(s)} matched faces")
    for lo, hi in ((0, 32), (32, 64), (64, 1e9), (0, 1e9)):
        m = s[(s[:, 4] >= lo) & (s[:, 4] < hi)]
        if len(m):
            med = np.median(m[:, :4], axis=0)
            print(f"width {lo:>3.0f}-{hi:<5.0f} n={len(m):4d}  w ratio {med[0]:.3f}  h ratio {med[1]:.3f}  dx {med[2]:+.3f}  dy {med[3]:+.3f}")


if __name__ == "__main__":
    main()
