"""Safe image decoding: size limits before allocation, EXIF orientation, reduced decode.

Everything the engine reads goes through `load_image`, which returns RGB uint8
pixels of the image *as displayed* (EXIF orientation applied) together with the
displayed full-resolution size, so boxes can be reported in full-size pixels
even when the pixels were decoded at a reduced size.
"""

from __future__ import annotations

import datetime
import io
import os
import stat
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".avif", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif"})
PILLOW_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "BMP", "TIFF", "GIF")  # never EPS, PSD, ... (JPEG includes MPO)
# phone photos with no decoder here: they get an error row that says so, rather than being passed over
UNSUPPORTED = {".heic": "HEIC", ".heif": "HEIF"}
DEFAULT_MAX_PIXELS = 100_000_000
MAX_FILE_BYTES = 1 << 30  # photos read whole from a URL: refuse anything larger
_ROTATING_ORIENTATIONS = {5, 6, 7, 8}

Image.MAX_IMAGE_PIXELS = None  # our own limit is checked before any pixel is decoded


class ImageError(Exception):
    """A file that cannot be used as a photo; the message is the reason shown to users."""


@dataclass
class LoadedImage:
    pixels: np.ndarray  # RGB uint8, as displayed, possibly reduced
    width: int  # displayed full-resolution width
    height: int
    format: str
    taken: str = ""  # EXIF DateTimeOriginal as ISO 8601, "" when absent
    camera: str = ""  # EXIF Make and Model, "" when absent

    @property
    def scale(self) -> float:
        """Full-resolution pixels per decoded pixel."""
        return self.width / self.pixels.shape[1]


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in EXTENSIONS


def displayed_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) as displayed (EXIF orientation applied), from the header; None if unreadable."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):
                w, h = h, w
            return w, h
    except Exception:  # any unreadable or hostile file: no size, no error here (the run reports it)
        return None


_SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF8": "GIF", b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
               b"RIFF": "WebP"}


def _format_started(source, most: int = 1024) -> str | None:
    """The format whose signature a file of at most `most` bytes begins with (or the whole file is
    the start of): an upload caught in its first bytes. Pillow names longer cut-off files itself."""
    try:
        if isinstance(source, io.BytesIO):
            data = source.getvalue()
            size, head = len(data), data[:16]
        else:
            with open(source, "rb") as f:
                size, head = os.fstat(f.fileno()).st_size, f.read(16)
    except OSError:
        return None
    if size > most:
        return None
    for signature, name in _SIGNATURES.items():
        if head.startswith(signature) or (head and signature.startswith(head)):
            return name
    return None


def load_image(path: str, max_pixels: int = DEFAULT_MAX_PIXELS, target_side: int | None = 1600) -> LoadedImage:
    """Decode `path` (a file, or an fsspec URL); JPEGs larger than `target_side` are decoded
    at a reduced size via DCT scaling."""
    source = path
    unsupported = UNSUPPORTED.get(os.path.splitext(path)[1].lower())
    if unsupported:
        raise ImageError(f"{unsupported} photos are not supported: convert them to JPEG")
    if "://" in path:
        from .remote import RemoteError, read_bytes

        try:
            source = io.BytesIO(read_bytes(path, MAX_FILE_BYTES))
        except (OSError, RemoteError) as e:
            raise ImageError(f"cannot read file: {e}") from None
        if not source.getbuffer().nbytes:
            raise ImageError("empty file (0 bytes)")
    else:
        try:
            st = os.stat(path)
        except OSError as e:
            raise ImageError(f"cannot read file: {e.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise ImageError("not a regular file")
        if st.st_size == 0:
            raise ImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(source, formats=PILLOW_FORMATS) as im:
                return _decode(im, max_pixels, target_side)
    except ImageError:
        raise
    except PermissionError:
        raise ImageError("cannot read file: permission denied") from None
    except UnidentifiedImageError:
        started = _format_started(source)
        if started:  # an upload caught in its first bytes: left in INPUT by --archive, like any truncated file
            raise ImageError(f"corrupt or truncated image: only the start of a {started} file") from None
        raise ImageError("not a recognised image format") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"image too large: {e}") from None
    except MemoryError:
        raise ImageError("image too large to decode in memory") from None
    except Exception as e:  # anything a decoder raises on a malformed file (struct.error, ...) says the file is bad
        reason = str(e) or type(e).__name__
        raise ImageError(f"corrupt or truncated image: {reason}") from None


def _decode(im: Image.Image, max_pixels: int, target_side: int | None) -> LoadedImage:
    fmt = im.format or "unknown"
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageError("image has no pixels")
    if w * h > max_pixels:
        raise ImageError(f"image too large: {w}x{h} pixels exceeds the limit of {max_pixels}")
    orientation, taken, camera = 1, "", ""
    try:
        exif = im.getexif()
        orientation = int(exif.get(0x0112, 1))
        taken = _exif_datetime(exif.get_ifd(0x8769).get(0x9003) or exif.get(0x0132))
        camera = " ".join(str(exif.get(tag, "")).strip("\x00 ") for tag in (0x010F, 0x0110)).strip()[:80]
    except Exception:
        pass
    if orientation in _ROTATING_ORIENTATIONS:
        disp_w, disp_h = h, w
    else:
        disp_w, disp_h = w, h
    if fmt == "JPEG" and target_side and max(w, h) > 2 * target_side:
        # draft() picks the largest DCT scale (1/2, 1/4, 1/8) still >= the requested size
        factor = target_side / max(w, h)
        im.draft("RGB", (max(1, int(w * factor)), max(1, int(h * factor))))
    if getattr(im, "is_animated", False):
        im.seek(0)
    im.load()
    if orientation != 1 and im.getexif().get(0x0112, 1) == 1:
        # the decoder turned the pixels upright itself (Pillow's TIFF plugin does, and drops
        # the tag): the size read at open was already the displayed one
        orientation, disp_w, disp_h = 1, w, h
    if target_side and max(im.size) > 2 * target_side:
        # formats without DCT scaling (PNG, TIFF, ...): shrink right after decoding, before any copy
        if im.mode in ("P", "1") or im.mode.startswith("I;16"):
            im = im.convert("RGBA" if im.mode == "P" and "transparency" in im.info else ("I" if im.mode.startswith("I;16") else "RGB"))
        im = im.reduce(max(im.size) // target_side)
    if orientation != 1:
        im = ImageOps.exif_transpose(im)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    if im.mode == "I;16" or im.mode.startswith("I;16") or im.mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        peak = arr.max() if arr.size else 1.0
        arr = (arr / (65535.0 if peak > 255 else 255.0) * 255.0).clip(0, 255).astype(np.uint8)
        im = Image.fromarray(arr, "L")
    if im.mode != "RGB":
        im = im.convert("RGB")
    pixels = np.asarray(im, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ImageError("unsupported pixel layout")
    return LoadedImage(np.ascontiguousarray(pixels), disp_w, disp_h, fmt, taken, camera)


def _exif_datetime(value) -> str:
    """'2024:05:01 08:30:00' -> '2024-05-01T08:30:00'; anything malformed -> ''."""
    text = str(value or "").strip("\x00 ")
    if len(text) < 19 or text[4] != ":" or text[7] != ":":
        return ""
    iso = text[:4] + "-" + text[5:7] + "-" + text[8:10] + "T" + text[11:19]
    try:
        when = datetime.datetime.fromisoformat(iso)
    except ValueError:
        return ""  # "0000:00:00 00:00:00" from a camera whose clock was never set, and other garbage
    return iso if when.year >= 1970 else ""
