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
from .images import load_image
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

    def detect(self, image: str | Path | np.ndarray) -> Faces:
        """Faces with boxes in pixels of the image as displayed (EXIF orientation applied)."""
        if isinstance(image, (str, Path)):
            loaded = load_image(str(image), target_side=self._worker.config.detector.max_side)
            faces = self._worker.detect(loaded.pixels)
            return faces.scaled(loaded.scale, loaded.height / loaded.pixels.shape[0])
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ValueError(f"expected an RGB image array (H×W×3), got shape {arr.shape}")
        return self._worker.detect(np.ascontiguousarray(arr[:, :, :3], dtype=np.uint8))

    def labels(self, faces: Faces) -> list[str]:
        return faces.labels(self.threshold, self._worker.config.labels)


@lru_cache(maxsize=1)
def _default() -> MaskDetector:
    return MaskDetector()


def detect(image: str | Path | np.ndarray) -> Faces:
    """Detect faces and mask scores with the default models (loaded once, then reused)."""
    return _default().detect(image)
