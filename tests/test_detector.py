import numpy as np

from batchmask.detector import DetectorConfig, RetinaFace
from batchmask.models import default_detector_path
from conftest import SAMPLES, astronaut
from PIL import Image


def detector(**kw):
    return RetinaFace(str(default_detector_path()), DetectorConfig(**kw))


def test_finds_the_astronaut_with_landmarks_inside_the_box():
    faces = detector().detect(astronaut())
    assert len(faces) == 1
    x1, y1, x2, y2 = faces.boxes[0]
    assert 150 < x1 < 200 and 40 < y1 < 80 and 250 < x2 < 300 and 160 < y2 < 200
    pts = faces.landmarks[0]
    assert ((pts[:, 0] > x1) & (pts[:, 0] < x2) & (pts[:, 1] > y1) & (pts[:, 1] < y2)).all()
    left_eye, right_eye, nose, mouth_l, mouth_r = pts
    assert left_eye[0] < right_eye[0] and left_eye[1] < nose[1] < mouth_l[1]
    assert faces.det_scores[0] > 0.9


def test_no_face_in_the_cat():
    cat = np.asarray(Image.open(SAMPLES / "chelsea.jpg").convert("RGB"))
    assert len(detector().detect(cat)) == 0


def test_boxes_follow_the_image_scale_and_small_faces_need_the_upscaled_pass():
    img = astronaut()
    small = np.asarray(Image.fromarray(img).resize((128, 128)))
    scene = np.full((400, 600, 3), 200, np.uint8)
    scene[100:228, 200:328] = small  # face about 24 px wide
    native = detector(scales=(0,)).detect(scene)
    both = detector().detect(scene)
    assert len(both) == 1
    assert len(native) <= len(both)
    x1, y1, x2, y2 = both.boxes[0]
    assert 230 < (x1 + x2) / 2 < 280 and 110 < (y1 + y2) / 2 < 170


def test_scale_plan_caps_upscale_and_size():
    d = detector(scales=(0, 960), max_upscale=3.0, max_side=1600)
    assert d.plan(280, 400) == [1.0, 2.4]
    assert d.plan(100, 100) == [1.0, 3.0]
    assert d.plan(3000, 4000) == [0.4, 0.24]
