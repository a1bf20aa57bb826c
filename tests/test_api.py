import numpy as np
import pytest

import batchmask
from batchmask import Faces, MaskDetector
from conftest import SAMPLES, astronaut


def test_detect_from_a_path_and_from_an_array_agree():
    from_path = batchmask.detect(SAMPLES / "astronaut.jpg")
    from_array = batchmask.detect(astronaut())
    assert isinstance(from_path, Faces) and len(from_path) == len(from_array) == 1
    np.testing.assert_allclose(from_path.boxes, from_array.boxes, atol=1.0)
    assert from_path.landmarks.shape == (1, 5, 2)
    assert 0.0 <= from_path.mask_scores[0] <= 1.0


def test_mask_detector_labels_the_samples():
    det = MaskDetector()
    plain = det.detect(SAMPLES / "astronaut.jpg")
    masked = det.detect(SAMPLES / "masks" / "astronaut_surgical.jpg")
    assert det.labels(plain) == ["unmasked"]
    assert det.labels(masked) == ["masked"]
    assert masked.mask_scores[0] > plain.mask_scores[0]


def test_bad_arrays_are_refused():
    with pytest.raises(ValueError, match="expected an RGB image array"):
        batchmask.detect(np.zeros((4, 4, 5), np.uint8))
