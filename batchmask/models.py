"""Where the shipped models live, and verifying them before they are loaded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

_PACKAGED = Path(__file__).resolve().parent / "_models"
_REPO = Path(__file__).resolve().parents[1] / "data" / "models"


class ModelError(Exception):
    """A model directory that is missing, incomplete or does not match its checksum."""


def models_root() -> Path:
    """`batchmask/_models` inside an installed wheel, `data/models` in a source checkout."""
    return _PACKAGED if _PACKAGED.is_dir() else _REPO


def default_detector_dir() -> Path:
    return models_root() / "retinaface"


def default_classifier_dir() -> Path:
    return models_root() / "mask_classifier"


def default_detector_path() -> Path:
    return verified_model(default_detector_dir())[0]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_model_meta(model_dir: Path) -> dict:
    meta_path = Path(model_dir) / "model.json"
    if not meta_path.is_file():
        raise ModelError(f"{model_dir}: no model.json (not a batchmask model directory)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{meta_path}: unreadable model.json ({e})") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{meta_path}: not a model.json (a JSON object expected)")
    for key in ("file", "sha256"):
        if key not in meta:
            raise ModelError(f"{meta_path}: missing key '{key}'")
        if not isinstance(meta[key], str) or not meta[key]:
            raise ModelError(f"{meta_path}: '{key}' must be a non-empty string, not {meta[key]!r}")
    _check_number(meta, "threshold", meta_path, 0.0, 1.0)
    _check_number(meta, "crop_margin", meta_path, 0.5, 4.0)
    size = meta.get("input_size", 96)
    if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 1024:
        raise ModelError(f"{meta_path}: 'input_size' must be a whole number of pixels from 16 to 1024, not {size!r}")
    levels = meta.get("crop_levels")
    if levels is not None and not (
        isinstance(levels, list) and len(levels) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in levels)
        and 0 <= levels[0] < levels[1] <= 100
    ):
        raise ModelError(f"{meta_path}: crop_levels must be two percentiles, like [1, 99], or null; got {levels!r}")
    return meta


def _check_number(meta: dict, key: str, where: Path, low: float, high: float) -> None:
    value = meta.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ModelError(f"{where}: '{key}' must be a number from {low:g} to {high:g}, not {value!r}")


def verified_model(model_dir: Path) -> tuple[Path, dict]:
    """The model file and its metadata, after checking the file's SHA-256."""
    meta = read_model_meta(model_dir)
    path = Path(model_dir) / meta["file"]
    if not path.is_file():
        raise ModelError(f"{path}: model file missing")
    digest = sha256_file(path)
    if digest != meta["sha256"]:
        raise ModelError(f"{path}: SHA-256 {digest[:12]}… does not match model.json ({meta['sha256'][:12]}…); the file is corrupt or was replaced")
    return path, meta
