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
    assert det.labels(plain) == plain.labels() == ["unmasked"]
    assert det.labels(masked) == masked.labels() == ["masked"]  # faces know their model's threshold
    assert masked.mask_scores[0] > plain.mask_scores[0]
    assert masked.labels(1.0) != ["masked"] and masked.labels(1.0, labels=2) == ["unmasked"] and masked[:1].labels() == ["masked"]
    strict = MaskDetector(threshold=1.0)
    assert strict.detect(SAMPLES / "masks" / "astronaut_surgical.jpg").labels() != ["masked"]
    for bad in ({"threshold": 5}, {"threshold": -1}, {"labels": 4}):
        with pytest.raises(ValueError):
            MaskDetector(**bad)
    with pytest.raises(ValueError, match="no threshold"):
        Faces(np.zeros((1, 4)), [0.9], np.zeros((1, 5, 2)), [0.5]).labels()


def test_arrays_of_other_types_are_converted_or_refused():
    rgb = astronaut()
    found = batchmask.detect(rgb)
    for same in (rgb.astype(np.float32) / 255, rgb.astype(np.float64), rgb.astype(np.uint16) * 257,
                 np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])):
        again = batchmask.detect(same)
        assert len(again) == 1, same.dtype
        np.testing.assert_allclose(again.boxes, found.boxes, atol=2.0)
    grey = rgb.mean(2).astype(np.uint8)
    assert len(batchmask.detect(grey)) == len(batchmask.detect(grey[:, :, None])) == 1
    for bad, message in [(np.zeros((4, 4, 5), np.uint8), "expected an image array"), (np.zeros((0, 0, 3), np.uint8), "empty"),
                         (rgb.astype(np.int16) - 300, "within 0..255"), (np.full((8, 8, 3), np.nan), "within 0..255"),
                         (rgb.astype(np.int32) * 16, "within 0..255"), (np.zeros((8, 8, 3), bool), "must hold numbers")]:
        with pytest.raises(ValueError, match=message):
            batchmask.detect(bad)


def test_pil_images_in_any_mode_and_orientation_read_as_displayed():
    from PIL import Image

    from_path = batchmask.detect(SAMPLES / "astronaut.jpg")
    im = Image.open(SAMPLES / "astronaut.jpg")
    for mode in ("RGB", "CMYK", "P", "RGBA"):
        got = batchmask.detect(im.convert(mode))
        assert got.labels() == ["unmasked"], mode
        np.testing.assert_allclose(got.boxes, from_path.boxes, atol=4.0)
    grey = np.asarray(im.convert("L"))
    wide = {"I (16-bit samples)": Image.fromarray(grey.astype(np.int32) * 257),
            "F (0..1)": Image.fromarray(grey.astype(np.float32) / 255), "F (0..255)": Image.fromarray(grey.astype(np.float32))}
    for name, wide_image in wide.items():  # 32-bit modes, which convert("RGB") would clip
        np.testing.assert_array_equal(batchmask.api.as_rgb(wide_image)[:, :, 0], grey, err_msg=name)
    with pytest.warns(UserWarning, match="values all lie within 0..255"):  # mode I holds 16-bit samples, as uint16 arrays do
        batchmask.api.as_rgb(Image.fromarray(grey.astype(np.int32)))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side, displayed upright
    rotated = im.transpose(Image.Transpose.ROTATE_90)
    rotated.info["exif"] = exif.tobytes()
    rotated.getexif()[0x0112] = 6
    got = batchmask.detect(rotated)
    assert len(got) == 1 and got.labels() == ["unmasked"]
    with pytest.raises(batchmask.api.ImageError, match="nowhere.jpg: cannot read file"):
        batchmask.detect(SAMPLES / "nowhere.jpg")
    with pytest.raises(TypeError, match="not bytes"):
        batchmask.detect(b"astronaut.jpg")
    with pytest.warns(UserWarning, match="uint16 image array whose values all lie within 0..255"):
        batchmask.detect(astronaut().astype(np.uint16))
