"""Faces: one array-backed record for every face found in one image."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LABELS = ("masked", "unmasked")


@dataclass
class Faces:
    """Boxes (N×4, x1 y1 x2 y2), detector scores (N), landmarks (N×5×2: eyes,
    nose, mouth corners) and mask scores (N, probability of a mask; NaN until
    classified), in pixels of the image as displayed."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    det_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 5, 2), np.float32))
    mask_scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.det_scores = np.asarray(self.det_scores, np.float32).reshape(-1)
        self.landmarks = np.asarray(self.landmarks, np.float32).reshape(-1, 5, 2)
        if self.mask_scores is None:
            self.mask_scores = np.full(len(self.boxes), np.nan, np.float32)
        self.mask_scores = np.asarray(self.mask_scores, np.float32).reshape(-1)
        n = len(self.boxes)
        if not (len(self.det_scores) == len(self.landmarks) == len(self.mask_scores) == n):
            raise ValueError("Faces arrays must all have the same length")

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index) -> "Faces":
        return Faces(self.boxes[index], self.det_scores[index], self.landmarks[index], self.mask_scores[index])

    @property
    def widths(self) -> np.ndarray:
        return self.boxes[:, 2] - self.boxes[:, 0]

    def labels(self, threshold: float = 0.5) -> list[str]:
        """`masked` where the mask score reaches the threshold, else `unmasked`."""
        return [LABELS[0] if s >= threshold else LABELS[1] for s in self.mask_scores]

    def scaled(self, factor_x: float, factor_y: float) -> "Faces":
        s = np.array([factor_x, factor_y], np.float32)
        return Faces(self.boxes * np.tile(s, 2), self.det_scores, self.landmarks * s, self.mask_scores)

    @staticmethod
    def concat(parts: list["Faces"]) -> "Faces":
        if not parts:
            return Faces()
        return Faces(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.det_scores for p in parts]),
            np.concatenate([p.landmarks for p in parts]),
            np.concatenate([p.mask_scores for p in parts]),
        )
