"""A generated corpus of hostile and odd inputs, run through `batchmask run` as a user would."""

import csv
import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import SAMPLES, astronaut, batchmask, jpeg_bytes
from test_images import STORED


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size over a few bytes of (highly compressible) data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 100_000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    real = jpeg_bytes(np.zeros((8, 8, 3), np.uint8))
    i = real.index(b"\xff\xc0")
    return real[: i + 5] + struct.pack(">HH", height, width) + real[i + 9 :]


def save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile") / "in"
    root.mkdir()
    face = Image.fromarray(astronaut())
    good = (SAMPLES / "astronaut.jpg").read_bytes()
    files = {
        # broken: (bytes, expected reason prefix)
        "zero.jpg": (b"", "empty file"),
        "truncated.jpg": (good[:4000], "corrupt or truncated"),
        "truncated.png": (save(face, "PNG")[:3000], "corrupt or truncated"),
        "garbage-body.jpg": (good[: len(good) // 3] + bytes(range(256)) * 40, "corrupt or truncated"),
        "first-bytes.jpg": (good[:20], "corrupt or truncated image: only the start of a JPEG file"),  # an upload just begun
        "first-byte.png": (b"\x89P", "corrupt or truncated image: only the start of a PNG file"),
        "riff-named.webp": (b"RIFF" + bytes(4) + b"AVI LIST" + bytes(2000), "not a recognised image format"),  # not cut short: not waited for
        "text.jpg": (b"just some text\n" * 20, "not a recognised image format"),
        "page.png": (b"<!doctype html><html><body>hi</body></html>", "not a recognised image format"),
        "bomb.png": (png_claiming(50000, 50000), "image too large"),
        "bomb.jpg": (jpeg_claiming(50000, 50000), "image too large"),
        # valid oddities: (bytes, None)
        "cmyk.jpg": (save(face.convert("CMYK"), "JPEG"), None),
        "progressive.jpg": (save(face, "JPEG", progressive=True), None),
        "sixteen.png": (save(Image.fromarray((np.asarray(face.convert("L")).astype(np.uint16) * 257)), "PNG"), None),
        "palette.png": (save(face.convert("P"), "PNG"), None),
        "la.png": (save(face.convert("LA"), "PNG"), None),
        "rgba.png": (save(face.convert("RGBA"), "PNG"), None),
        "animated.gif": (save(face, "GIF", save_all=True, append_images=[face.rotate(90)]), None),
        "animated.webp": (save(face, "WEBP", save_all=True, append_images=[face.rotate(90)]), None),
        "scan.tif": (save(face, "TIFF"), None),
        "bitmap.bmp": (save(face, "BMP"), None),
        "dot.png": (save(Image.new("RGB", (1, 1)), "PNG"), None),
        "strip.png": (save(Image.new("RGB", (6000, 40), "gray"), "PNG"), None),
        "png-named.jpg": (save(face, "PNG"), None),
        "UPPER.JPEG": (good, None),
        "name with spaces.jpg": (good, None),
        "new\nline.jpg": (good, None),
        "emoji 😷.jpg": (good, None),
        "=HYPERLINK(1).jpg": (good, None),
        "+plus.jpg": (good, None),
        "-minus.jpg": (good, None),
        "@at.jpg": (good, None),
    }
    for o in range(1, 9):
        files[f"exif/o{o}.jpg"] = (jpeg_bytes(np.ascontiguousarray(STORED[o](astronaut())), o, 95), None)
    big = np.asarray(face.resize((8000, 6000), Image.BILINEAR))
    files["big/48mp.jpg"] = (jpeg_bytes(big, quality=80), None)
    for name, (data, _) in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    # names and entries that are not plain files
    bad_utf8 = os.fsencode(str(root)) + b"/bad-\xff\xfe.jpg"
    with open(bad_utf8, "wb") as f:
        f.write(good)
    os.symlink(root / "nowhere.jpg", root / "dangling.jpg")
    os.mkdir(root / "loop")
    os.symlink(root, root / "loop" / "back")
    os.mkfifo(root / "fifo.jpg")
    os.mkdir(root / "folder.jpg")
    return root, files


def test_hostile_corpus(corpus, tmp_path):
    root, files = corpus
    out = tmp_path / "out"
    r = batchmask("run", root, out, "-q", timeout=600)
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr
    rows = list(csv.DictReader(open(out / "images.csv", newline="", encoding="utf-8")))
    by = {row["image"].lstrip("'"): row for row in rows}
    assert len(rows) == len(by) == len(files) + 3  # + invalid UTF-8 name, dangling link, FIFO
    for name, (_, reason) in files.items():
        row = by[name]
        if reason is None:
            assert row["status"] == "ok", (name, row["error"])
        else:
            assert row["status"] == "error" and row["error"].startswith(reason), (name, row["error"])
    assert by["dangling.jpg"]["error"] == "broken symbolic link"
    assert by["fifo.jpg"]["error"].startswith("not a regular file")
    assert by["bad-\\udcff\\udcfe.jpg"]["status"] == "ok"
    assert by["=HYPERLINK(1).jpg"]["image"] == "'=HYPERLINK(1).jpg"  # no formula in a spreadsheet
    assert (by["big/48mp.jpg"]["width"], by["big/48mp.jpg"]["height"]) == ("8000", "6000")

    faces = {}
    for f in csv.DictReader(open(out / "faces.csv", newline="", encoding="utf-8")):
        faces.setdefault(f["image"].lstrip("'"), []).append(f)
    for o in range(1, 9):
        (f,) = faces[f"exif/o{o}.jpg"]
        cx, cy = (float(f["x1"]) + float(f["x2"])) / 2, (float(f["y1"]) + float(f["y2"])) / 2
        assert abs(cx - 226) < 15 and abs(cy - 117) < 15, (o, cx, cy)  # where the face is when displayed
    f = max(faces["big/48mp.jpg"], key=lambda f: float(f["det_score"]))
    assert float(f["det_score"]) > 0.95
    assert abs((float(f["x1"]) + float(f["x2"])) / 2 - 226 * 8000 / 512) < 200

    # nothing was written outside OUTPUT, and a rerun adds nothing
    assert batchmask("run", root, out, "-q", timeout=600).returncode == 3
    assert len(list(csv.DictReader(open(out / "images.csv", encoding="utf-8")))) == len(rows)
