"""Deterministic, leakage-free splits: every crop of one source group lands on one side
(near-duplicate files join one group: `build.split_groups`)."""

from __future__ import annotations

import hashlib
import re

SPLITS = ("train", "val", "test")
_VGG_IDENTITY = re.compile(r"^(n\d{6})_")


def group_key(source: str, filename: str) -> str:
    """Crops that must stay together: one VGGFace2 identity, otherwise one source photo."""
    m = _VGG_IDENTITY.match(filename)
    return f"{source}:{m.group(1) if m else filename}"


def assign_split(key: str, seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> str:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "val"
    return "test"
