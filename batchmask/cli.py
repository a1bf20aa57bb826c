"""The `batchmask` command: a thin Typer layer over the library."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .runner import EXIT_BUSY, EXIT_FAILED, EXIT_USAGE, RunOptions

app = typer.Typer(
    help="Find every face in batches of photos and say whether each one wears a mask.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Build classifier datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
err = Console(stderr=True, soft_wrap=True)


def _fail(message: str, code: int = EXIT_FAILED) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} img/s"),
        TextColumn("faces {task.fields[faces]}"),
        TextColumn("[red]rejected {task.fields[rejected]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=quiet,
        transient=False,
    )


def _run_with_progress(input: Path, output: Path, options: RunOptions, quiet: bool):
    """run_batch with a Rich progress bar (images/s, faces, rejected) and CLI error handling."""
    import time

    from .engine import EngineError
    from .models import ModelError
    from .runner import run_batch
    from .sinks import OutputBusyError, OutputError

    with _progress(quiet) as bar:
        task = bar.add_task("photos", total=None, rate="-", faces=0, rejected=0)
        state = {"faces": 0, "rejected": 0, "done": 0}
        t0 = time.perf_counter()

        def on_event(event: str, data: dict) -> None:
            if event == "start":
                bar.update(task, total=data["total"])
                if data["skipped"] and not quiet:
                    err.print(f"{data['scanned']} photos found, {data['skipped']} already in {output} (unchanged), {data['total']} to process")
            elif event == "image":
                state["done"] += 1
                state["faces"] += data["faces"]
                state["rejected"] += data["status"] == "error"
                rate = state["done"] / max(1e-9, time.perf_counter() - t0)
                bar.update(task, advance=1, rate=f"{rate:.1f}", faces=state["faces"], rejected=state["rejected"])

        try:
            return run_batch(input, output, options, on_event)
        except OutputBusyError as e:
            _fail(str(e), EXIT_BUSY)
        except (ModelError, OutputError, EngineError) as e:
            _fail(str(e))
        except OSError as e:
            _fail(f"{e.filename or output}: {e.strerror or e}")


@app.command()
def run(
    input: Path = typer.Argument(..., help="Folder of photos (scanned recursively)."),
    output: Path = typer.Argument(..., help="Output folder; cumulative across runs."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1, help="Worker processes [default: all cores]."),
    threshold: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="Mask score at or above which a face is 'masked' [default: the model's]."),
    model: Optional[Path] = typer.Option(None, "--model", help="Classifier model directory [default: the shipped model]."),
    no_annotate: bool = typer.Option(False, "--no-annotate", help="Do not write annotated copies."),
    force: bool = typer.Option(False, "--force", help="Redo every photo, replacing its rows."),
    timeout: float = typer.Option(120.0, min=0.0, help="Seconds allowed per photo before it becomes an error row (0: no limit)."),
    max_pixels: int = typer.Option(100_000_000, min=1, help="Reject images whose header claims more pixels (decompression bombs)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar; one summary line."),
) -> None:
    """Detect faces and masks in every photo under INPUT; write tables and annotated copies to OUTPUT."""
    if not input.is_dir():
        _fail(f"input folder not found: {input}", EXIT_USAGE)
    if output.exists() and not output.is_dir():
        _fail(f"output exists and is not a folder: {output}", EXIT_USAGE)
    if model is not None and not model.is_dir():
        _fail(f"model directory not found: {model}", EXIT_USAGE)
    if output.resolve() == input.resolve():
        _fail("OUTPUT must be a different folder from INPUT (it may be inside it)", EXIT_USAGE)
    options = RunOptions(workers=workers, threshold=threshold, model_dir=str(model) if model else None, annotate=not no_annotate, force=force, timeout=timeout or None, max_pixels=max_pixels)

    summary = _run_with_progress(input, output, options, quiet)
    line = (
        f"{summary.processed} processed ({summary.errors} rejected), {summary.skipped} unchanged, "
        f"{summary.faces} faces: {summary.masked} masked, {summary.unmasked} unmasked "
        f"in {summary.seconds:.1f}s -> {output}"
    )
    err.print(line)
    if summary.total_errors:
        err.print(f"[yellow]{summary.total_errors} input(s) could not be processed; see {output / 'images.csv'} (status=error)")
    raise typer.Exit(summary.exit_code)


@app.command()
def train(
    data: Path = typer.Argument(..., help="Crops: DATA/{train,val}/{masked,unmasked}/ or DATA/{masked,unmasked}/."),
    out: Path = typer.Option(..., "--out", help="Model directory to write (model.onnx, model.json, curves)."),
    epochs: int = typer.Option(12, min=1, help="Maximum epochs (early stopping on validation loss)."),
    seed: int = typer.Option(0, help="Random seed."),
    batch_size: int = typer.Option(64, min=1),
) -> None:
    """Train the mask classifier (TensorFlow/Keras) and export it to ONNX for the workers."""
    if not data.is_dir():
        _fail(f"data folder not found: {data}", EXIT_USAGE)
    try:
        from .training import TrainingError, train_classifier
    except ImportError as e:
        _fail(f"training needs the 'train' extra (pip install 'batchmask[train]'): {e}")
    try:
        result = train_classifier(data, out, epochs=epochs, seed=seed, batch_size=batch_size, log=err.print)
    except TrainingError as e:
        _fail(str(e), EXIT_USAGE)
    m = result["metrics"]
    err.print(f"model written to {out}: val accuracy {m['val']['accuracy']:.3f}, threshold {result['threshold']:.2f}")


@app.command()
def evaluate(
    images: Path = typer.Argument(..., help="Folder of annotated photos (names as in the ground truth)."),
    boxes: Path = typer.Option(..., "--boxes", help="Ground truth: CSV (image,x1,y1,x2,y2,label), a PASCAL VOC folder or COCO JSON."),
    out: Path = typer.Option(..., "--out", help="Report folder: report.md, report.html, metrics.json, PNG plots."),
    model: Optional[Path] = typer.Option(None, "--model", help="Classifier model directory [default: the shipped model]."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="Score these predictions (batchmask faces.jsonl or a peer's JSONL) instead of running the pipeline."),
    threshold: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="Mask threshold [default: the model's; 0.5 for --predictions]."),
    min_width: float = typer.Option(16.0, help="Faces narrower than this (px) are left out of the class table and TNR/FNR."),
    title: str = typer.Option("batchmask evaluation", help="Report title."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Run the pipeline on annotated photos (or score given predictions) and write an evaluation report."""
    try:
        from .evaluation.groundtruth import GroundTruthError, load_ground_truth
        from .evaluation.report import PredictionsError, load_predictions, write_report
    except ImportError as e:
        _fail(f"evaluate needs the 'eval' extra (pip install 'batchmask[eval]'): {e}")
    if not images.is_dir():
        _fail(f"images folder not found: {images}", EXIT_USAGE)
    try:
        load_ground_truth(boxes)
    except GroundTruthError as e:
        _fail(f"bad ground truth: {e}", EXIT_USAGE)
    if predictions is not None:
        if not predictions.is_file():
            _fail(f"predictions file not found: {predictions}", EXIT_USAGE)
        try:
            preds = load_predictions(predictions)
        except PredictionsError as e:
            _fail(str(e), EXIT_USAGE)
        source = f"Predictions from {predictions.name}"
        used_threshold = 0.5 if threshold is None else threshold
    else:
        from .classifier import MaskClassifier
        from .models import default_classifier_dir

        model_dir = model or default_classifier_dir()
        options = RunOptions(workers=workers, threshold=threshold, model_dir=str(model_dir), annotate=False)
        summary = _run_with_progress(images, out / "run", options, quiet)
        preds = load_predictions(out / "run" / "faces.jsonl")
        used_threshold = threshold if threshold is not None else MaskClassifier(model_dir).threshold
        source = f"batchmask pipeline, classifier {model_dir.name} (run {summary.run_id})"
    metrics = write_report(boxes, preds, out, used_threshold, title, source, min_width)
    err.print(
        f"TNR {metrics['tnr']:.3f}  FNR {metrics['fnr']:.3f}  recall>={min_width:g}px {metrics['recall']:.3f}  "
        f"AP50 {metrics['ap50']:.3f}  false det/img {metrics['false_detections_per_image']:.2f} -> {out / 'report.html'}"
    )


@data_app.command("build")
def data_build(
    unmasked: list[Path] = typer.Option(..., "--unmasked", help="Folder of unmasked faces or photos (repeatable)."),
    masked: list[Path] = typer.Option(..., "--masked", help="Folder of masked faces or photos (repeatable)."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to write."),
    limit: int = typer.Option(0, min=0, help="Use at most N files per input folder (0: all)."),
    seed: int = typer.Option(0, help="Seed for sampling, splits and masks."),
    mask_share: float = typer.Option(0.5, min=0.0, max=1.0, help="Share of unmasked faces given an artificial mask."),
    incorrect_share: float = typer.Option(0.15, min=0.0, max=1.0, help="Share of artificial masks worn incorrectly (nose exposed, chin only)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Crop faces from raw photos (artificially masking a share of the unmasked ones) into train/val/test sets."""
    from .datasets.build import BuildSource, build_dataset

    for folder in [*unmasked, *masked]:
        if not folder.is_dir():
            _fail(f"folder not found: {folder}", EXIT_USAGE)
    sources = [BuildSource(f, "unmasked") for f in unmasked] + [BuildSource(f, "masked") for f in masked]
    with _progress(quiet) as bar:
        task = bar.add_task("crops", total=None, rate="-", faces=0, rejected=0)
        state = {"crops": 0, "bad": 0}

        def on_event(event: str, d: dict) -> None:
            if event == "start":
                bar.update(task, total=d["total"])
            else:
                state["crops"] += d["crops"]
                state["bad"] += d["crops"] == 0
                bar.update(task, advance=1, faces=state["crops"], rejected=state["bad"])

        summary = build_dataset(sources, out, limit=limit, seed=seed, mask_share=mask_share, incorrect_share=incorrect_share, workers=workers, progress=on_event)
    err.print(f"{summary['crops']} crops from {summary['inputs']} files -> {out} {summary['by_split']}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
