"""Mask classifier runtime: face crops -> label probabilities, on ONNX Runtime (no TensorFlow).

The model gives three probabilities per face, in `CLASSES` order: a mask worn
correctly, a mask worn incorrectly (nose or mouth out, on the chin), no mask.
`decide` turns them into labels: `masked` when P(masked) reaches the threshold
(so the binary figures keep their meaning), otherwise the likelier of
`incorrect` and `unmasked`; with two labels, `incorrect` folds into `unmasked`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .models import verified_model

CROP_MARGIN = 1.3  # square crop side = longest box side × margin, centred on the box
CLASSES = ("masked", "incorrect", "unmasked")


def decide(probs: np.ndarray, threshold: float = 0.5, labels: int = 3) -> list[str]:
    """Labels for an N×3 array of (masked, incorrect, unmasked) probabilities; NaN rows get ``""``."""
    probs = np.asarray(probs, np.float32).reshape(-1, 3)
    out = []
    for p_mask, p_inc, p_none in probs:
        if np.isnan(p_mask):
            out.append("")
        elif p_mask >= threshold:
            out.append("masked")
        elif labels == 3 and p_inc > p_none:
            out.append("incorrect")
        else:
            out.append("unmasked")
    return out


def crop_faces(rgb: np.ndarray, boxes: np.ndarray, size: int, margin: float = CROP_MARGIN, fit_inside: bool = False) -> np.ndarray:
    """Square crops (N×size×size×3 uint8) around each box; borders mirror the photo.

    Training crops and inference crops both come from here, so the classifier
    always sees faces framed the same way. `fit_inside` (data build) shrinks and
    shifts the square to stay inside the photo instead: tight face crops have no
    context to show, and mirrored borders would teach the model a kaleidoscope.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    h, w = rgb.shape[:2]
    out = np.empty((len(boxes), size, size, 3), np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        side = max(x2 - x1, y2 - y1, 1.0) * margin
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        if fit_inside:
            side = min(side, w, h)
            cx = min(max(cx, side / 2), w - side / 2)
            cy = min(max(cy, side / 2), h - side / 2)
        s = size / side
        m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], np.float32)
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        out[i] = cv2.warpAffine(rgb, m, (size, size), flags=interp, borderMode=cv2.BORDER_REFLECT_101)
    return out


def stretch_levels(crops: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Each crop's luminance, from its `low` to its `high` percentile, stretched to 0..255.

    One gain and offset for all three channels, so hues stay. Dark, hazy and backlit
    faces then reach the classifier with the contrast of the faces it learnt from.
    A crop with almost no contrast (under 8 grey levels) is left alone.
    """
    crops = np.asarray(crops)
    if len(crops) == 0:
        return crops
    flat = crops.reshape(len(crops), -1, 3).astype(np.float32)
    luma = flat @ np.array([0.299, 0.587, 0.114], np.float32)
    lo, hi = np.percentile(luma, [low, high], axis=1)
    stretch = hi - lo >= 8
    gain = np.where(stretch, 255.0 / np.maximum(hi - lo, 1.0), 1.0).astype(np.float32)
    offset = np.where(stretch, lo, 0.0).astype(np.float32)
    out = (flat - offset[:, None, None]) * gain[:, None, None]
    return np.clip(out, 0, 255).round().astype(np.uint8).reshape(crops.shape)


class MaskClassifier:
    def __init__(self, model_dir: str | Path, threads: int = 1):
        import onnxruntime as ort

        path, meta = verified_model(Path(model_dir))
        self.meta = meta
        self.input_size = int(meta.get("input_size", 96))
        self.margin = float(meta.get("crop_margin", CROP_MARGIN))
        self.threshold = float(meta.get("threshold", 0.5))
        # (low, high) percentiles for `stretch_levels`, when `calibrate` chose it; None: crops as cut
        # (read_model_meta has checked these values)
        levels = meta.get("crop_levels")
        self.levels = (float(levels[0]), float(levels[1])) if levels else None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.enable_mem_pattern = False  # crops per photo vary: see RetinaFace
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def predict_crops(self, crops: np.ndarray) -> np.ndarray:
        """N×3 (masked, incorrect, unmasked) probabilities for uint8 crops at the model's input size.

        A two-class model (one output, P(masked)) gives P(incorrect) = 0.
        """
        return self.classify(stretch_levels(crops, *self.levels) if self.levels else crops)

    def classify(self, crops: np.ndarray) -> np.ndarray:
        """`predict_crops` without the model's crop levels: the network on the crops as given."""
        if len(crops) == 0:
            return np.zeros((0, 3), np.float32)
        (out,) = self.session.run(None, {self.input_name: crops.astype(np.float32)})
        out = out.reshape(len(crops), -1).astype(np.float32)
        if out.shape[1] == 1:
            return np.stack([out[:, 0], np.zeros(len(out), np.float32), 1.0 - out[:, 0]], axis=1)
        return out[:, :3]

    def predict(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        return self.predict_crops(crop_faces(rgb, boxes, self.input_size, self.margin))
