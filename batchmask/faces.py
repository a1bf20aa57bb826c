"""Faces: one array-backed record for every face found in one image."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .classifier import decide



@dataclass
class Faces:
    """Boxes (N×4, x1 y1 x2 y2), detector scores (N), landmarks (N×5×2: eyes,
    nose, mouth corners), mask scores (N, probability of a mask worn correctly)
    and incorrect scores (N, probability of a mask worn incorrectly; both NaN
    until classified), in pixels of the image as displayed."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    det_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 5, 2), np.float32))
    mask_scores: np.ndarray | None = None
    incorrect_scores: np.ndarray | None = None
    threshold: float | None = None  # the classifier's threshold, when a model gave the scores: `labels()` uses it

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.det_scores = np.asarray(self.det_scores, np.float32).reshape(-1)
        self.landmarks = np.asarray(self.landmarks, np.float32).reshape(-1, 5, 2)
        if self.mask_scores is None:
            self.mask_scores = np.full(len(self.boxes), np.nan, np.float32)
        self.mask_scores = np.asarray(self.mask_scores, np.float32).reshape(-1)
        if self.incorrect_scores is None:
            self.incorrect_scores = np.where(np.isnan(self.mask_scores), np.nan, 0.0).astype(np.float32)
        self.incorrect_scores = np.asarray(self.incorrect_scores, np.float32).reshape(-1)
        n = len(self.boxes)
        if not (len(self.det_scores) == len(self.landmarks) == len(self.mask_scores) == len(self.incorrect_scores) == n):
            raise ValueError("Faces arrays must all have the same length")

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index) -> "Faces":
        return Faces(self.boxes[index], self.det_scores[index], self.landmarks[index], self.mask_scores[index], self.incorrect_scores[index], self.threshold)

    @property
    def widths(self) -> np.ndarray:
        return self.boxes[:, 2] - self.boxes[:, 0]

    @property
    def probabilities(self) -> np.ndarray:
        """N×3 (masked, incorrect, unmasked) probabilities."""
        return np.stack([self.mask_scores, self.incorrect_scores, 1.0 - self.mask_scores - self.incorrect_scores], axis=1)

    def set_probabilities(self, probs: np.ndarray) -> None:
        probs = np.asarray(probs, np.float32).reshape(len(self), 3)
        self.mask_scores, self.incorrect_scores = probs[:, 0].copy(), probs[:, 1].copy()

    def labels(self, threshold: float | None = None, labels: int = 3) -> list[str]:
        """`masked` where the mask score reaches the threshold (by default the model's, as `run` uses),
        else `incorrect` or `unmasked` (see `classifier.decide`); with ``labels=2`` never `incorrect`."""
        threshold = self.threshold if threshold is None else threshold
        if threshold is None:
            raise ValueError("no threshold: these scores came from no model, so give one (faces.labels(0.5))")
        if not 0 <= threshold <= 1 or labels not in (2, 3):
            raise ValueError(f"threshold must be within 0..1 and labels 2 or 3, not {threshold!r} and {labels!r}")
        return decide(self.probabilities, threshold, labels)

    def scaled(self, factor_x: float, factor_y: float) -> "Faces":
        s = np.array([factor_x, factor_y], np.float32)
        return Faces(self.boxes * np.tile(s, 2), self.det_scores, self.landmarks * s, self.mask_scores, self.incorrect_scores, self.threshold)

    def shifted(self, dx: float, dy: float) -> "Faces":
        d = np.array([dx, dy], np.float32)
        return Faces(self.boxes + np.tile(d, 2), self.det_scores, self.landmarks + d, self.mask_scores, self.incorrect_scores, self.threshold)

    @staticmethod
    def concat(parts: list["Faces"]) -> "Faces":
        if not parts:
            return Faces()
        return Faces(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.det_scores for p in parts]),
            np.concatenate([p.landmarks for p in parts]),
            np.concatenate([p.mask_scores for p in parts]),
            np.concatenate([p.incorrect_scores for p in parts]),
        )
