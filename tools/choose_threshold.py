"""Choose the classifier's mask threshold on the real-photo tuning split and record it in model.json.

    python tools/choose_threshold.py MODEL_DIR REPORT_DIR [--boxes GT] [--tuning 300] [--max-fnr 0.05]

REPORT_DIR is a `batchmask evaluate ... --model MODEL_DIR` report on the Kaggle set
(its run/faces.jsonl holds the scores). Only the first `--tuning` photos by sorted
name (the part that also chose the detector's scale policy) are looked at: the rule
is the highest TNR whose FNR stays within `--max-fnr` there, thresholds 0.20-0.50 in
steps of 0.05 (ties: the higher threshold). The rest of the set stays held out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from batchmask.evaluation.groundtruth import load_ground_truth
from batchmask.evaluation.metrics import compute_metrics
from batchmask.evaluation.report import load_predictions
from batchmask.storage import atomic_write_text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("report", type=Path)
    ap.add_argument("--boxes", type=Path, default=Path("../shared/data/kaggle_andrewmvd_facemask/boxes.csv"))
    ap.add_argument("--tuning", type=int, default=300)
    ap.add_argument("--max-fnr", type=float, default=0.05)
    args = ap.parse_args()

    gt = load_ground_truth(args.boxes)
    tuning = {k: gt[k] for k in sorted(gt)[: args.tuning]}
    preds = load_predictions(args.report / "run" / "faces.jsonl")
    rows = []
    for t in np.round(np.arange(0.20, 0.501, 0.05), 2):
        m = compute_metrics(tuning, preds, float(t))
        rows.append({"threshold": float(t), "tnr": round(m["tnr"], 4), "fnr": round(m["fnr"], 4)})
        print(f"threshold {t:.2f}: TNR {m['tnr']:.3f} FNR {m['fnr']:.3f}")
    ok = [r for r in rows if r["fnr"] <= args.max_fnr] or rows
    best = max(ok, key=lambda r: (r["tnr"], r["threshold"]))
    meta_path = args.model / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["threshold"] = best["threshold"]
    meta["threshold_choice"] = {
        "rule": f"highest TNR with FNR <= {args.max_fnr} on the tuning photos (ties: higher threshold)",
        "tuning_photos": f"first {args.tuning} of {args.boxes} by sorted name",
        "sweep": rows,
    }
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    print(f"threshold {best['threshold']:.2f} written to {meta_path}")


if __name__ == "__main__":
    main()
