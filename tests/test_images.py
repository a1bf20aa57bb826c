import numpy as np
import pytest
from PIL import Image

from batchmask.images import ImageError, _exif_datetime, load_image
from conftest import astronaut, jpeg_bytes

# orientation -> the transform that, applied to the displayed image, gives the stored pixels
STORED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, 1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, -1),
}


@pytest.mark.parametrize("fmt", ["jpg", "png", "tif", "webp"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_the_displayed_image(tmp_path, orientation, fmt):
    shown = np.ascontiguousarray(astronaut()[:, :360])  # not square: swapped sizes must show
    stored = np.ascontiguousarray(STORED[orientation](shown))
    path = tmp_path / f"o{orientation}.{fmt}"
    if fmt == "jpg":
        path.write_bytes(jpeg_bytes(stored, orientation, quality=95))
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(stored).save(path, exif=exif.tobytes(), **({"quality": 95} if fmt == "webp" else {}))
    img = load_image(str(path))
    assert (img.width, img.height) == (shown.shape[1], shown.shape[0])
    assert img.pixels.shape == shown.shape
    assert np.abs(img.pixels.astype(int) - shown.astype(int)).mean() < 6


def test_large_jpeg_is_decoded_reduced_but_reports_full_size(tmp_path):
    big = np.asarray(Image.fromarray(astronaut()).resize((4096, 4096)))
    path = tmp_path / "big.jpg"
    path.write_bytes(jpeg_bytes(big))
    img = load_image(str(path), target_side=1000)
    assert (img.width, img.height) == (4096, 4096)
    assert 1000 <= img.pixels.shape[1] < 4096
    assert img.scale == pytest.approx(4096 / img.pixels.shape[1])


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"<html>hello</html>", "not a recognised image format"),
        (None, "corrupt or truncated"),
    ],
)
def test_broken_files_raise_clear_reasons(tmp_path, content, reason):
    path = tmp_path / "x.jpg"
    path.write_bytes(content if content is not None else jpeg_bytes(astronaut())[:2000])
    with pytest.raises(ImageError, match=reason):
        load_image(str(path))


def test_pixel_limit_rejects_before_decoding(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (3000, 2000)).save(path)
    with pytest.raises(ImageError, match="too large"):
        load_image(str(path), max_pixels=1_000_000)


def test_odd_modes_become_rgb(tmp_path):
    rgb = astronaut()[:64, :64]
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.gif")
    Image.fromarray(rgb).convert("LA").save(tmp_path / "la.png")
    Image.fromarray((rgb[:, :, 0].astype(np.uint16) * 257)).save(tmp_path / "g16.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    for name in ("p.gif", "la.png", "g16.png", "cmyk.jpg"):
        img = load_image(str(tmp_path / name))
        assert img.pixels.shape == (64, 64, 3) and img.pixels.dtype == np.uint8


def test_fifo_is_rejected_without_opening(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    import os

    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(str(fifo))


@pytest.mark.parametrize("mode", ["RGB", "P", "L", "I;16", "1", "RGBA"])
def test_large_non_jpeg_images_are_reduced_after_decoding(tmp_path, mode):
    src = Image.fromarray(astronaut()).resize((2400, 2400))
    im = src.convert("L").convert("I;16") if mode == "I;16" else src.convert(mode)
    im.save(tmp_path / "big.png")
    img = load_image(str(tmp_path / "big.png"), target_side=1000)
    assert (img.width, img.height) == (2400, 2400)
    assert img.pixels.shape == (1200, 1200, 3)


def test_capture_time_and_camera_come_from_exif(tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "Acme"
    exif[0x0110] = "Cam 3"
    exif.get_ifd(0x8769)[0x9003] = "2024:05:01 08:30:00"
    Image.fromarray(astronaut()).save(tmp_path / "e.jpg", exif=exif.tobytes())
    img = load_image(str(tmp_path / "e.jpg"))
    assert (img.taken, img.camera) == ("2024-05-01T08:30:00", "Acme Cam 3")
    Image.fromarray(astronaut()).save(tmp_path / "plain.jpg")
    plain = load_image(str(tmp_path / "plain.jpg"))
    assert (plain.taken, plain.camera) == ("", "")


def test_exif_dates_that_are_not_dates_count_as_missing():
    assert _exif_datetime("2024:05:01 08:30:00") == "2024-05-01T08:30:00"
    assert _exif_datetime("0000:00:00 00:00:00") == ""  # a camera whose clock was never set
    assert _exif_datetime("2024:13:45 08:30:00") == ""
    assert _exif_datetime("    :  :     :  :  ") == ""


def test_avif_decodes_and_heic_says_it_is_not_supported(tmp_path):
    shown = np.ascontiguousarray(astronaut()[:, :360])
    Image.fromarray(shown).save(tmp_path / "a.avif", quality=90)
    img = load_image(str(tmp_path / "a.avif"))
    assert (img.width, img.height) == (360, 512) and np.abs(img.pixels.astype(int) - shown.astype(int)).mean() < 8
    (tmp_path / "p.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    with pytest.raises(ImageError, match="HEIC photos are not supported: convert them to JPEG"):
        load_image(str(tmp_path / "p.heic"))
