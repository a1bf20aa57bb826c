"""Choose the classifier's crop margin and mask threshold on the real-photo tuning photos.

    python tools/choose_operating_point.py MODEL_DIR [--images DIR] [--boxes GT] [--tuning 300]
        [--max-fnr 0.05] [--margins 1.1,1.15,1.2,1.25,1.3]

Runs the default detector over the first `--tuning` photos of the Kaggle set by
sorted name (the part that also chose the detector's settings; the rest stays held
out) and classifies every detected face at each crop margin. Rule, per margin: the
threshold (0.20-0.50, steps of 0.05) with the highest TNR whose FNR stays within
`--max-fnr` (ties: the higher threshold); then the margin whose chosen threshold
gives the highest TNR (ties: lower FNR, then the margin nearest the training
framing). Writes `threshold`, `crop_margin` and the whole sweep into model.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from batchmask.classifier import CROP_MARGIN, crop_faces
from batchmask.evaluation.groundtruth import load_ground_truth
from batchmask.evaluation.metrics import Prediction, compute_metrics
from batchmask.images import load_image
from batchmask.storage import atomic_write_text
from batchmask.worker import Worker, WorkerConfig
from batchmask.models import default_detector_path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kaggle_andrewmvd_facemask"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--images", type=Path, default=DATA / "images")
    ap.add_argument("--boxes", type=Path, default=DATA / "boxes.csv")
    ap.add_argument("--tuning", type=int, default=300)
    ap.add_argument("--max-fnr", type=float, default=0.05)
    ap.add_argument("--margins", default="1.1,1.15,1.2,1.25,1.3")
    args = ap.parse_args()
    margins = [float(m) for m in args.margins.split(",")]

    gt = load_ground_truth(args.boxes)
    tuning = {k: gt[k] for k in sorted(gt)[: args.tuning]}
    worker = Worker(WorkerConfig(str(default_detector_path()), str(args.model)))
    clf = worker.classifier
    preds: dict[float, dict[str, list[Prediction]]] = {m: {} for m in margins}
    for name in tuning:
        loaded = load_image(str(args.images / name), target_side=worker.config.detector.max_side)
        img = loaded.pixels
        raw = worker.detector.detect(img)
        shown = worker.detector.reported(raw, *img.shape[:2]).scaled(loaded.scale, loaded.height / img.shape[0])
        for m in margins:
            p = clf.predict_crops(crop_faces(img, raw.boxes, clf.input_size, m))
            preds[m][name] = [Prediction(b.tolist(), float(s), float(q[0]), float(q[1])) for b, s, q in zip(shown.boxes, shown.det_scores, p)]

    rows, best = [], []
    for m in margins:
        per = []
        for t in np.round(np.arange(0.20, 0.501, 0.05), 2):
            r = compute_metrics(tuning, preds[m], float(t))
            n = r["table"]["masked"]["ground_truth"]
            se = float(np.sqrt(r["fnr"] * (1 - r["fnr"]) / max(1, n)))
            per.append({"margin": m, "threshold": float(t), "tnr": round(r["tnr"], 4), "fnr": round(r["fnr"], 4), "fnr_se": round(se, 4)})
            print(f"margin {m:.2f} threshold {t:.2f}: TNR {r['tnr']:.3f} FNR {r['fnr']:.3f}")
        ok = [r for r in per if r["fnr"] + r["fnr_se"] <= args.max_fnr] or per
        best.append(max(ok, key=lambda r: (r["tnr"], r["threshold"])))
        rows += per
    choice = max(best, key=lambda r: (r["tnr"], -r["fnr"], -abs(r["margin"] - CROP_MARGIN)))

    meta_path = args.model / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["threshold"] = choice["threshold"]
    meta["crop_margin"] = choice["margin"]
    meta["threshold_choice"] = {
        "rule": f"per crop margin, the highest TNR with FNR + 1 SE <= {args.max_fnr} (ties: higher threshold); "
                "then the margin with the highest TNR (ties: lower FNR)",
        "tuning_photos": f"first {args.tuning} of {args.boxes.name} by sorted name",
        "sweep": rows,
    }
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    print(f"margin {choice['margin']:.2f}, threshold {choice['threshold']:.2f} "
          f"(tuning TNR {choice['tnr']:.3f}, FNR {choice['fnr']:.3f}) written to {meta_path}")


if __name__ == "__main__":
    main()
