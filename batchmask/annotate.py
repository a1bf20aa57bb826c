"""Drawing boxes, labels and scores on a photo, legible at any image size and in crowds."""

from __future__ import annotations

import cv2
import numpy as np

from .faces import Faces

# Okabe-Ito colours, told apart with red-green colour blindness too (RGB); text colour on each
COLOURS = {"masked": (0, 114, 178), "unmasked": (213, 94, 0), "incorrect": (240, 228, 66)}
TEXT_COLOURS = {"incorrect": (0, 0, 0)}
SHORT = {"masked": "M", "unmasked": "U", "incorrect": "I"}
FONT = cv2.FONT_HERSHEY_SIMPLEX


def annotate(rgb: np.ndarray, faces: Faces, labels: list[str], scale: float = 1.0, numbered: bool | None = None) -> np.ndarray:
    """A copy of `rgb` with each face boxed and labelled with its label's confidence ("masked 0.97").

    `scale` converts the face coordinates (full-size pixels) to `rgb` pixels. With `numbered`
    (by default: when there are two faces or more) each label starts with the face's index,
    its `face` in faces.csv and "face N" in reports ("#2 masked 0.97"), so a reviewer can
    find a box's row.
    Line width and text size follow both the image size and the face size, so
    labels stay readable on thumbnails and 48 MP photos alike. Boxes are drawn
    first, then the labels, each where it hides least: no earlier label, then no
    other face, then not its own face (above the box, below it, inside its top,
    beside it). A label much wider than its face, or one with no free place in a
    crowd, shrinks to its initial and score ("U 0.87").
    """
    if numbered is None:
        numbered = len(faces) > 1
    out = np.ascontiguousarray(rgb.copy())
    h, w = out.shape[:2]
    base = max(h, w)
    probs = faces.probabilities
    boxes = [[int(round(v)) for v in box] for box in faces.boxes / scale]
    thicks = []
    for (x1, y1, x2, y2), label in zip(boxes, labels):
        thick = max(1, round(min(base / 400, max(1, x2 - x1) / 25)))
        cv2.rectangle(out, (x1, y1), (x2, y2), COLOURS.get(label, (255, 255, 255)), thick, cv2.LINE_AA)
        thicks.append(thick)
    placed: list[tuple[int, int, int, int]] = []
    for i in sorted(range(len(boxes)), key=lambda i: (boxes[i][1], boxes[i][0])):
        x1, y1, x2, y2 = boxes[i]
        label, p = labels[i], probs[i]
        # the confidence of the label shown; with two labels `unmasked` covers incorrect too
        confidence = {"masked": p[0], "incorrect": p[1]}.get(label, 1.0 - p[0] if p[1] > p[2] else p[2])
        score = "" if np.isnan(p[0]) else f" {min(confidence, 0.99):.2f}"
        font_scale = float(np.clip(max((x2 - x1) / 120, base / 1600), 0.35, 3.0))
        weight = max(1, thicks[i] // 2)
        number = f"#{i} " if numbered else ""
        full, short = f"{number}{label}{score}", f"{number}{SHORT.get(label, label[:1].upper())}{score}"
        # a label much wider than its face (a crowd seen from afar) would hide the faces around it;
        # judged without the number, so numbering does not shorten labels
        wide = cv2.getTextSize(f"{label}{score}", FONT, font_scale, weight)[0][0] > 2.5 * max(1, x2 - x1)
        for text in ((short,) if wide else (full, short)):
            fit = _fitting_scale(text, font_scale, weight, w, h)
            others = [b for j, b in enumerate(boxes) if j != i]
            rect, cost = _place(text, fit, weight, (x1, y1, x2, y2), w, h, placed, others)
            if cost == 0:
                break
        tx, top, right, bottom, baseline, fit, text = rect
        colour = COLOURS.get(label, (255, 255, 255))
        cv2.rectangle(out, (tx, top), (right, bottom), colour, -1)
        cv2.putText(out, text, (tx + 1, bottom - baseline - 1), FONT, fit, TEXT_COLOURS.get(label, (255, 255, 255)), weight, cv2.LINE_AA)
        placed.append((tx, top, right, bottom))
    return out


def _fitting_scale(text: str, font_scale: float, weight: int, w: int, h: int) -> float:
    """The font scale, reduced until the label is at most as wide as the image and a third of its height."""
    (tw, th), baseline = cv2.getTextSize(text, FONT, font_scale, weight)
    shrink = min(1.0, (w - 4) / max(1, tw + 2), (h / 3) / max(1, th + baseline + 3))
    return max(0.2, font_scale * shrink)


def _place(text, font_scale, weight, box, w, h, placed, others):
    """The label rectangle, inside the image, that hides least: above the box, below it, inside
    its top, beside it. Covering an earlier label costs most, then another face, then the top
    of its own face; returns the rectangle and that cost (0: it hides nothing)."""
    x1, y1, x2, y2 = box
    (tw, th), baseline = cv2.getTextSize(text, FONT, font_scale, weight)
    lw, lh = tw + 2, th + baseline + 3
    best = None
    for tx, top in ((x1, y1 - lh), (x1, y2), (x1, y1), (x2 - lw, y1 - lh), (x2 - lw, y2), (x2, y1), (x1 - lw, y1)):
        tx, top = min(max(0, tx), max(0, w - lw)), min(max(0, top), max(0, h - lh))
        rect = (tx, top, tx + lw, top + lh)
        cost = (4 * sum(_overlap(rect, other) for other in placed) + sum(_overlap(rect, other) for other in others)
                + _overlap(rect, box) // 2)
        if best is None or cost < best[1]:
            best = ((tx, top, tx + lw, top + lh, baseline, font_scale, text), cost)
        if cost == 0:
            break
    return best


def _overlap(a, b) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
