"""Ground-truth boxes from our CSV, a PASCAL VOC folder (or one .xml file) or COCO JSON,
validated line by line: a bad file is rejected naming the line (or annotation) at fault."""

from __future__ import annotations

import csv
import io
import json
import math
import posixpath
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

LABELS = ("masked", "unmasked", "incorrect")
COLUMNS = ("image", "x1", "y1", "x2", "y2", "label")
# names used by public mask data sets, mapped onto ours
ALIASES = {
    "masked": "masked", "mask": "masked", "with_mask": "masked", "face_mask": "masked",
    "unmasked": "unmasked", "no_mask": "unmasked", "without_mask": "unmasked", "nomask": "unmasked", "face": "unmasked",
    "incorrect": "incorrect", "mask_weared_incorrect": "incorrect", "mask_worn_incorrectly": "incorrect", "incorrect_mask": "incorrect",
}


class GroundTruthError(Exception):
    pass


GroundTruth = dict[str, list[tuple[list[float], str]]]
# COCO `iscrowd` and VOC `difficult` boxes, by their formats' conventions: neither a face to find
# nor a false detection when found (a detection on one is left out of the scores)
IGNORE = "ignore"


# `face` is AIZOO's name for a face without a mask, but in a plain face-detection set it means any face
AMBIGUOUS = {"face"}


def _label(raw, where: str, counts: dict | None = None, image: str = "") -> str:
    name = raw.strip().lower() if isinstance(raw, str) else None
    label = ALIASES.get(name)
    if label is None:
        raise GroundTruthError(f"{where}: unknown label {raw!r} (expected one of {', '.join(LABELS)})")
    if counts is not None and name in AMBIGUOUS:
        per_image = counts.setdefault(name, {})
        per_image[image_key(image)] = per_image.get(image_key(image), 0) + 1
    return label


def ambiguous_counts(counts: dict, images=None) -> dict[str, int]:
    """Boxes per ambiguous label name, over all images or only those in `images`."""
    totals = {name: sum(n for image, n in per.items() if images is None or image in images) for name, per in counts.items()}
    return {name: n for name, n in sorted(totals.items()) if n}


def ambiguous_label_warning(counts: dict) -> str | None:
    """What to tell a user whose ground truth used a label that may not mean what we read."""
    if not counts:
        return None
    said = ", ".join(f"{n} labelled {name!r}" for name, n in ambiguous_counts(counts).items())
    return (f"{said}: read as unmasked (the AIZOO data set's name for a face without a mask); if these are plain face "
            "boxes with no mask labels, only the detector figures (recall, precision, false detections) mean anything")


def _number(value) -> float:
    """A finite coordinate from text or a JSON number (not a bool, not a JSON string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(value)
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(value)
    return x


def _box(values: list, where: str) -> list[float]:
    try:
        box = [_number(v) for v in values]
    except ValueError:
        raise GroundTruthError(f"{where}: box coordinates must be finite numbers, got {values}") from None
    if not (box[2] > box[0] and box[3] > box[1]):
        raise GroundTruthError(f"{where}: box must have x2 > x1 and y2 > y1, got {box}")
    return box


def load_ground_truth(path: str | Path, ambiguous: dict | None = None) -> GroundTruth:
    """Boxes per image name; an error for any malformed entry and for a file with no face at all.

    `ambiguous`, when given, counts the boxes whose label is one of AMBIGUOUS, by name and image."""
    path = Path(path)
    if path.is_dir():
        gt = _load_voc(path, sorted(p for p in path.rglob("*.xml") if p.is_file()), ambiguous)
    elif not path.is_file():
        raise GroundTruthError(f"{path}: no such file or folder")
    elif path.suffix.lower() == ".json":
        gt = _load_coco(path, ambiguous)
    elif path.suffix.lower() == ".xml":
        gt = _load_voc(path, [path], ambiguous)
    else:
        gt = _load_csv(path, ambiguous)
    if not any(label != IGNORE for boxes in gt.values() for _, label in boxes):
        raise GroundTruthError(f"{path}: no annotated faces")
    merged: GroundTruth = {}
    for name, boxes in gt.items():
        merged.setdefault(image_key(name), []).extend(boxes)
    return merged


def image_key(name: str) -> str:
    """An image name as batchmask's tables write it: POSIX separators, no `./`; absolute paths stay absolute."""
    return posixpath.normpath(name.replace("\\", "/"))


def relative_to_folder(names, folder: Path) -> dict[str, str]:
    """name -> the name relative to `folder`, for absolute names that lie inside it."""
    roots = [str(folder.absolute()), str(folder.resolve())]
    out = {}
    for name in names:
        if posixpath.isabs(name):
            for root in roots:
                if name.startswith(root.rstrip("/") + "/"):
                    out[name] = name[len(root.rstrip("/")) + 1:]
                    break
    return out


def read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise GroundTruthError(f"{path}:{line}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
    except OSError as e:
        raise GroundTruthError(f"{path}: cannot read ({e.strerror})") from None


def csv_header(reader, path: Path, columns: tuple[str, ...]) -> list[str]:
    """The header row of a CSV file, lower-cased; an error naming the file for a missing, repeated or
    ';'-separated column (a csv.Error from the reader is the caller's to report)."""
    header = next(reader, None)
    if not header:
        raise GroundTruthError(f"{path}: empty file (expected the header {','.join(columns)})")
    header = [h.strip().lower() for h in header]
    if len(header) == 1 and ";" in header[0]:
        raise GroundTruthError(f"{path}:1: fields separated by ';': expected a comma-separated header {','.join(columns)}")
    doubled = sorted({h for h in header if header.count(h) > 1})
    if doubled:
        raise GroundTruthError(f"{path}:{reader.line_num}: column(s) {', '.join(doubled)} appear more than once")
    missing = [c for c in columns if c not in header]
    if missing:
        raise GroundTruthError(f"{path}:{reader.line_num}: missing column(s) {', '.join(missing)} (expected {','.join(columns)})")
    return header


def _load_csv(path: Path, ambiguous: dict | None) -> GroundTruth:
    gt: GroundTruth = defaultdict(list)
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    start = 1
    try:
        header = csv_header(reader, path, COLUMNS)
        at = {c: header.index(c) for c in COLUMNS}
        first_line: dict = {}
        while True:
            start = reader.line_num + 1  # a quoted field may run over several lines: errors name the first
            fields = next(reader, None)
            if fields is None:
                break
            if not fields or fields == [""]:
                continue
            where = f"{path}:{start}" if start == reader.line_num else f"{path}:{start}-{reader.line_num}"
            if len(fields) != len(header):
                raise GroundTruthError(f"{where}: {len(fields)} fields, the header has {len(header)} ({','.join(header)})")
            row = {c: fields[i].strip() for c, i in at.items()}
            if not row["image"]:
                raise GroundTruthError(f"{where}: empty image name")
            if not any(row[k] for k in ("x1", "y1", "x2", "y2", "label")):
                gt.setdefault(row["image"], [])  # `photo.jpg,,,,,`: annotated, with no face (its detections are false ones)
                continue
            box = _box([row[k] for k in ("x1", "y1", "x2", "y2")], where)
            key = (row["image"], tuple(box))
            if key in first_line:
                raise GroundTruthError(f"{where}: the same box of {row['image']!r} is on line {first_line[key]} already (a face listed twice would count as missed)")
            first_line[key] = start
            gt[row["image"]].append((box, _label(row["label"], where, ambiguous, row["image"])))
    except csv.Error as e:
        raise GroundTruthError(f"{path}:{start}: not valid CSV ({e})") from None
    return dict(gt)


def _load_voc(where: Path, files: list[Path], ambiguous: dict | None) -> GroundTruth:
    """Image name from <filename> (else the XML file's name with .jpg); one file per image."""
    gt: GroundTruth = {}
    source: dict[str, Path] = {}
    if not files:
        raise GroundTruthError(f"{where}: no PASCAL VOC .xml files")
    for xml in files:
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as e:
            raise GroundTruthError(f"{xml}:{e.position[0]}: invalid XML ({e})") from None
        except OSError as e:
            raise GroundTruthError(f"{xml}: cannot read ({e.strerror or e})") from None
        if root.tag != "annotation":
            raise GroundTruthError(f"{xml}: not a PASCAL VOC annotation (root element <{root.tag}>, expected <annotation>)")
        name = (root.findtext("filename") or "").strip() or xml.with_suffix(".jpg").name
        if name in source:
            raise GroundTruthError(f"{xml}: image {name!r} is already annotated by {source[name]}")
        source[name] = xml
        boxes = []
        for i, obj in enumerate(root.iter("object")):
            at = f"{xml}: object {i + 1}"
            bb = obj.find("bndbox")
            if bb is None:
                raise GroundTruthError(f"{at}: no <bndbox>")
            box = _box([bb.findtext(k) or "" for k in ("xmin", "ymin", "xmax", "ymax")], at)
            difficult = (obj.findtext("difficult") or "0").strip() == "1"
            label = _label(obj.findtext("name") or "", at, None if difficult else ambiguous, name)
            boxes.append((box, IGNORE if difficult else label))
        gt[name] = boxes
    return gt


def _is_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _load_coco(path: Path, ambiguous: dict | None) -> GroundTruth:
    try:
        data = json.loads(read_text(path))
    except ValueError as e:
        raise GroundTruthError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise GroundTruthError(f"{path}: not COCO detection JSON (needs lists 'images', 'annotations' and 'categories')")
    cats, images = {}, {}
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not _is_id(c.get("id")) or not isinstance(c.get("name"), str):
            raise GroundTruthError(f"{path}: categories[{i}]: needs an 'id' (number or text) and a 'name'")
        if c["id"] in cats:
            raise GroundTruthError(f"{path}: categories[{i}]: id {c['id']!r} is already the id of {cats[c['id']]!r}")
        cats[c["id"]] = c["name"]
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not _is_id(im.get("id")) or not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise GroundTruthError(f"{path}: images[{i}]: needs an 'id' (number or text) and a 'file_name'")
        if im["id"] in images:
            raise GroundTruthError(f"{path}: images[{i}]: id {im['id']!r} is already the id of {images[im['id']]!r}")
        images[im["id"]] = im["file_name"]
    gt: GroundTruth = {name: [] for name in images.values()}
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict):
            raise GroundTruthError(f"{where}: not an object")
        if not _is_id(ann.get("image_id")) or ann["image_id"] not in images:
            hint = " (ids are compared as written: 1 and \"1\" differ)" if any(str(k) == str(ann.get("image_id")) for k in images) else ""
            raise GroundTruthError(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'{hint}")
        if not _is_id(ann.get("category_id")) or ann["category_id"] not in cats:
            raise GroundTruthError(f"{where}: category_id {ann.get('category_id')!r} is not in 'categories'")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or any(isinstance(v, (str, bool)) for v in bbox):
            raise GroundTruthError(f"{where}: bbox must be 4 numbers [x, y, width, height], got {bbox!r}")
        try:
            x, y, w, h = (_number(v) for v in bbox)
        except ValueError:
            raise GroundTruthError(f"{where}: bbox must be 4 finite numbers, got {bbox!r}") from None
        label = _label(cats[ann["category_id"]], where, None if ann.get("iscrowd") else ambiguous, images[ann["image_id"]])
        gt[images[ann["image_id"]]].append((_box([x, y, x + w, y + h], where), IGNORE if ann.get("iscrowd") else label))
    return gt
