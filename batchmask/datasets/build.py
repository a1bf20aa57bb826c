"""`batchmask data build`: face crops from raw photos or crops, split and labelled.

Each raw file (a whole photo or a tight face crop) goes through the engine's
detector (padded first, so a face that fills the frame is still found); the
largest face is cropped exactly as the classifier will see it at inference.
A share of the unmasked faces get a procedural mask drawn from their landmarks
first (`masks.py`): most worn correctly (label masked), some with the nose
exposed or on the chin only (label incorrect, kept apart for the 3-label model).
Output: DATA/{train,val,test}/{masked,unmasked,incorrect}/*.jpg, metadata.csv, summary.json.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import signal
import threading
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from ..detector import DetectorConfig
from ..engine import make_engine
from ..models import default_detector_path
from ..near_duplicates import fingerprints, joined_groups, near_duplicate_pairs
from ..sources import scan
from ..sinks import OutputBusyError
from ..storage import UnsafePathError, atomic_write_json, atomic_write_text, safe_join
from ..worker import WorkerConfig
from .masks import INCORRECT_WEIGHTS, STYLES
from .splits import assign_split, group_key

CROP_SIZE = 128
CROP_MARGIN = 1.6  # wider than inference framing, so training can zoom and shift


@dataclass
class BuildSource:
    folder: Path
    label: str  # masked | unmasked


def mask_plan(key: str, seed: int, share: float, incorrect_share: float) -> dict | None:
    """Whether (and how) an unmasked face gets an artificial mask: a deterministic draw per file."""
    rng = random.Random(f"mask:{seed}:{key}")
    if rng.random() >= share:
        return None
    wear = "correct" if rng.random() >= incorrect_share else rng.choices(list(INCORRECT_WEIGHTS), weights=list(INCORRECT_WEIGHTS.values()))[0]
    return {"style": rng.choice(STYLES), "wear": wear, "seed": rng.randrange(2**31)}


class DatasetError(Exception):
    pass


def _listed_crops(out: Path) -> set[str]:
    """The crops an earlier build into OUT listed in its metadata.csv (these and an interrupted build's
    pending crops are the only files a build removes)."""
    try:
        with open(out / "metadata.csv", newline="", encoding="utf-8") as f:
            return {row["crop"] for row in csv.DictReader(f) if row.get("crop")}
    except (OSError, KeyError, csv.Error, UnicodeDecodeError):
        return set()


# workers write a build's crops here; they are moved into place only once every file is done,
# so a build that is interrupted before then leaves DATA as the last complete build made it
STAGING = ".build-staging"
# the crops being moved into place, noted before the first move: a build interrupted while it moves
# them leaves crops its metadata.csv never lists, and the next build into DATA removes them
PENDING = ".build-pending.txt"
LOCK = ".build.lock"


def unfinished_build_warning(data: Path) -> str | None:
    """What to say of a DATA whose build is moving its crops into place, or was interrupted while it did: its folders mix two builds."""
    if (Path(data) / PENDING).is_file():
        return (f"{data} holds a data build that is moving its crops into place or was interrupted while it did ({PENDING}): "
                "its crops may mix two builds until a build into it completes")
    return None


def _pending_crops(out: Path) -> set[str]:
    try:
        return set((out / PENDING).read_text(encoding="utf-8").splitlines()) - {""}
    except (OSError, UnicodeDecodeError):
        return set()


# what a build writes: SPLIT/LABEL/SOURCE/.../NAME.faceK.jpg (worker.crop_name); nothing else is ever removed
_CROP = re.compile(r"(train|val|test)/(masked|unmasked|incorrect)/.+\.face[0-9]+\.jpg")


def is_build_folder(out: Path) -> bool:
    """Whether OUT holds a data build (its summary.json, or an interrupted first build's crops or pending list)."""
    if (out / PENDING).is_file():
        return True
    try:
        if (out / STAGING).is_dir() and {p.name for p in out.iterdir()} <= {STAGING, LOCK}:
            return True  # an interrupted first build: its staged crops and lock, nothing else
    except OSError:
        return False
    try:
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and {"crops", "by_split", "crop_size", "sources"} <= summary.keys()


def foreign_content(out: Path) -> list[str]:
    """The entries of an existing OUT that is not a data build (a build there would overwrite or mix with them)."""
    if not out.is_dir() or is_build_folder(out):
        return []
    return sorted(p.name for p in out.iterdir() if p.name != LOCK)


def _unlink_inside(out: Path, rel: str) -> None:
    if not _CROP.fullmatch(rel):
        return
    try:
        path = safe_join(out, rel)
        if path.is_file() and not path.is_symlink():
            path.unlink()
    except (OSError, UnsafePathError):
        pass


def source_tags(folders: list[Path]) -> list[str]:
    """Each input folder's name in the build (its crops' folder, and part of its files' split keys):
    the shortest trailing part of its path that is neither another input's name nor the start of
    one (`X` beside `X/Y` would put both inputs' `X/Y/f.jpg` on one crop path). Each round lengthens
    every name in a clash at once, so the names do not depend on the order of the inputs; adding
    an input renames no other unless their paths end alike."""
    parts = [Path(f).resolve().parts[1:] or ("root",) for f in folders]
    k = [1] * len(parts)
    while True:
        tags = [p[-n:] for p, n in zip(parts, k)]
        clashing = {i for i, a in enumerate(tags) for j, b in enumerate(tags) if i != j and (b[:len(a)] == a or a[:len(b)] == b)}
        grow = [i for i in clashing if k[i] < len(parts[i])]
        if not grow:
            return ["/".join(t) for t in tags]
        for i in grow:
            k[i] += 1


def split_groups(entries: list, workers: int | None = None, progress: Callable[[str, dict], None] | None = None) -> tuple[list[str], dict]:
    """Each file's split key: its own group (a VGGFace2 identity, else its file name within its input),
    or, when near-duplicates join groups, the smallest key among them, so that they share a split.
    Also what was found, for summary.json."""
    keys = [group_key(tag, Path(f.rel).name) for _, tag, f in entries]
    progress = progress or (lambda event, data: None)
    progress("fingerprint", {"done": 0, "total": len(entries)})
    prints = fingerprints([f.path for _, _, f in entries], threads=min(workers or os.cpu_count() or 1, os.cpu_count() or 1),
                          progress=lambda done: progress("fingerprint", {"done": done, "total": len(entries)}))
    progress("fingerprint", {"done": len(entries), "total": len(entries)})
    pairs = near_duplicate_pairs(prints)
    groups = joined_groups(keys, pairs)
    across = [(i, j) for i, j in pairs if entries[i][0].label != entries[j][0].label]
    return groups, {
        "pairs": len(pairs),
        "largest_group": max(Counter(groups).values(), default=0),
        "files_joined": sum(1 for k, g in zip(keys, groups) if k != g),
        "across_labels": [[entries[i][1] + "/" + entries[i][2].rel, entries[j][1] + "/" + entries[j][2].rel] for i, j in across[:20]],
        "across_labels_count": len(across),
    }


def build_dataset(
    sources: list[BuildSource],
    out: str | Path,
    limit: int = 0,
    seed: int = 0,
    mask_share: float = 0.5,
    incorrect_share: float = 0.35,
    workers: int | None = None,
    progress: Callable[[str, dict], None] | None = None,
    engine: str = "local",
    scheduler: str | None = None,
) -> dict:
    """Crops of every source file into OUT; on Dask, workers write the crops to OUT themselves (a shared path)."""
    progress = progress or (lambda event, data: None)
    out = Path(out)
    roots = [s.folder.resolve() for s in sources]
    for i, a in enumerate(roots):
        for b in roots[i + 1:]:
            if a == b or a in b.parents or b in a.parents:
                raise DatasetError(f"input folders overlap: {a} and {b} (each file must come from one folder, with one label)")
    unread = Counter()
    entries = []  # (source, tag, scanned file)
    for src, tag in zip(sources, source_tags([s.folder for s in sources])):
        scanned = list(scan(src.folder, exclude=[out]))  # an earlier build's crops are not inputs
        unread.update(f.problem.split(":")[0] for f in scanned if f.problem)  # unreadable folders, dangling links
        files = [f for f in scanned if not f.problem]
        if not files:
            raise DatasetError(f"no photos in {src.folder} (--{src.label}); {out} is left as it was")
        if limit:
            files = random.Random(f"{seed}:{tag}").sample(files, min(limit, len(files)))
            files.sort(key=lambda f: f.rel)
        entries += [(src, tag, f) for f in files]
    if not entries:
        raise DatasetError(f"no photos in {', '.join(str(s.folder) for s in sources)}")
    foreign = foreign_content(out)
    if foreign:
        raise DatasetError(f"{out} holds files that are not a batchmask data build ({', '.join(foreign[:3])}"
                           f"{', …' if len(foreign) > 3 else ''}): give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise OutputBusyError(f"{out} is in use by another batchmask data build") from None
    try:
        _clear_staging(out / STAGING)
        (out / STAGING).mkdir()  # here, not in the workers: an OUT that cannot be written fails now, with its own error
        groups, near = split_groups(entries, workers, progress)
        tasks, meta = [], {}
        for (src, tag, f), group in zip(entries, groups):
            split = assign_split(group, seed)
            plan = mask_plan(f"{tag}/{f.rel}", seed, mask_share, incorrect_share) if src.label == "unmasked" else None
            label = src.label if plan is None else ("masked" if plan["wear"] == "correct" else "incorrect")
            rel = f"{split}/{label}/{tag}/{f.rel}"
            tasks.append((f.path, rel, plan))
            meta[rel] = {
                "split": split, "label": label, "source": tag, "source_file": f.rel,
                "artificial": plan is not None, "mask_style": plan["style"] if plan else "", "wear": plan["wear"] if plan else "",
                "group": group,
            }
        return _build(tasks, meta, sources, out, seed, mask_share, incorrect_share, workers, progress, engine, scheduler, unread, near)
    finally:
        lock.release()


def _remove_empty_folders(out: Path) -> None:
    """Folders under SPLIT/LABEL/ that removed crops left empty."""
    for split in ("train", "val", "test"):
        if (out / split).is_symlink():
            continue
        for dirpath, dirnames, filenames in os.walk(out / split, topdown=False):
            here = Path(dirpath)
            if len(here.relative_to(out).parts) > 2 and not filenames and not dirnames:  # SPLIT/LABEL stay
                try:
                    here.rmdir()
                except OSError:
                    pass


def _clear_staging(staging: Path, best_effort: bool = False) -> None:
    """Remove an interrupted build's unmoved crops (STAGING is batchmask's own folder). `best_effort`:
    on an interrupt, when Dask workers may still be writing there (the next build clears the rest)."""
    if staging.is_symlink() or staging.is_file():
        staging.unlink()
    elif staging.is_dir():
        shutil.rmtree(staging, ignore_errors=best_effort)


def _build(tasks, meta, sources, out, seed, mask_share, incorrect_share, workers, progress, engine, scheduler, unread: Counter, near: dict) -> dict:
    staging = out / STAGING
    config = WorkerConfig(
        detector_path=str(default_detector_path()),
        detector=DetectorConfig(scales=(640,), score_threshold=0.3, min_face=8.0, small_face_score=0.3),
        crops_root=str(staging),
        crop_size=CROP_SIZE,
        crop_margin=CROP_MARGIN,
        crop_largest_only=True,
        crop_pad=0.25,
        crop_fallback_side=256,
    )
    rows, failures = [], Counter(unread)
    progress("start", {"total": len(tasks)})
    try:
        _run_workers(config, tasks, meta, workers, engine, scheduler, rows, failures, seed, progress)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: DATA is as it was; what this build made goes
        _clear_staging(staging, best_effort=True)
        raise
    if not rows:
        _clear_staging(staging)
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(failures.items()))
        raise DatasetError(f"no face crops from {len(tasks)} files ({reasons}); {out} is left as it was")
    rows.sort(key=lambda r: r["crop"])
    # a second or two of renames: Ctrl-C and SIGTERM wait until DATA is one build again (SIGKILL leaves
    # PENDING, and the next build finishes the job)
    with _interrupts_deferred():
        return _swap_in(rows, out, staging, near, tasks, failures, sources, seed, mask_share, incorrect_share)


@contextmanager
def _interrupts_deferred():
    """SIGINT and SIGTERM noted, not acted on, inside the block; handed to the handlers they had
    after it (Ctrl-C: KeyboardInterrupt; an ignored signal stays ignored). Handlers, not a signal
    mask: a signal blocked in the main thread still reaches Python through any other thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    before = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            before[sig] = signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    for sig in dict.fromkeys(caught):
        handler = before[sig]
        if callable(handler):
            handler(sig, None)
        else:  # the default action (or a handler set outside Python): the signal again, now that it can act
            os.kill(os.getpid(), sig)


def _swap_in(rows, out, staging, near, tasks, failures, sources, seed, mask_share, incorrect_share) -> dict:
    """The staged crops moved into place, metadata.csv and summary.json replaced, the earlier build's other crops removed."""
    earlier, interrupted, made = _listed_crops(out), _pending_crops(out), [r["crop"] for r in rows]
    try:
        moves = [(safe_join(staging, crop), safe_join(out, crop)) for crop in made]
    except UnsafePathError as e:  # e.g. DATA/train a link to elsewhere: refused before anything moves
        raise DatasetError(f"{out}: {e}; nothing was moved") from None
    # every crop DATA may hold until this build is done: the next build removes those it does not make
    atomic_write_text(out / PENDING, "".join(f"{n}\n" for n in sorted(interrupted | earlier | set(made))))
    for source, target in moves:  # renames within one file system: a second or two for tens of thousands of crops
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    columns = ["crop", "split", "label", "source", "source_file", "artificial", "mask_style", "wear", "face_width", "det_score", "seed", "group"]
    with open(out / "metadata.csv.tmp", "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows)
    (out / "metadata.csv.tmp").replace(out / "metadata.csv")
    for crop in (earlier | interrupted) - {r["crop"] for r in rows}:  # crops this build did not make: train reads folders
        _unlink_inside(out, crop)
    _remove_empty_folders(out)
    counts = Counter((r["split"], r["label"]) for r in rows)
    summary = {
        "inputs": len(tasks),
        "crops": len(rows),
        "by_split": {s: {lab: counts[(s, lab)] for lab in ("masked", "unmasked", "incorrect")} for s in ("train", "val", "test")},
        "artificial": dict(Counter(f"{r['mask_style']}/{r['wear']}" for r in rows if r["artificial"])),
        "mask_share": mask_share,
        "incorrect_share": incorrect_share,
        "skipped": dict(failures),
        # files of at most 256 px with no face found are taken whole, as tight crops (det_score 0)
        "whole_frame": sum(1 for r in rows if r["det_score"] == 0),
        "near_duplicates": near,
        "seed": seed,
        "crop_size": CROP_SIZE,
        "crop_margin": CROP_MARGIN,
        "sources": [{"folder": str(s.folder), "label": s.label} for s in sources],
    }
    atomic_write_json(out / "summary.json", summary)
    (out / PENDING).unlink()  # last: until here a killed build is cleaned up by the next one
    _clear_staging(staging)
    return summary


def _run_workers(config, tasks, meta, workers, engine, scheduler, rows: list, failures: Counter, seed: int, progress) -> None:
    """Every file through the engine; its crops land in STAGING, their rows in `rows`."""
    with make_engine(config, workers, engine, scheduler) as pool:
        batches = (tasks[i : i + 8] for i in range(0, len(tasks), 8))
        for result in pool.results(batches):
            m = meta[result["image"]]
            crops = result.get("crops") or []
            if result["status"] != "ok":
                failures[result["error"].split(":")[0]] += 1
            elif not crops:
                failures["no face found"] += 1
            for c in crops:
                rows.append({"crop": c["crop"], **m, "face_width": round(c["width"], 1), "det_score": round(c["det_score"], 3), "seed": seed})
            progress("image", {"status": result["status"], "crops": len(crops)})
