import numpy as np
import pytest

from batchmask.datasets.masks import STYLES, WEAR, draw_mask, mask_polygon
from batchmask.detector import RetinaFace
from batchmask.models import default_detector_path
from conftest import astronaut


@pytest.fixture(scope="module")
def face():
    img = astronaut()
    faces = RetinaFace(str(default_detector_path())).detect(img)
    return img, faces.landmarks[0]


@pytest.mark.parametrize("style", STYLES)
def test_each_style_covers_mouth_and_chin_but_not_eyes(face, style):
    img, lm = face
    out = draw_mask(img, lm, style, "correct", np.random.default_rng(1))
    changed = np.abs(out.astype(int) - img.astype(int)).sum(axis=2) > 30
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = lm
    mouth = (int((lmy + rmy) / 2), int((lmx + rmx) / 2))
    assert changed[mouth]
    assert not changed[int(ley), int(lex)] and not changed[int(rey), int(rex)]


def test_worn_incorrectly_leaves_the_nose_out(face):
    img, lm = face
    nose = (int(lm[2][1]), int(lm[2][0]))
    for wear in WEAR[1:]:
        out = draw_mask(img, lm, "surgical", wear, np.random.default_rng(1))
        assert np.abs(out[nose].astype(int) - img[nose].astype(int)).sum() < 30
    for seed in range(10):  # the under-the-nose edge varies, the nose tip stays out
        out = draw_mask(img, lm, "cloth", "nose_exposed", np.random.default_rng(seed))
        assert np.abs(out[nose].astype(int) - img[nose].astype(int)).sum() < 30
    top_correct = mask_polygon(lm, "correct")[:, 1].min()
    top_chin = mask_polygon(lm, "chin_only")[:, 1].min()
    assert top_chin > top_correct


def test_masks_are_deterministic_per_seed(face):
    img, lm = face
    a = draw_mask(img, lm, "cloth", "correct", np.random.default_rng(7))
    b = draw_mask(img, lm, "cloth", "correct", np.random.default_rng(7))
    assert np.array_equal(a, b)
