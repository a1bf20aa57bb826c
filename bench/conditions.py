"""Pipeline accuracy under photo conditions the annotated sets rarely show.

    python bench/conditions.py [--data ../shared/data] [--model DIR] [--conditions as-is,dark,...]
                               [--every 1] [--part held-out|tuning]

Takes the Kaggle held-out photos (sorted position >= 300, not used to choose any
setting; `--part tuning`: the first 300, which chose them) and the webcam photos, changes them in memory the way real photos differ
(darker, backlit-grey, greyscale, heavy JPEG, motion-free blur, twice the size, a blue or
green colour cast) with
the boxes scaled to match, and prints recall (faces >= 16 px), TNR, FNR and false
detections per image for each condition, beside the photos as they are. It measures
how far the pipeline's figures fall, so that a weak condition is seen before users
see it; nothing is tuned on it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from batchmask.api import MaskDetector
from batchmask.evaluation.groundtruth import load_ground_truth
from batchmask.evaluation.metrics import Prediction, compute_metrics
from batchmask.evaluation.tuning_split import tuning_and_held_out
from batchmask.images import load_image


def gamma(rgb: np.ndarray, g: float) -> np.ndarray:
    lut = (255.0 * (np.arange(256) / 255.0) ** g).clip(0, 255).astype(np.uint8)
    return cv2.LUT(rgb, lut)


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    _, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]


def cast(rgb: np.ndarray, gains: tuple[float, float, float]) -> np.ndarray:
    return cv2.transform(rgb, np.diag(np.asarray(gains, np.float64))).astype(np.uint8)


# name -> (pixel change, box scale)
CONDITIONS = {
    "as-is": (lambda x: x, 1.0),
    "dark": (lambda x: gamma(x, 2.2), 1.0),  # underexposed: mid-grey 128 -> 28
    "washed-out": (lambda x: (x.astype(np.float32) * 0.5 + 110).astype(np.uint8), 1.0),  # haze, backlight flare
    "greyscale": (lambda x: np.repeat(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2), 1.0),
    "jpeg-q20": (lambda x: jpeg(x, 20), 1.0),
    "blur": (lambda x: cv2.GaussianBlur(x, (0, 0), 1.5), 1.0),
    "2x-size": (lambda x: cv2.resize(x, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC), 2.0),
    "blue-cast": (lambda x: cast(x, (0.7, 0.9, 1.25)), 1.0),  # LED / CCTV white balance
    "green-cast": (lambda x: cast(x, (0.85, 1.15, 0.85)), 1.0),  # fluorescent light
}


def evaluate(det: MaskDetector, folder: Path, gt: dict, names: list[str], change, scale: float) -> dict:
    preds = {}
    for n in names:
        rgb = np.ascontiguousarray(change(load_image(str(folder / "images" / n)).pixels))
        faces = det.detect(rgb)
        preds[n] = [Prediction(b.tolist(), float(s), float(m), float(i)) for b, s, m, i in zip(faces.boxes / scale, faces.det_scores, faces.mask_scores, faces.incorrect_scores)]
    return compute_metrics({n: gt[n] for n in names}, preds, det.threshold)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--every", type=int, default=1, help="use every n-th photo (faster)")
    ap.add_argument("--part", choices=("held-out", "tuning"), default="held-out")
    ap.add_argument("--model", default=None, help="classifier model directory (default: the shipped one)")
    args = ap.parse_args()
    det = MaskDetector(args.model, threads=2)
    sets = []
    kaggle = Path(args.data) / "kaggle_andrewmvd_facemask"
    gt = load_ground_truth(kaggle / "boxes.csv")
    tuning, held_out = tuning_and_held_out(gt, 300, kaggle / "boxes.csv", kaggle / "images")
    part = held_out if args.part == "held-out" else tuning
    sets.append((f"Kaggle {args.part}", kaggle, gt, part[:: args.every]))
    webcam = Path(args.data) / "formatcom_webcam"
    gtw = load_ground_truth(webcam / "boxes.csv")
    sets.append(("webcam", webcam, gtw, sorted(gtw)[:: args.every]))
    print(f"mask threshold {det.threshold:.2f}; recall on faces >= 16 px")
    print(f"{'condition':12s} {'set':16s} {'photos':>6s} {'recall':>6s} {'TNR':>6s} {'FNR':>6s} {'FD/img':>6s}")
    for cond in args.conditions.split(","):
        change, scale = CONDITIONS[cond]
        for title, folder, g, names in sets:
            m = evaluate(det, folder, g, names, change, scale)
            print(f"{cond:12s} {title:16s} {m['images']:6d} {m['recall']:6.3f} {m['tnr']:6.3f} {m['fnr']:6.3f} {m['false_detections_per_image']:6.2f}", flush=True)


if __name__ == "__main__":
    main()
