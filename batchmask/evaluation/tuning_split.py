"""Which annotated photos are tuning photos (for `calibrate`) and which are held out (for `evaluate`).

The tuning photos are the first N by sorted name, plus every near-duplicate of one of them
(transitively): a pair split across the two parts would let a held-out photo be scored on what
calibration already saw. Pairs are those a CSV `image_a,image_b` lists (the format of
`near_duplicates.csv` in ../shared/data; by default the file of that name beside the ground
truth) and those found by comparing the photos (`batchmask.near_duplicates`, as `data build` does).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .groundtruth import GroundTruthError, csv_header, image_key, read_text

NEAR_DUPLICATES = "near_duplicates.csv"
COLUMNS = ("image_a", "image_b")


def default_near_duplicates(boxes: Path) -> Path | None:
    """`near_duplicates.csv` beside a ground-truth file, or inside a VOC folder, if there is one."""
    boxes = Path(boxes)
    candidate = (boxes if boxes.is_dir() else boxes.parent) / NEAR_DUPLICATES
    return candidate if candidate.is_file() else None


def load_near_duplicates(path: Path) -> list[tuple[str, str]]:
    """The pairs of a near-duplicates CSV; a malformed file is rejected naming the line at fault."""
    path = Path(path)
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    pairs = []
    try:
        header = csv_header(reader, path, COLUMNS)
        at = [header.index(c) for c in COLUMNS]
        for fields in reader:
            if not fields or fields == [""]:
                continue
            if len(fields) != len(header):
                raise GroundTruthError(f"{path}:{reader.line_num}: {len(fields)} fields, the header has {len(header)} ({','.join(header)})")
            a, b = (image_key(fields[i].strip()) if fields[i].strip() else "" for i in at)
            if not a or not b:
                raise GroundTruthError(f"{path}:{reader.line_num}: empty image name")
            pairs.append((a, b))
    except csv.Error as e:
        raise GroundTruthError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
    return pairs


def tuning_photos(names, first: int, pairs: list[tuple[str, str]] = ()) -> tuple[list[str], list[str]]:
    """(tuning photos in sorted order, the near-duplicates among them that are not in the first `first`).

    Names in `pairs` that are not among `names` are ignored."""
    order = sorted(names)
    known = set(order)
    linked: dict[str, set[str]] = {}
    for a, b in pairs:
        if a in known and b in known and a != b:
            linked.setdefault(a, set()).add(b)
            linked.setdefault(b, set()).add(a)
    tuning = set(order[:first])
    frontier = list(tuning)
    while frontier:
        for other in linked.get(frontier.pop(), ()):
            if other not in tuning:
                tuning.add(other)
                frontier.append(other)
    added = sorted(tuning - set(order[:first]))
    return [n for n in order if n in tuning], added


def unknown_names(names, pairs: list[tuple[str, str]]) -> list[str]:
    """Names in `pairs` that are not annotated photos (a near-duplicates file for another set?)."""
    known = set(names)
    return sorted({n for pair in pairs for n in pair} - known)


def found_near_duplicates(names, images: Path) -> list[tuple[str, str]]:
    """Pairs of annotated photos (names as in the ground truth, relative to `images` or absolute) that look alike."""
    from ..near_duplicates import fingerprints, near_duplicate_pairs

    names = sorted(names)
    prints = fingerprints([str(Path(images) / n) for n in names])  # an absolute name stays itself
    return [(names[i], names[j]) for i, j in near_duplicate_pairs(prints)]


def tuning_and_held_out(gt, first: int, boxes: Path, images: Path) -> tuple[list[str], list[str]]:
    """Both parts of an annotated set, as `calibrate` and `evaluate --exclude-first` split it (the benchmarks' split)."""
    listed = default_near_duplicates(boxes)
    pairs = (load_near_duplicates(listed) if listed else []) + found_near_duplicates(gt, images)
    tuning = set(tuning_photos(gt, first, pairs)[0])
    return sorted(tuning), sorted(n for n in gt if n not in tuning)
