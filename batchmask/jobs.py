"""Job files: batches described in TOML for cron and systemd timers, run under a lock.

A job is a list of steps. The short form is a `run` at the top level with an
optional `[report]` table; the long form is `[[step]]` tables, each naming
what it does with `do = "run" | "report" | "data-build" | "train" | "ensemble" | "calibrate" | "evaluate"`.
Relative paths are relative to the job file's folder, so a job runs the same
from cron (whose working directory is $HOME) as from a shell.

Steps run in order; a step that fails stops the job (a `run` that only
rejected some photos does not). The lock is an OS file lock (filelock), held
for the whole job and released by the kernel when the process dies, so a
killed job never blocks the next start.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout


class JobError(Exception):
    """A job file that cannot be run as written."""


class JobBusyError(Exception):
    """The same job is already running."""


# key -> (type, required); "path" and "paths" are resolved against the job file's folder
STEP_KEYS: dict[str, dict[str, tuple[str, bool]]] = {
    "run": {
        "input": ("path", True), "output": ("path", True), "workers": ("int", False), "threshold": ("float", False),
        "labels": ("int", False), "model": ("path", False), "annotate": ("bool", False), "archive": ("path", False),
        "force": ("bool", False), "timeout": ("float", False), "max_pixels": ("int", False),
        "engine": ("str", False), "scheduler": ("str", False), "fast": ("bool", False),
    },
    "report": {
        "outputs": ("paths", False), "out": ("path", True), "by": ("str", False), "since": ("date", False),
        "until": ("date", False), "last_days": ("int", False), "thumbnails": ("int", False),
    },
    "data-build": {
        "unmasked": ("paths", True), "masked": ("paths", True), "out": ("path", True), "limit": ("int", False),
        "seed": ("int", False), "mask_share": ("float", False), "incorrect_share": ("float", False), "workers": ("int", False),
        "engine": ("str", False), "scheduler": ("str", False),
    },
    "train": {
        "data": ("path", True), "out": ("path", True), "epochs": ("int", False), "seed": ("int", False), "batch_size": ("int", False),
        "backbone": ("path", False), "scratch": ("bool", False),
    },
    "ensemble": {"models": ("paths", True), "out": ("path", True)},
    "calibrate": {"model": ("path", True), "images": ("path", True), "boxes": ("path", True), "tuning": ("int", False), "max_fnr": ("float", False), "min_tnr": ("float", False)},
    "evaluate": {
        "images": ("path", True), "boxes": ("path", True), "out": ("path", True), "model": ("path", False),
        "threshold": ("float", False), "min_width": ("float", False), "title": ("str", False), "exclude_first": ("int", False), "workers": ("int", False),
        "engine": ("str", False), "scheduler": ("str", False), "fast": ("bool", False),
    },
}
JOB_KEYS = {"name": "str", "lock": "path"}
_MINIMUM = {"workers": 1, "timeout": 0, "max_pixels": 1, "last_days": 1, "thumbnails": 0, "epochs": 1, "batch_size": 1, "tuning": 1, "limit": 0, "min_width": 0, "exclude_first": 0}


_HEADER = re.compile(r"\s*(\[\[|\[)\s*([A-Za-z0-9_-]+)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""\s*(?:"([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*=""")


def _odd_triple_quotes(text: str) -> bool:
    return text.count('"""') % 2 == 1 or text.count("'''") % 2 == 1


class _Lines:
    """Where each table and key of a job file is written, for messages (tomllib keeps no positions).

    Tables are "top" (the run keys), "job", "report" and ("step", i). A line scan, not a parser:
    lines inside multi-line strings and arrays are skipped, and a key it cannot place gets its
    table's header line (or no line)."""

    def __init__(self, text: str):
        self.tables: dict = {"top": (0, {})}
        current, steps, in_string, open_brackets = self.tables["top"], 0, False, 0
        for n, line in enumerate(text.splitlines(), start=1):
            if in_string:
                in_string = not _odd_triple_quotes(line)
                continue
            if open_brackets:
                open_brackets = max(0, open_brackets + line.count("[") - line.count("]"))
                continue
            header = _HEADER.match(line)
            if header:
                name = header.group(2)
                if header.group(1) == "[[" and name == "step":
                    steps += 1
                    current = self.tables.setdefault(("step", steps), (n, {}))
                elif name in ("job", "report"):
                    current = self.tables.setdefault(name, (n, {}))
                else:  # an unknown table, which the loader reads as an unknown run key
                    self.tables["top"][1].setdefault(name, n)
                    current = (n, {})
                continue
            assignment = _KEY.match(line)
            if assignment:
                current[1].setdefault(next(g for g in assignment.groups() if g is not None), n)
                value = line[assignment.end():]
                in_string = _odd_triple_quotes(value)
                open_brackets = 0 if in_string else max(0, value.count("[") - value.count("]"))

    def at(self, file: str, table, label: str, key: str | None = None) -> str:
        """`job.toml:12 [[step]] 2 (train)`: the key's line, else the table's header line."""
        header, keys = self.tables.get(table, (0, {}))
        line = keys.get(key, header) if key is not None else header
        return f"{file}:{line} {label}".rstrip() if line else f"{file} {label}".rstrip()


@dataclass
class Step:
    do: str
    args: dict
    where: str  # for messages: "[[step]] 2 (train)" or "[report]"


@dataclass
class Job:
    path: Path
    name: str
    lock: Path
    steps: list[Step] = field(default_factory=list)


def _convert(value, kind: str, where: str, key: str, base: Path):
    def bad(expected: str):
        return JobError(f"{where}: {key} must be {expected}, not {value!r}")

    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if kind == "date":
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        raise bad("a date (2026-11-30)")
    if kind == "path":
        if not isinstance(value, str) or not value:
            raise bad("a path string")
        if "://" in value:  # an fsspec URL (s3://bucket/photos), kept as written; file:// is a local folder
            from .remote import local_path

            local = local_path(value)
            return value if local is None else local.resolve()
        return (base / os.path.expanduser(value)).resolve()
    if kind == "paths":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
            raise bad("a path or a list of paths")
        return [_convert(v, "path", where, key, base) for v in items]
    raise AssertionError(kind)


def _step(do: str, table: dict, base: Path, lines: _Lines, file: str, tkey, label: str) -> Step:
    def at(key: str | None = None) -> str:
        return lines.at(file, tkey, label, key)

    allowed = STEP_KEYS[do]
    for key in table:
        if key not in allowed:
            hint = ("; keys written after a [table] header belong to that table: put the run's keys above it"
                    if do == "report" and key in STEP_KEYS["run"] else "")
            raise JobError(f"{at(key)}: unknown key {key!r} (the {do} step takes: {', '.join(allowed)}){hint}")
    args = {}
    for key, (kind, required) in allowed.items():
        if key in table:
            args[key] = _convert(table[key], kind, at(key), key, base)
        elif required:
            raise JobError(f"{at()}: missing key {key!r}")
    for key, low in _MINIMUM.items():
        if key in args and args[key] < low:
            raise JobError(f"{at(key)}: {key} must be at least {low}, not {args[key]}")
    if do == "run" and args.get("labels", 3) not in (2, 3):
        raise JobError(f"{at('labels')}: labels must be 2 or 3, not {args['labels']}")
    if do == "run" and not 0 <= args.get("threshold", 0.5) <= 1:
        raise JobError(f"{at('threshold')}: threshold must be between 0 and 1, not {args['threshold']}")
    from .engine import scheduler_address_problem

    if "scheduler" in args and scheduler_address_problem(args["scheduler"]):
        raise JobError(f"{at('scheduler')}: scheduler: {scheduler_address_problem(args['scheduler'])}")
    if args.get("engine", "local") not in ("local", "dask"):
        raise JobError(f"{at('engine')}: engine must be local or dask, not {args['engine']!r}")
    if do == "report" and args.get("by", "day") not in ("day", "folder", "camera"):
        raise JobError(f"{at('by')}: by must be day, folder or camera, not {args['by']!r}")
    if do == "report" and "last_days" in args and ("since" in args or "until" in args):
        raise JobError(f"{at('last_days')}: last_days and since / until choose the same period: give one or the other")
    if do == "report" and "since" in args and "until" in args and args["since"] > args["until"]:
        raise JobError(f"{at('until')}: since ({args['since']}) is after until ({args['until']})")
    return Step(do, args, f"{file} {label}")


def default_lock_path(job_path: Path) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha1(str(job_path).encode()).hexdigest()[:12]
    return cache / "batchmask" / "locks" / f"{job_path.stem}-{digest}.lock"


def load_job(path: str | os.PathLike) -> Job:
    """The job file validated whole; a JobError names the file, line and key at fault."""
    path = Path(path).resolve()
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise JobError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise JobError(f"{path}: not a UTF-8 text file") from None
    base, file, lines = path.parent, path.name, _Lines(text)
    job_table = data.pop("job", {})
    if not isinstance(job_table, dict):
        raise JobError(f"{lines.at(file, 'top', '', 'job')}: [job] must be a table")
    for key in job_table:
        if key not in JOB_KEYS:
            hint = "; keys written after a [table] header belong to that table: put the run's keys above [job]" if key in STEP_KEYS["run"] else ""
            raise JobError(f"{lines.at(file, 'job', '[job]', key)}: unknown key {key!r} (expected: {', '.join(JOB_KEYS)}){hint}")
    name = _convert(job_table.get("name", path.stem), "str", lines.at(file, "job", "[job]", "name"), "name", base)
    lock = (_convert(job_table["lock"], "path", lines.at(file, "job", "[job]", "lock"), "lock", base) if "lock" in job_table
            else default_lock_path(path))
    job = Job(path, name, lock)
    if "step" in data:
        steps = data.pop("step")
        if data:
            raise JobError(f"{lines.at(file, 'top', '', next(iter(data)))}: with [[step]] tables, nothing else belongs at the top level "
                           f"(found {', '.join(map(repr, data))})")
        if not isinstance(steps, list):
            raise JobError(f"{lines.at(file, 'top', '', 'step')}: step must be an array of tables ([[step]])")
        for i, table in enumerate(steps, start=1):
            if not isinstance(table, dict):
                raise JobError(f"{lines.at(file, 'top', '', 'step')}: step {i} must be a table ([[step]] with do = ...), not {table!r}")
            do = table.pop("do", None)
            if not isinstance(do, str) or do not in STEP_KEYS:
                raise JobError(f"{lines.at(file, ('step', i), f'[[step]] {i}', 'do')}: do must be one of {', '.join(STEP_KEYS)}, not {do!r}")
            job.steps.append(_step(do, table, base, lines, file, ("step", i), f"[[step]] {i} ({do})"))
    else:
        report = data.pop("report", None)
        if data:
            job.steps.append(_step("run", data, base, lines, file, "top", "(run keys)"))
        if report is not None:
            if not isinstance(report, dict):
                raise JobError(f"{lines.at(file, 'top', '', 'report')}: report must be a table ([report])")
            step = _step("report", report, base, lines, file, "report", "[report]")
            if "outputs" not in step.args:
                if not job.steps:
                    raise JobError(f"{lines.at(file, 'report', '[report]')}: outputs is required when the job has no run")
                step.args["outputs"] = [job.steps[0].args["output"]]
            job.steps.append(step)
    if not job.steps:
        raise JobError(f"{file}: nothing to do (give run keys such as input and output, or [[step]] tables)")
    for i, step in enumerate(job.steps, start=1):
        if step.do == "report" and "outputs" not in step.args:
            raise JobError(f"{lines.at(file, ('step', i), f'[[step]] {i} (report)')}: missing key 'outputs'")
    return job


class JobLock:
    """An exclusive OS lock for one job, with a note of who holds it since when."""

    def __init__(self, path: Path):
        self.path = path
        self.info = path.with_name(path.name + ".info")
        self._lock = FileLock(str(path))

    def __enter__(self) -> "JobLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            try:
                holder = self.info.read_text().strip()
            except OSError:
                holder = "holder unknown"
            raise JobBusyError(f"a run of this job is already in progress ({holder}; lock {self.path})") from None
        self.info.write_text(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        return self

    def __exit__(self, *exc) -> None:
        self.info.unlink(missing_ok=True)
        self._lock.release()
