"""Drawing boxes, labels and scores on a photo, legible at any image size."""

from __future__ import annotations

import cv2
import numpy as np

from .faces import Faces

COLOURS = {"masked": (46, 160, 67), "unmasked": (220, 38, 38), "incorrect": (245, 158, 11)}  # RGB
FONT = cv2.FONT_HERSHEY_SIMPLEX


def annotate(rgb: np.ndarray, faces: Faces, labels: list[str], scale: float = 1.0) -> np.ndarray:
    """A copy of `rgb` with each face boxed and labelled with its label's confidence ("masked 0.97").

    `scale` converts the face coordinates (full-size pixels) to `rgb` pixels.
    Line width and text size follow both the image size and the face size, so
    labels stay readable on thumbnails and 48 MP photos alike.
    """
    out = np.ascontiguousarray(rgb.copy())
    h, w = out.shape[:2]
    base = max(h, w)
    probs = faces.probabilities
    for box, label, p in zip(faces.boxes / scale, labels, probs):
        x1, y1, x2, y2 = [int(round(v)) for v in box]
        colour = COLOURS.get(label, (255, 255, 255))
        face_w = max(1, x2 - x1)
        thick = max(1, round(min(base / 400, face_w / 25)))
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick, cv2.LINE_AA)
        # the confidence of the label shown; with two labels `unmasked` covers incorrect too
        confidence = {"masked": p[0], "incorrect": p[1]}.get(label, 1.0 - p[0] if p[1] > p[2] else p[2])
        text = label if np.isnan(p[0]) else f"{label} {confidence:.2f}"
        font_scale = float(np.clip(max(face_w / 120, base / 1600), 0.35, 3.0))
        (tw, th), baseline = cv2.getTextSize(text, FONT, font_scale, max(1, thick // 2))
        ty = y1 - baseline - 2 if y1 - th - baseline - 4 >= 0 else y2 + th + 2
        tx = min(max(0, x1), max(0, w - tw - 2))
        cv2.rectangle(out, (tx, ty - th - 2), (tx + tw + 2, ty + baseline), colour, -1)
        cv2.putText(out, text, (tx + 1, ty - 1), FONT, font_scale, (255, 255, 255), max(1, thick // 2), cv2.LINE_AA)
    return out
