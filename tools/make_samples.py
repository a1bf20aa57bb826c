"""Regenerate data/samples/ from scikit-image's wheel (public-domain and CC0 photos).

    pip download --no-deps scikit-image -d /tmp/skimage-wheel
    python tools/make_samples.py /tmp/skimage-wheel/scikit_image-*.whl

astronaut.jpg: NASA portrait of Eileen Collins, public domain (skimage.data.astronaut).
masks/astronaut_surgical.jpg, masks/astronaut_cloth.jpg: the same photo with a mask
drawn by batchmask's own procedural mask code (batchmask.datasets.masks);
masks/astronaut_under_nose.jpg: a mask worn incorrectly, under the nose.
chelsea.jpg: Chelsea the cat, CC0 by Stefan van der Walt (skimage.data.chelsea): a photo with no face.
"""

import io
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from batchmask.datasets.masks import draw_mask
from batchmask.detector import RetinaFace
from batchmask.models import default_detector_path

OUT = Path(__file__).resolve().parents[1] / "data" / "samples"


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        astronaut = np.asarray(Image.open(io.BytesIO(zf.read("skimage/data/astronaut.png"))).convert("RGB"))
        chelsea = Image.open(io.BytesIO(zf.read("skimage/data/chelsea.png"))).convert("RGB")
    (OUT / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(astronaut).save(OUT / "astronaut.jpg", quality=90)
    chelsea.save(OUT / "chelsea.jpg", quality=90)
    faces = RetinaFace(str(default_detector_path())).detect(astronaut)
    landmarks = faces.landmarks[int(np.argmax(faces.det_scores))]
    for name, style, wear, seed in (("surgical", "surgical", "correct", 3), ("cloth", "cloth", "correct", 5), ("under_nose", "surgical", "nose_exposed", 7)):
        masked = draw_mask(astronaut, landmarks, style, wear, np.random.default_rng(seed))
        Image.fromarray(masked).save(OUT / "masks" / f"astronaut_{name}.jpg", quality=90)
    print(f"samples written to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
