"""Close-ups: one face filling a large photo, with and without the downscaled pass.

    python bench/close_ups.py [--data ../shared/data] [--per-set 100] [--sides 400,1000,2000]

The annotated sets have no close-up larger than 240 px, but phone photos do. This takes
face crops from ../shared/data (every n-th file by sorted name): `unmasked_faces`
(tight crops, the face fills the frame), `vggface2_sample` (loose crops, one person)
and `masked_faces_real` (real masks; some are group or product shots), scales each so
its long side is each of `--sides` px (what the decoder hands the detector, at most
1600 px after DCT scaling, so 2000 stands for a phone photo), and counts the faces the
detector reports: exactly one is right for the first two sets. Prints, per set and
size, the share of photos with exactly one face, with none, and with more than one,
for the default detector and with `large_face=None` (no downscaled pass), and the
detector's ms per photo (one thread).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from batchmask.detector import DetectorConfig, RetinaFace
from batchmask.models import default_detector_path

SETS = ("unmasked_faces", "vggface2_sample", "masked_faces_real")
SUFFIXES = {".jpg", ".jpeg", ".png"}


def sample(folder: Path, n: int) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES)
    return files[:: max(1, len(files) // n)][:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--per-set", type=int, default=100)
    ap.add_argument("--sides", default="400,1000,2000")
    args = ap.parse_args()
    sides = [int(s) for s in args.sides.split(",")]
    detectors = {
        "default": RetinaFace(str(default_detector_path()), DetectorConfig()),
        "no downscaled pass": RetinaFace(str(default_detector_path()), DetectorConfig(large_face=None)),
    }
    print(f"{'set':18s} {'long side':>9s}  {'detector':20s} {'one face':>8s} {'none':>6s} {'several':>7s} {'ms':>6s}")
    for name in SETS:
        files = sample(Path(args.data) / name, args.per_set)
        photos = [cv2.imread(str(f), cv2.IMREAD_COLOR) for f in files]
        photos = [p[:, :, ::-1] for p in photos if p is not None]
        for side in sides:
            scaled = []
            for p in photos:
                s = side / max(p.shape[:2])
                size = (max(1, round(p.shape[1] * s)), max(1, round(p.shape[0] * s)))
                scaled.append(np.ascontiguousarray(cv2.resize(p, size, interpolation=cv2.INTER_CUBIC if s > 1 else cv2.INTER_AREA)))
            for label, det in detectors.items():
                t0 = time.perf_counter()
                counts = np.array([len(det.detect(p)) for p in scaled])
                ms = (time.perf_counter() - t0) * 1000 / len(scaled)
                print(f"{name:18s} {side:9d}  {label:20s} {np.mean(counts == 1):8.2f} {np.mean(counts == 0):6.2f} {np.mean(counts > 1):7.2f} {ms:6.1f}")


if __name__ == "__main__":
    main()
