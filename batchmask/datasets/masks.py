"""Procedural face masks placed from the 5 RetinaFace landmarks.

Masks are drawn, not pasted from stock images: a polygon in the face's own
frame (eye line and eye-to-mouth axis, so it follows roll and scale), filled
with a style's colour, shaded top to bottom, with pleats or seams and ear
loops. `wear` places it correctly, under the nose, under the mouth, or on the chin only.
"""

from __future__ import annotations

import cv2
import numpy as np

STYLES = ("surgical", "cloth", "ffp2", "dark", "patterned")
WEAR = ("correct", "nose_exposed", "mouth_exposed", "chin_only")
# how often each way of wearing it wrong is drawn: a mask under the nose is the common case
INCORRECT_WEIGHTS = {"nose_exposed": 0.5, "mouth_exposed": 0.2, "chin_only": 0.3}

_COLOURS = {
    "surgical": [(120, 170, 215), (140, 200, 225), (235, 235, 240), (150, 210, 190)],
    "cloth": [(40, 60, 120), (120, 30, 40), (90, 90, 95), (200, 180, 150), (30, 90, 60)],
    "ffp2": [(235, 235, 230), (225, 225, 215), (240, 240, 240)],
    "dark": [(25, 25, 30), (40, 40, 48), (15, 20, 35)],
    "patterned": [(180, 60, 90), (60, 120, 180), (230, 190, 60)],
}


def _frame(landmarks: np.ndarray):
    """Origin (eye centre), unit vectors across (u) and down (v) the face, eye distance e, eye-mouth d."""
    le, re, nose, lm, rm = np.asarray(landmarks, np.float32).reshape(5, 2)
    eye_c, mouth_c = (le + re) / 2, (lm + rm) / 2
    u = re - le
    e = float(np.linalg.norm(u)) or 1.0
    u = u / e
    v = np.array([-u[1], u[0]], np.float32)
    if np.dot(mouth_c - eye_c, v) < 0:
        v = -v
    d = float(np.dot(mouth_c - eye_c, v)) or e
    return eye_c, u, v, e, d, nose


def mask_polygon(landmarks: np.ndarray, wear: str = "correct", jitter: np.ndarray | None = None) -> np.ndarray:
    eye_c, u, v, e, d, nose = _frame(landmarks)
    nose_v = float(np.dot(nose - eye_c, v)) / d
    top = {"correct": 0.45 * nose_v + 0.05, "nose_exposed": nose_v + 0.12, "mouth_exposed": 1.2, "chin_only": 1.55}[wear]
    # (across in eye distances, down in eye-to-mouth distances), left half then mirrored
    half = [(0.0, top), (-0.55, top + 0.08), (-1.0, top + 0.25), (-1.08, 1.25), (-0.85, 1.75), (-0.45, 2.05), (0.0, 2.15)]
    pts = half + [(-a, b) for a, b in reversed(half[1:-1])]
    pts = np.array(pts, np.float32)
    if jitter is not None:
        pts = pts + jitter[: len(pts)]
    return (eye_c + np.outer(pts[:, 0] * e, u) + np.outer(pts[:, 1] * d, v)).astype(np.float32)


def draw_mask(rgb: np.ndarray, landmarks: np.ndarray, style: str = "surgical", wear: str = "correct", rng: np.random.Generator | None = None) -> np.ndarray:
    """A copy of `rgb` with a mask of `style` drawn on the face given by `landmarks`."""
    rng = rng or np.random.default_rng(0)
    h, w = rgb.shape[:2]
    eye_c, u, v, e, d, _ = _frame(landmarks)
    poly = mask_polygon(landmarks, wear, rng.normal(0, 0.03, (14, 2)).astype(np.float32))
    scale = 4  # draw supersampled for smooth edges
    cover = np.zeros((h * scale // scale, w), np.uint8)
    cv2.fillPoly(cover, [np.round(poly * scale).astype(np.int32)], 255, cv2.LINE_AA, shift=2)
    cover = cv2.GaussianBlur(cover, (3, 3), 0).astype(np.float32) / 255.0

    palette = _COLOURS[style]
    base = np.array(palette[rng.integers(len(palette))], np.float32)
    layer = np.empty_like(rgb, dtype=np.float32)
    layer[:] = base
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    along = ((xx - eye_c[0]) * v[0] + (yy - eye_c[1]) * v[1]) / d  # 0 at eyes, ~2 at chin
    across = ((xx - eye_c[0]) * u[0] + (yy - eye_c[1]) * u[1]) / e
    shade = 1.0 - 0.18 * np.clip(np.abs(across), 0, 1.2) ** 2 - 0.08 * np.clip(along - 1.0, 0, 1.2)
    light = rng.uniform(0.75, 1.1)
    layer *= (shade * light)[..., None]
    if style == "surgical":
        pleats = (np.sin((along - 0.6) * np.pi * 3.2) > 0.85).astype(np.float32)
        layer *= (1 - 0.12 * pleats)[..., None]
    elif style == "ffp2":
        seam = np.exp(-(across**2) / 0.004)
        layer *= (1 - 0.15 * seam)[..., None]
    elif style == "patterned":
        dots = (np.sin(xx / max(2.0, e / 6)) * np.sin(yy / max(2.0, e / 6)) > 0.6).astype(np.float32)
        other = np.array(palette[(palette.index(tuple(base.astype(int))) + 1) % len(palette)] if tuple(base.astype(int)) in palette else palette[0], np.float32)
        layer = layer * (1 - dots[..., None]) + other * shade[..., None] * dots[..., None]
    elif style == "cloth":
        grain = rng.normal(0, 6, (h, w)).astype(np.float32)
        layer += grain[..., None]
    texture = rng.normal(0, 3, (h, w)).astype(np.float32)
    layer += texture[..., None]
    out = rgb.astype(np.float32) * (1 - cover[..., None]) + np.clip(layer, 0, 255) * cover[..., None]
    out = out.astype(np.uint8)
    # ear loops: from the mask's sides towards the ears
    loop_colour = tuple(int(c) for c in np.clip(base * 0.9, 0, 255))
    thick = max(1, int(round(e / 30)))
    for side in (-1, 1):
        start = poly[3] if side < 0 else poly[-3]
        end = eye_c + u * side * e * 1.25 + v * d * 0.2
        lower = poly[4] if side < 0 else poly[-4]
        end2 = eye_c + u * side * e * 1.3 + v * d * 1.1
        cv2.line(out, tuple(np.round(start).astype(int)), tuple(np.round(end).astype(int)), loop_colour, thick, cv2.LINE_AA)
        cv2.line(out, tuple(np.round(lower).astype(int)), tuple(np.round(end2).astype(int)), loop_colour, thick, cv2.LINE_AA)
    return out
