"""A batch run: scan the input, skip what OUTPUT already holds, process the rest, commit rows.

`run_batch` is what `batchmask run` (and later `watch` and `job run`) call; it
takes an engine factory so the same loop drives the local pool or Dask.
"""

from __future__ import annotations

import platform
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__
from .detector import DetectorConfig
from .engine import LocalEngine
from .images import DEFAULT_MAX_PIXELS
from .models import default_classifier_dir, default_detector_dir, verified_model
from .sinks import OutputError, OutputStore
from .sources import InputFile, scan
from .worker import ANNOTATED_DIR, WorkerConfig

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_BUSY = 4


@dataclass
class RunOptions:
    workers: int | None = None
    threshold: float | None = None
    model_dir: str | None = None
    annotate: bool = True
    force: bool = False
    timeout: float | None = 120.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    batch_size: int = 4
    detector: DetectorConfig = field(default_factory=DetectorConfig)


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
    unmasked: int = 0
    total_errors: int = 0  # error rows among all current inputs, including earlier runs
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.total_errors else EXIT_OK


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"batchmask": __version__, "python": platform.python_version()}
    for dist in ("numpy", "opencv-python-headless", "onnxruntime", "pillow"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def _entry(result: dict, inp: InputFile, run_id: str, model_ids: dict) -> dict:
    faces = result.get("faces") or {}
    labels = faces.get("labels", [])
    face_rows = []
    for i, box in enumerate(faces.get("boxes", [])):
        face_rows.append({
            "image": inp.rel, "face": i,
            "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3],
            "det_score": faces["det_scores"][i], "mask_score": faces["mask_scores"][i],
            "label": labels[i] if labels else None,
            "landmarks": faces["landmarks"][i],
            "run_id": run_id, "detector": model_ids["detector"], "classifier": model_ids["classifier"],
        })
    row = {
        "image": inp.rel, "status": result["status"], "faces": len(face_rows),
        "masked": labels.count("masked"), "unmasked": labels.count("unmasked"),
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


def run_batch(
    input_dir: str | Path,
    output_dir: str | Path,
    options: RunOptions | None = None,
    progress: Callable[[str, dict], None] | None = None,
    engine_factory: Callable[[WorkerConfig, int | None], object] | None = None,
) -> RunSummary:
    options = options or RunOptions()
    progress = progress or (lambda event, data: None)
    input_dir, output_dir = Path(input_dir).resolve(), Path(output_dir).resolve()
    started = time.time()
    t0 = time.perf_counter()
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    summary = RunSummary(run_id)

    detector_path, detector_meta = verified_model(default_detector_dir())
    classifier_dir = Path(options.model_dir) if options.model_dir else default_classifier_dir()
    _, classifier_meta = verified_model(classifier_dir)
    model_ids = {"detector": detector_meta["sha256"][:12], "classifier": classifier_meta["sha256"][:12]}
    config = WorkerConfig(
        detector_path=str(detector_path),
        classifier_dir=str(classifier_dir),
        detector=options.detector,
        threshold=options.threshold,
        annotate_root=str(output_dir / ANNOTATED_DIR) if options.annotate else None,
        timeout=options.timeout,
        max_pixels=options.max_pixels,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    with OutputStore(output_dir) as store:
        if input_dir == output_dir:
            raise ValueError("OUTPUT must be a different folder from INPUT")
        inputs = list(scan(input_dir, exclude=[output_dir]))
        summary.scanned = len(inputs)
        if options.force:
            store.forget({f.rel for f in inputs})
        todo = [f for f in inputs if not store.is_current(f.rel, f.signature)]
        store.forget({f.rel for f in todo})
        summary.skipped = len(inputs) - len(todo)
        by_rel = {f.rel: f for f in todo}
        progress("start", {"total": len(todo), "skipped": summary.skipped, "scanned": len(inputs)})

        def record(result: dict) -> None:
            if result.get("disk_full"):
                store.commit()
                raise OutputError(f"{output_dir}: no space left on device; rows committed so far are safe, free space and run again to resume")
            inp = by_rel[result["image"]]
            entry = _entry(result, inp, run_id, model_ids)
            store.add(entry)
            row = entry["row"]
            summary.processed += 1
            summary.ok += row["status"] == "ok"
            summary.errors += row["status"] == "error"
            summary.faces += row["faces"]
            summary.masked += row["masked"]
            summary.unmasked += row["unmasked"]
            progress("image", row)

        for f in todo:
            if f.problem:
                record({"image": f.rel, "status": "error", "error": f.problem, "ms": 0.0})
        readable = [f for f in todo if not f.problem]
        if readable:
            factory = engine_factory or (lambda cfg, workers: LocalEngine(cfg, workers))
            engine = factory(config, options.workers)
            try:
                for result in engine.results(_batched(readable, options.batch_size)):
                    record(result)
            finally:
                engine.close()
        store.commit()
        current = {f.rel for f in inputs}
        summary.total_errors = sum(
            1 for k, e in store.entries.items() if k in current and e["row"]["status"] == "error"
        )
        summary.seconds = time.perf_counter() - t0
        store.write_run_json({
            "run_id": run_id,
            "command": sys.argv,
            "input": str(input_dir),
            "output": str(output_dir),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": {
                "workers": getattr(engine, "workers", options.workers) if readable else options.workers,
                "threshold": options.threshold if options.threshold is not None else classifier_meta.get("threshold", 0.5),
                "annotate": options.annotate,
                "force": options.force,
                "batch_size": options.batch_size,
                "timeout": options.timeout,
                "max_pixels": options.max_pixels,
                "detector": asdict(options.detector),
                "model_dir": str(classifier_dir),
            },
            "models": {
                "detector": {"name": detector_meta.get("name"), "sha256": detector_meta["sha256"]},
                "classifier": {"name": classifier_meta.get("name"), "sha256": classifier_meta["sha256"]},
            },
            "versions": library_versions(),
            "counts": {
                "this_run": {k: getattr(summary, k) for k in ("scanned", "skipped", "processed", "ok", "errors", "faces", "masked", "unmasked")},
                "cumulative": {
                    "images": len(store.entries),
                    "errors": sum(e["row"]["status"] == "error" for e in store.entries.values()),
                    "faces": sum(e["row"]["faces"] for e in store.entries.values()),
                },
            },
            "timings": {
                "seconds": round(summary.seconds, 3),
                "images_per_second": round(summary.processed / summary.seconds, 2) if summary.seconds else None,
            },
            "exit_code": summary.exit_code,
        })
    return summary
