"""Integration on real annotated photos from ../shared/data (skipped when absent)."""

import csv
import shutil
from collections import defaultdict

import numpy as np
import pytest

from batchmask.evaluation.matching import match
from conftest import SHARED_DATA, batchmask, needs_shared

pytestmark = [needs_shared, pytest.mark.shared]


def gt_boxes(folder):
    gt = defaultdict(list)
    with open(folder / "boxes.csv") as f:
        for row in csv.DictReader(f):
            gt[row["image"]].append(([float(row[k]) for k in ("x1", "y1", "x2", "y2")], row["label"]))
    return gt


def test_real_photos_with_broken_files_mixed_in(tmp_path):
    kaggle = SHARED_DATA / "kaggle_andrewmvd_facemask"
    gt = gt_boxes(kaggle)
    names = sorted(gt)[::40][:20]
    src = tmp_path / "in"
    (src / "site_a").mkdir(parents=True)
    (src / "site_b").mkdir()
    for i, n in enumerate(names):
        shutil.copy(kaggle / "images" / n, src / ("site_a" if i % 2 else "site_b") / n)
    webcam = SHARED_DATA / "formatcom_webcam" / "images"
    for p in sorted(webcam.glob("*.jpg"))[:5]:
        shutil.copy(p, src / "site_b" / p.name)
    (src / "site_a" / "half.jpg").write_bytes((kaggle / "images" / names[0]).read_bytes()[:1500])
    (src / "site_a" / "zero.png").write_bytes(b"")
    out = tmp_path / "out"
    r = batchmask("run", src, out, "-q")
    assert r.returncode == 3, r.stderr
    images = list(csv.DictReader(open(out / "images.csv")))
    assert len(images) == len({i["image"] for i in images}) == 27
    assert sum(i["status"] == "error" for i in images) == 2

    faces = defaultdict(list)
    for f in csv.DictReader(open(out / "faces.csv")):
        faces[f["image"].split("/", 1)[1]].append(f)
    hit = total = correct = 0
    for n in names:
        boxes = np.array([b for b, _ in gt[n]])
        big = (boxes[:, 2] - boxes[:, 0]) >= 32
        pred = faces.get(n, [])
        pb = np.array([[float(f[k]) for k in ("x1", "y1", "x2", "y2")] for f in pred]).reshape(-1, 4)
        a = match(pb, [float(f["det_score"]) for f in pred], boxes)
        for i, j in enumerate(a):
            if j >= 0 and big[j]:
                hit += 1
                label = gt[n][j][1]
                correct += label == "incorrect" or pred[i]["label"] == label
        total += int(big.sum())
    assert total > 20
    assert hit / total >= 0.85, f"recall on faces >= 32 px: {hit}/{total}"
    assert correct / hit >= 0.8, f"labels right on matched faces: {correct}/{hit}"
    assert batchmask("run", src, out, "-q").returncode == 3
    assert len(list(csv.DictReader(open(out / "images.csv")))) == 27
