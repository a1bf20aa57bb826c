"""Ground-truth boxes from our CSV, a PASCAL VOC folder or COCO JSON, validated line by line."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

LABELS = ("masked", "unmasked", "incorrect")
# names used by public mask data sets, mapped onto ours
ALIASES = {
    "masked": "masked", "mask": "masked", "with_mask": "masked", "face_mask": "masked",
    "unmasked": "unmasked", "no_mask": "unmasked", "without_mask": "unmasked", "nomask": "unmasked", "face": "unmasked",
    "incorrect": "incorrect", "mask_weared_incorrect": "incorrect", "mask_worn_incorrectly": "incorrect", "incorrect_mask": "incorrect",
}


class GroundTruthError(Exception):
    pass


GroundTruth = dict[str, list[tuple[list[float], str]]]


def _label(raw: str, where: str) -> str:
    label = ALIASES.get(raw.strip().lower())
    if label is None:
        raise GroundTruthError(f"{where}: unknown label {raw!r} (expected one of {', '.join(LABELS)})")
    return label


def _box(values: list[str], where: str) -> list[float]:
    try:
        box = [float(v) for v in values]
    except ValueError:
        raise GroundTruthError(f"{where}: box coordinates must be numbers, got {values}") from None
    if not (box[2] > box[0] and box[3] > box[1]):
        raise GroundTruthError(f"{where}: box must have x2 > x1 and y2 > y1, got {box}")
    return box


def load_ground_truth(path: str | Path) -> GroundTruth:
    path = Path(path)
    if path.is_dir():
        return _load_voc(path)
    if not path.is_file():
        raise GroundTruthError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".json":
        return _load_coco(path)
    return _load_csv(path)


def _load_csv(path: Path) -> GroundTruth:
    gt: GroundTruth = defaultdict(list)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        need = ["image", "x1", "y1", "x2", "y2", "label"]
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise GroundTruthError(f"{path}:1: missing column(s) {', '.join(missing)} (expected {','.join(need)})")
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            if not row["image"]:
                raise GroundTruthError(f"{where}: empty image name")
            gt[row["image"]].append((_box([row[k] for k in ("x1", "y1", "x2", "y2")], where), _label(row["label"], where)))
    return dict(gt)


def _load_voc(folder: Path) -> GroundTruth:
    gt: GroundTruth = {}
    files = sorted(folder.rglob("*.xml"))
    if not files:
        raise GroundTruthError(f"{folder}: no PASCAL VOC .xml files")
    for xml in files:
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as e:
            raise GroundTruthError(f"{xml}:{e.position[0]}: invalid XML ({e})") from None
        name = root.findtext("filename") or xml.with_suffix(".jpg").name
        boxes = []
        for i, obj in enumerate(root.iter("object")):
            where = f"{xml}: object {i + 1}"
            bb = obj.find("bndbox")
            if bb is None:
                raise GroundTruthError(f"{where}: no <bndbox>")
            boxes.append((_box([bb.findtext(k) or "" for k in ("xmin", "ymin", "xmax", "ymax")], where), _label(obj.findtext("name") or "", where)))
        gt[name] = boxes
    return gt


def _load_coco(path: Path) -> GroundTruth:
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise GroundTruthError(f"{path}: invalid JSON ({e})") from None
    try:
        cats = {c["id"]: c["name"] for c in data["categories"]}
        images = {im["id"]: im["file_name"] for im in data["images"]}
        gt: GroundTruth = {name: [] for name in images.values()}
        for i, ann in enumerate(data["annotations"]):
            where = f"{path}: annotations[{i}]"
            x, y, w, h = ann["bbox"]
            gt[images[ann["image_id"]]].append((_box([x, y, x + w, y + h], where), _label(cats[ann["category_id"]], where)))
    except (KeyError, TypeError, ValueError) as e:
        raise GroundTruthError(f"{path}: not COCO detection JSON ({type(e).__name__}: {e})") from None
    return gt
