"""The notebook surface.

    >>> import batchmask
    >>> faces = batchmask.detect("photo.jpg")      # or an RGB numpy array
    >>> faces.boxes, faces.mask_scores, faces.incorrect_scores
    >>> det = batchmask.MaskDetector(); det.labels(det.detect("photo.jpg"))   # at the model's threshold
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from .detector import DetectorConfig
from .faces import Faces
from .images import ImageError, load_image
from .models import default_classifier_dir, default_detector_path
from .worker import Worker, WorkerConfig


class MaskDetector:
    """RetinaFace + mask classifier in this process; `detect` takes a path or an RGB array."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        threshold: float | None = None,
        detector: DetectorConfig | None = None,
        threads: int = 1,
        labels: int = 3,
    ):
        if threshold is not None and not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be within 0..1 (or None: the model's), not {threshold!r}")
        if labels not in (2, 3):
            raise ValueError(f"labels must be 2 or 3, not {labels!r}")
        config = WorkerConfig(
            detector_path=str(default_detector_path()),
            classifier_dir=str(model_dir or default_classifier_dir()),
            detector=detector or DetectorConfig(),
            threshold=threshold,
            threads=threads,
            labels=labels,
        )
        self._worker = Worker(config)

    @property
    def threshold(self) -> float:
        return self._worker.threshold

    def detect(self, image) -> Faces:
        """Faces in a file path, a PIL image or an image array (see `as_rgb`), with boxes in pixels
        of the image as displayed (EXIF orientation applied);
        `faces.labels()` labels them at this detector's threshold."""
        if isinstance(image, (str, Path)):
            try:
                loaded = load_image(str(image), target_side=self._worker.config.detector.max_side)
            except ImageError as e:
                raise ImageError(f"{image}: {e}") from None
            faces = self._worker.detect(loaded.pixels).scaled(loaded.scale, loaded.height / loaded.pixels.shape[0])
        else:
            faces = self._worker.detect(as_rgb(image))
        faces.threshold = self.threshold
        return faces

    def labels(self, faces: Faces) -> list[str]:
        return faces.labels(self.threshold, self._worker.config.labels)


def as_rgb(image) -> np.ndarray:
    """An H×W×3 uint8 RGB array from a PIL image (EXIF orientation applied, any mode) or an image
    array: greyscale (H×W or H×W×1) and RGBA are converted; floats may be 0..1 or 0..255, uint16
    (and PIL's 32-bit mode I) 0..65535; anything else is an error, never a silent wrap-around."""
    from PIL import Image, ImageOps

    if isinstance(image, (bytes, bytearray, memoryview)):
        raise TypeError("expected a file path (str or Path), a PIL image or an image array, not bytes")
    if isinstance(image, Image.Image):
        image = ImageOps.exif_transpose(image)
        if image.mode.startswith("I;16"):
            image = np.asarray(image).astype(np.uint16)
        elif image.mode in ("I", "F"):  # 32-bit integer or float pixels: convert("RGB") would clip them
            image = np.asarray(image)
            if image.dtype.kind == "i" and image.size and 0 <= image.min() and image.max() <= 65535:
                image = image.astype(np.uint16)  # 16-bit samples (PIL's mode for 16-bit files), read as uint16 arrays are
        else:
            return np.ascontiguousarray(np.asarray(image.convert("RGB")))  # CMYK, palette, LA, 1-bit ...
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an image array (H×W×3 RGB, H×W×4 RGBA or H×W greyscale), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"the image array is empty (shape {arr.shape})")
    arr = arr[:, :, :3]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.uint16:
        if arr.max() <= 255:
            import warnings

            warnings.warn("a uint16 image array whose values all lie within 0..255 is read as 16-bit (nearly black): "
                          "convert 8-bit values with .astype(np.uint8)", stacklevel=3)
        return np.ascontiguousarray((arr.astype(np.float32) / 257.0 + 0.5).astype(np.uint8))
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"image arrays must hold numbers, not {arr.dtype}")
    low, high = float(arr.min()), float(arr.max())
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
        raise ValueError(f"image values must lie within 0..255 (or 0..1 for floats), not {low:g}..{high:g}")
    if arr.dtype.kind == "f" and high <= 1.0:
        arr = arr * 255.0
    return np.ascontiguousarray(np.rint(arr).astype(np.uint8))


@lru_cache(maxsize=1)
def _default() -> MaskDetector:
    return MaskDetector()


def detect(image: str | Path | np.ndarray) -> Faces:
    """Detect faces and mask scores with the default models (loaded once, then reused)."""
    return _default().detect(image)
