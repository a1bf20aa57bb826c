"""A batch run: scan the input, skip what OUTPUT already holds, process the rest, commit rows.

`RunSession` is an open OUTPUT with its engine; `run_batch` (`batchmask run`,
`job run`) and the watcher (`batchmask watch`) drive it. It takes an engine
factory so the same loop drives the local pool or Dask.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import posixpath
import platform
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__
from .detector import FAST, DetectorConfig
from .engine import make_engine
from .images import DEFAULT_MAX_PIXELS
from .models import default_classifier_dir, default_detector_dir, verified_model
from .sinks import MISSING_COPY, UNFINISHED_ERRORS, OutputError, OutputStore, run_records
from .sources import InputFile, scan
from .remote import RemoteOutput, is_url, scan_url
from .remote import join as remote_join
from .storage import UnsafePathError, safe_join
from .worker import ANNOTATED_DIR, WorkerConfig, annotated_name

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_BUSY = 4


@dataclass
class RunOptions:
    workers: int | None = None
    threshold: float | None = None
    labels: int = 3
    model_dir: str | None = None
    annotate: bool = True
    force: bool = False
    timeout: float | None = 120.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    batch_size: int = 4
    archive: str | None = None  # move processed inputs here once their rows are committed
    engine: str = "local"  # or "dask"
    scheduler: str | None = None  # a Dask scheduler address (tcp://host:8786): implies engine="dask"
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    only: frozenset[str] | None = None  # process only these inputs (names relative to INPUT), e.g. the annotated photos


def detector_settings(detector: DetectorConfig) -> dict:
    """Detector settings as run.json holds them (tuples as lists)."""
    return json.loads(json.dumps(asdict(detector)))


def detector_name(settings: dict) -> str:
    """'default', 'fast' or 'custom': which detector preset run.json's settings are."""
    for name, preset in (("default", DetectorConfig()), ("fast", FAST)):
        if settings == detector_settings(preset):
            return name
    return "custom"


@dataclass
class RunSummary:
    run_id: str
    scanned: int = 0
    skipped: int = 0
    processed: int = 0
    ok: int = 0
    errors: int = 0
    faces: int = 0
    masked: int = 0
    incorrect: int = 0
    unmasked: int = 0
    total_errors: int = 0  # error rows among all current inputs, including earlier runs
    archive_errors: int = 0  # processed inputs that could not be moved to --archive (tried again next run)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.total_errors or self.archive_errors else EXIT_OK


@functools.lru_cache(maxsize=1)
def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"batchmask": __version__, "python": platform.python_version()}
    for dist in ("numpy", "opencv-python-headless", "onnxruntime", "pillow"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


TOO_LARGE = "image too large"  # images.ImageError's message for --max-pixels


def _entry(result: dict, inp: InputFile, run_id: str, model_ids: dict) -> dict:
    faces = result.get("faces") or {}
    labels = faces.get("labels", [])
    face_rows = []
    for i, box in enumerate(faces.get("boxes", [])):
        face_rows.append({
            "image": inp.rel, "face": i,
            "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3],
            "det_score": faces["det_scores"][i], "mask_score": faces["mask_scores"][i],
            "incorrect_score": faces.get("incorrect_scores", [None] * len(faces["boxes"]))[i],
            "label": labels[i] if labels else None,
            "landmarks": faces["landmarks"][i],
            "run_id": run_id, "detector": model_ids["detector"], "classifier": model_ids["classifier"],
        })
    row = {
        "image": inp.rel, "status": result["status"], "faces": len(face_rows),
        "masked": labels.count("masked"), "incorrect": labels.count("incorrect"), "unmasked": labels.count("unmasked"),
        "error": result.get("error", ""), "ms": result.get("ms", 0.0),
        "width": result.get("width", 0), "height": result.get("height", 0),
        "taken": result.get("taken", ""), "camera": result.get("camera", ""),
        "mtime": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(inp.mtime_ns / 1e9)) if inp.mtime_ns else "",
        "run_id": run_id,
    }
    return {"row": row, "faces": face_rows, "signature": inp.signature}


def _batched(items: list[InputFile], size: int) -> Iterator[list[tuple[str, str]]]:
    for i in range(0, len(items), size):
        yield [(f.path, f.rel) for f in items[i : i + size]]


def archive_file(src: str, archive_root: Path, rel: str) -> Path:
    """Move a processed input to ARCHIVE/rel (a free name if taken), across filesystems if needed."""
    target = safe_join(archive_root, rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    stem, suffix, n = target.stem, target.suffix, 1
    while os.path.lexists(target):  # a link already archived there counts, even one whose target is gone
        target = target.with_name(f"{stem} ({n}){suffix}")
        n += 1
    shutil.move(src, target)
    return target


class RunSession:
    """One open OUTPUT and its engine: what `run`, `watch` and `job run` share.

    `process` takes InputFiles (already known not to be current), runs them on
    the engine and commits their rows; with `options.archive`, inputs are moved
    away once their rows are durable. Closing writes run.json.
    """

    def __init__(self, input_dir, output_dir, options: RunOptions | None = None, progress=None, engine_factory=None):
        self.options = options or RunOptions()
        self.progress = progress or (lambda event, data: None)
        self.watching = False  # a watch stops with exit 0 whatever rows are errors; run.json says so
        self.engine_factory = engine_factory or (lambda cfg, workers: make_engine(cfg, workers, self.options.engine, self.options.scheduler))
        # INPUT and OUTPUT may be fsspec URLs: OUTPUT is then staged locally (remote.RemoteOutput)
        self.input_dir = str(input_dir) if is_url(input_dir) else Path(input_dir).resolve()
        self.remote = RemoteOutput(str(output_dir)) if is_url(output_dir) else None
        self.output_location = str(output_dir) if self.remote else Path(output_dir).resolve()
        self.output_dir = self.remote.local if self.remote else self.output_location
        if str(self.input_dir).rstrip("/") == str(self.output_location).rstrip("/"):
            raise ValueError("OUTPUT must be a different folder from INPUT")
        if self.options.archive and is_url(self.input_dir):
            raise ValueError("--archive needs a local (or mounted) INPUT folder")
        self.archive_dir = Path(self.options.archive).resolve() if self.options.archive else None
        self.started = time.time()
        self._t0 = time.perf_counter()
        self.run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.summary = RunSummary(self.run_id)
        detector_path, self.detector_meta = verified_model(default_detector_dir())
        self.classifier_dir = Path(self.options.model_dir) if self.options.model_dir else default_classifier_dir()
        _, self.classifier_meta = verified_model(self.classifier_dir)
        self.model_ids = {"detector": self.detector_meta["sha256"][:12], "classifier": self.classifier_meta["sha256"][:12]}
        self.config = WorkerConfig(
            detector_path=str(detector_path),
            classifier_dir=str(self.classifier_dir),
            detector=self.options.detector,
            threshold=self.options.threshold,
            labels=self.options.labels,
            annotate_root=(remote_join(str(output_dir), ANNOTATED_DIR) if self.remote else str(self.output_dir / ANNOTATED_DIR)) if self.options.annotate else None,
            timeout=self.options.timeout,
            max_pixels=self.options.max_pixels,
        )
        self.engine = None
        self.store: OutputStore | None = None
        self._inputs: dict[str, InputFile] = {}
        self._archive_errors: list[str] = []
        self.worker_counts: dict[str, int] = {}  # photos per worker process (local pid or Dask address)
        self.current: set[str] = set()  # inputs seen by this session: its exit code counts their error rows
        self.done: set[str] = set()  # inputs this session processed (a watch may process one several times)
        self._warned_input = False
        self._warned_archives = False
        self.earlier_archives = self._earlier_archives()
        self._warned_force = False
        self._force_noted = False
        self._force_finished = False
        self._start_recorded = False

    def __enter__(self) -> "RunSession":
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.store = OutputStore(self.output_dir, on_commit=self._committed, before_load=self.remote.pull if self.remote else None).open()
        self.earlier_archives = self._earlier_archives()  # a URL OUTPUT's run records are here only now
        changed = self.changed_settings()
        if changed and self.store.entries and not self.options.force:
            self.progress("warning", {"message": f"OUTPUT's earlier rows were labelled with other settings ({'; '.join(changed)}): "
                                                 "they keep their labels (runs.jsonl says which run used what); `batchmask run --force` relabels every photo"})
        return self

    @property
    def threshold(self) -> float:
        return self.options.threshold if self.options.threshold is not None else self.classifier_meta.get("threshold", 0.5)

    def _last_run(self) -> dict:
        """The run.json of the last run on OUTPUT, or {}."""
        try:
            last = json.loads((self.store.root / "run.json").read_text())
        except (OSError, ValueError):
            return {}
        return last if isinstance(last, dict) else {}

    def changed_settings(self) -> list[str]:
        """How this run's labelling differs from the last run's on OUTPUT (its run.json)."""
        last = self._last_run()
        try:
            clf = last["models"]["classifier"]
            before = (last["config"]["threshold"], last["config"]["labels"], clf["sha256"], (clf.get("crop_margin"), clf.get("crop_levels")))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return []
        meta = self.classifier_meta
        now = (self.threshold, self.options.labels, meta["sha256"], (meta.get("crop_margin"), meta.get("crop_levels")))
        names = ("threshold {} → {}", "labels {} → {}", "classifier {:.12} → {:.12}", "classifier crop (margin, levels) {} → {}")
        changed = [name.format(b, n) for name, b, n in zip(names, before, now) if b != n]
        detector = last["config"].get("detector")
        if isinstance(detector, dict) and detector != detector_settings(self.options.detector):
            changed.append(f"detector {detector_name(detector)} → {detector_name(detector_settings(self.options.detector))}")
        return changed

    def __exit__(self, exc_type, exc, tb) -> None:
        failed = exc_type is not None
        try:
            if self.engine is not None:
                self.engine.close(cancel=failed)
            if not failed:
                self.store.commit()
                self.store.apply_staged()
                if self._force_finished:
                    self.store.write_force(None)
                self._write_run_json()
        except BaseException:
            failed = True
            raise
        finally:
            if failed and (self.summary.processed or self._start_recorded):  # its "running" record gets a final one
                try:
                    self.store.apply_staged()  # the redone rows committed so far replace the old ones now
                    self._write_run_json("interrupted")
                except Exception:
                    pass  # the error that ended the run is the one to report
            try:
                self.store.close()
            except (OSError, OutputError):
                if not failed:
                    raise  # otherwise the error that ended the run is the one to report
        if self.remote:
            self.remote.push(force=True)

    @property
    def excluded(self) -> list[Path]:
        return [p for p in (self.output_dir, self.archive_dir, *self.earlier_archives) if p is not None]

    def _earlier_archives(self) -> list[Path]:
        """Archive folders inside INPUT that earlier runs on this OUTPUT moved photos to: never
        scanned again (their photos have rows already), with or without this run's --archive."""
        if is_url(self.input_dir):
            return []
        found = []
        for record in run_records(_read(self.output_dir / "run.json"), _read(self.output_dir / "runs.jsonl")).values():
            config = record.get("config")
            folder = config.get("archive") if isinstance(config, dict) else None
            if isinstance(folder, str) and folder:
                path = Path(folder)
                if self.input_dir in path.parents and path != self.archive_dir and path not in found:
                    found.append(path)
        return found

    def scan(self) -> list[InputFile]:
        if is_url(self.input_dir):
            inside = str(self.output_location).rstrip("/") + "/"
            inputs = [f for f in scan_url(self.input_dir) if not f.path.startswith(inside)]
        else:
            inputs = list(scan(self.input_dir, exclude=self.excluded))
            there = [str(p.relative_to(self.input_dir)) for p in self.earlier_archives if p.is_dir()]
            if there and not self._warned_archives:
                self._warned_archives = True
                self.progress("warning", {"message": f"not scanned: {', '.join(there)} inside INPUT, where earlier runs on OUTPUT "
                                                     "archived their photos (--archive)"})
        if self.options.only is not None:
            inputs = [f for f in inputs if f.rel in self.options.only]
        self.current.update(f.rel for f in inputs)
        return inputs

    def select(self, inputs: list[InputFile]) -> list[InputFile]:
        """The inputs that need processing (new, changed, --force). Rows of changed photos are dropped
        now; a --force keeps each photo's rows until its new ones replace them (OutputStore staging)."""
        if self.archive_dir is not None:
            names = {f.rel for f in inputs}
            inputs = [self._archive_alias(f, names) for f in inputs]
        last_run = self._last_run()
        if not self.options.force:  # photos rejected as too large under another --max-pixels limit are judged again under this one
            last = (last_run.get("config") or {}).get("max_pixels", self.options.max_pixels)
            too_large = [(f.rel, e) for f in inputs if (e := self.store.entry(f.rel)) and e["row"]["error"].startswith(TOO_LARGE)]
            self.store.forget({rel for rel, e in too_large if e.get("max_pixels", last) != self.options.max_pixels})
        forced = self._forced_runs(inputs)
        redo = [f for f in inputs if self.options.force and self.store.is_current(f.rel, f.signature)
                and self.store.entry(f.rel)["row"].get("run_id") not in forced]
        todo = [f for f in inputs if not self.store.is_current(f.rel, f.signature)]
        last_input = last_run.get("input")
        replaced = sum(f.rel in self.store.entries for f in todo)
        if replaced and last_input and last_input != str(self.input_dir) and not self._warned_input:
            self._warned_input = True
            self.progress("warning", {"message": f"OUTPUT's last run read {last_input}; {replaced} photo(s) of {self.input_dir} have the "
                                                 "names of photos already in OUTPUT and replace their rows (one OUTPUT per INPUT keeps both)"})
        self.store.forget({f.rel for f in todo})  # stale rows go now; `redo`'s stay until their new rows replace them
        if self.archive_dir is not None:  # done earlier, but still in INPUT: a move that failed, or --archive new
            waiting = {f.rel for f in todo + redo}  # a --force redoes photos still in INPUT: they leave after
            for f in inputs:
                if f.rel not in waiting and (entry := self.store.entry(f.rel)) is not None:
                    self._archive(f, entry["row"])
        return sorted(todo + redo, key=lambda f: f.rel) if redo else todo

    def _forced_runs(self, inputs: list[InputFile]) -> set[str]:
        """With --force, the runs whose rows count as redone: this one, and those of an interrupted
        --force with the same settings, which this run finishes. Without it: none (nothing is
        redone that is current), and an interrupted --force is pointed out."""
        record = self.store.read_force()
        settings = self.labelling()
        if not self.options.force:
            if record is not None and not self._warned_force:
                self._warned_force = True
                left = sum(1 for f in inputs if (e := self.store.entry(f.rel)) and e["row"].get("run_id") not in record["runs"])
                if left:
                    self.progress("warning", {"message": f"a --force run on OUTPUT was stopped before it was done: {left} photo(s) keep "
                                                         "rows from before it; the same command with --force finishes it"})
            return set()
        if record is not None and record.get("settings") == settings:
            runs = [*record["runs"], self.run_id]
            left = sum(1 for f in inputs if (e := self.store.entry(f.rel)) and e["row"].get("run_id") not in record["runs"])
            self.progress("warning", {"message": f"finishing the --force stopped earlier: {left} photo(s) left to redo"})
        else:
            runs = [self.run_id]
        if not self._force_noted:
            self.store.write_force({"runs": runs, "settings": settings, "started": record.get("started") if record and len(runs) > 1 else self.run_id})
            self._force_noted = True
        return set(runs)

    def labelling(self) -> dict:
        """What decides this run's rows: models, crop, threshold, labels, detector settings."""
        meta = self.classifier_meta
        return {"classifier": meta["sha256"], "crop": [meta.get("crop_margin"), meta.get("crop_levels")], "threshold": self.threshold,
                "labels": self.options.labels, "detector": detector_settings(self.options.detector), "detector_model": self.detector_meta["sha256"]}

    def finish_force(self) -> None:
        """Every photo was redone: the --force is over once their rows are committed and swapped in."""
        self._force_finished = self.options.force

    def _archive_alias(self, f: InputFile, names: set[str]) -> InputFile:
        """With --archive, a file under the name of a photo already moved to the archive is
        another photo (a camera reusing names), not a new version: it gets the next free name,
        `a (1).jpg`, for its rows, annotated copy and place in the archive, so the first
        photo's rows stay."""
        entry = self.store.entry(f.rel)
        if entry is None or entry.get("signature") == f.signature or (f.rel, tuple(entry.get("signature") or ())) not in self.store.archived:
            return f
        stem, suffix = posixpath.splitext(f.rel)
        n = 1
        while True:
            key = f"{stem} ({n}){suffix}"
            other = self.store.entry(key)
            if other is not None and other.get("signature") == f.signature:
                break  # this photo, done in an earlier run under that name
            if other is None and key not in names and not safe_join(self.archive_dir, key).exists():
                names.add(key)
                break
            n += 1
        self.current.discard(f.rel)
        self.current.add(key)
        return dataclasses.replace(f, rel=key)

    def process(self, todo: list[InputFile], batch_size: int | None = None) -> None:
        if todo and not self._start_recorded:
            # the settings go on record before any row of this run is committed, so the rows of a
            # run killed (or watched) before its final record still lead to what made them
            self.store.append_run_record(self._run_record("running"))
            self._start_recorded = True
        for f in todo:
            self._inputs[f.rel] = f
            self.current.add(f.rel)
        for f in todo:
            if f.problem:
                self._record({"image": f.rel, "status": "error", "error": f.problem, "ms": 0.0})
        readable = [f for f in todo if not f.problem]
        if readable:
            if self.engine is None:
                self.engine = self.engine_factory(self.config, self.options.workers)
            for result in self.engine.results(_batched(readable, batch_size or self.options.batch_size)):
                self._record(result)

    def commit(self) -> None:
        self.store.commit()

    def _record(self, result: dict) -> None:
        if result.get("disk_full"):
            self.store.commit()
            raise OutputError(f"{self.output_dir}: no space left on device; rows committed so far are safe, free space and run again to resume")
        inp = self._inputs[result["image"]]
        where = result.get("worker") or (f"pid {result['pid']}" if "pid" in result else None)
        if where:
            self.worker_counts[where] = self.worker_counts.get(where, 0) + 1
        on_dask = bool(result.get("worker"))  # another machine, maybe: does it see INPUT and OUTPUT as we do?
        if on_dask and result["status"] == "ok" and self.options.annotate and not self.remote and not result.get("error"):
            if not (self.output_dir / ANNOTATED_DIR / annotated_name(inp.rel)).is_file():
                result = {**result, "status": "error", "faces": None,
                          "error": f"{MISSING_COPY} by Dask worker {where} (is OUTPUT mounted at the same path there?)"}
        elif on_dask and result.get("error", "").startswith("cannot read"):
            result = {**result, "error": f"{result['error']} (on Dask worker {where}: is INPUT mounted at the same path there?)"}
        entry = _entry(result, inp, self.run_id, self.model_ids)
        if entry["row"]["error"].startswith(TOO_LARGE):
            entry["max_pixels"] = self.options.max_pixels  # judged again under another limit
        self.store.add(entry)
        row = entry["row"]
        if row["status"] == "error" and not self.remote:  # an earlier version's copy would show boxes this row does not have
            try:
                os.unlink(safe_join(self.output_dir / ANNOTATED_DIR, annotated_name(row["image"])))
            except (OSError, UnsafePathError):
                pass
        self.done.add(row["image"])
        s = self.summary
        s.processed += 1
        s.ok += row["status"] == "ok"
        s.errors += row["status"] == "error"
        s.faces += row["faces"]
        s.masked += row["masked"]
        s.incorrect += row["incorrect"]
        s.unmasked += row["unmasked"]
        self.progress("image", row)

    def recount(self) -> None:
        """The summary's counts from each processed photo's last rows: a photo a watch processed
        twice (an error while it was still arriving, then its rows) counts once, as it ended."""
        self.store.commit()
        rows = [e["row"] for rel in self.done if (e := self.store.entry(rel)) is not None]
        s = self.summary
        s.processed, s.ok, s.errors = len(rows), sum(r["status"] == "ok" for r in rows), sum(r["status"] == "error" for r in rows)
        for key in ("faces", "masked", "incorrect", "unmasked"):
            setattr(s, key, sum(r[key] for r in rows))

    def _committed(self, entries: list[dict]) -> None:
        """Rows are durable: upload them (URL OUTPUT), move their inputs to the archive
        (files that may still be arriving stay: read errors, empty or truncated files)."""
        if self.remote:
            self.remote.push(force=self.archive_dir is not None)  # inputs leave only once the store has their rows
        for entry in entries:
            row = entry["row"]
            inp = self._inputs.pop(row["image"], None)  # done with it (a long watch must not keep them all)
            if self.archive_dir is not None and inp is not None:
                self._archive(inp, row)

    def _archive(self, inp: InputFile, row: dict) -> None:
        """Move a processed input whose rows are committed to the archive (not files that may still be arriving)."""
        if inp.problem or row["error"].startswith(UNFINISHED_ERRORS):
            return
        try:
            try:
                changed = os.stat(inp.path).st_mtime_ns != inp.mtime_ns
            except FileNotFoundError:
                if not os.path.islink(inp.path):
                    raise
                changed = False  # a link whose target this run archived first: the link follows it
            if changed:
                return  # changed since it was read: the new version will be processed
            target = archive_file(inp.path, self.archive_dir, inp.rel)
        except (OSError, UnsafePathError) as e:
            self._archive_errors.append(row["image"])
            self.summary.archive_errors += 1
            self.progress("archive_error", {"image": row["image"], "error": str(e)})
            return
        self.progress("archived", {"image": row["image"], "to": str(target)})
        try:
            self.store.note_archived(inp.rel, inp.signature)
        except OSError as e:  # moved all the same; only a later photo reusing the name would replace its rows
            self.progress("archive_error", {"image": row["image"], "error": f"archived, but not noted in OUTPUT: {e}"})

    def _write_run_json(self, status: str = "finished") -> None:
        self.store.write_run_json(self._run_record(status))

    def _run_record(self, status: str) -> dict:
        """This run's record: command, settings, models, counts; `running` before its final one."""
        store, summary, options = self.store, self.summary, self.options
        summary.total_errors = sum(1 for k, e in store.entries.items() if k in self.current and e["row"]["status"] == "error")
        summary.seconds = time.perf_counter() - self._t0
        return {
            "run_id": self.run_id,
            "command": sys.argv,
            "input": str(self.input_dir),
            "output": str(self.output_location),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "finished": None if status == "running" else time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "status": status,
            "config": {
                "workers": getattr(self.engine, "workers", options.workers),
                "engine": "dask" if options.scheduler else options.engine,
                "scheduler": options.scheduler,
                "threshold": self.threshold,
                "labels": options.labels,
                "annotate": options.annotate,
                "archive": str(self.archive_dir) if self.archive_dir else None,
                "force": options.force,
                "batch_size": options.batch_size,
                "timeout": options.timeout,
                "max_pixels": options.max_pixels,
                "detector": asdict(options.detector),
                "model_dir": str(self.classifier_dir),
            },
            "models": {
                "detector": {"name": self.detector_meta.get("name"), "sha256": self.detector_meta["sha256"]},
                "classifier": {"name": self.classifier_meta.get("name"), "sha256": self.classifier_meta["sha256"], "crop_margin": self.classifier_meta.get("crop_margin"),
                               "crop_levels": self.classifier_meta.get("crop_levels")},
            },
            "versions": library_versions(),
            "counts": {
                "this_run": {k: getattr(summary, k) for k in ("scanned", "skipped", "processed", "ok", "errors", "faces", "masked", "incorrect", "unmasked")},
                "cumulative": {
                    "images": len(store.entries),
                    "errors": sum(e["row"]["status"] == "error" for e in store.entries.values()),
                    "faces": sum(e["row"]["faces"] for e in store.entries.values()),
                },
            },
            "photos_per_worker": self.worker_counts,
            "archive_errors": self._archive_errors,
            "timings": {
                "seconds": round(summary.seconds, 3),
                "images_per_second": round(summary.processed / summary.seconds, 2) if summary.seconds else None,
            },
            "exit_code": None if status == "running" else 0 if self.watching else summary.exit_code,
        }


def run_batch(
    input_dir: str | Path,
    output_dir: str | Path,
    options: RunOptions | None = None,
    progress: Callable[[str, dict], None] | None = None,
    engine_factory: Callable[[WorkerConfig, int | None], object] | None = None,
) -> RunSummary:
    """Process every new or changed photo under INPUT into OUTPUT (what `batchmask run` does)."""
    session = RunSession(input_dir, output_dir, options, progress, engine_factory)
    progress = session.progress
    with session:
        inputs = session.scan()
        session.summary.scanned = len(inputs)
        todo = session.select(inputs)
        session.summary.skipped = len(inputs) - len(todo)
        progress("start", {"total": len(todo), "skipped": session.summary.skipped, "scanned": len(inputs)})
        session.process(todo)
        session.finish_force()
    return session.summary
