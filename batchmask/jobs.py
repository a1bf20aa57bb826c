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
import math
import os
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
    "calibrate": {"model": ("path", True), "images": ("path", True), "boxes": ("path", True), "tuning": ("int", False), "max_fnr": ("float", False), "min_tnr": ("float", False),
                  "near_duplicates": ("path", False)},
    "evaluate": {
        "images": ("path", True), "boxes": ("path", True), "out": ("path", True), "model": ("path", False),
        "threshold": ("float", False), "min_width": ("float", False), "title": ("str", False), "exclude_first": ("int", False), "workers": ("int", False),
        "near_duplicates": ("path", False), "engine": ("str", False), "scheduler": ("str", False), "fast": ("bool", False),
    },
}
JOB_KEYS = {"name": "str", "lock": "path"}
_MINIMUM = {"workers": 1, "timeout": 0, "max_pixels": 1, "last_days": 1, "thumbnails": 0, "epochs": 1, "batch_size": 1, "tuning": 1, "limit": 0, "min_width": 0, "exclude_first": 0}


def _paths(value, path: tuple = ()):
    """Every table, array-of-tables element and key of parsed TOML, as paths: ("step", 0, "do")."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, item in enumerate(value):
            yield from _paths(item, (*path, i))


MAX_LOCATED_LINES = 1000  # a longer job file's messages name the file only (0.15 s at 200 lines, ~2 s at 1,000)


class _Lines:
    """The line where each key and table of a job file is written, for messages (tomllib keeps no
    positions). Found with tomllib itself: the file's prefixes that parse end between statements,
    and a path first seen in one was written on the first line of that statement. Worked out on
    the first question only: a valid job file never pays for it."""

    def __init__(self, text: str):
        self.text = text
        self._first: dict | None = None

    def _lines(self) -> dict:
        if self._first is None:
            self._first = {}
            lines = self.text.split("\n")  # TOML ends lines at \n (or \r\n) only
            if len(lines) > MAX_LOCATED_LINES:  # each prefix is parsed: the cost grows with the square
                return self._first
            start = 1  # the first line of the statement being read
            for n in range(1, len(lines) + 1):
                try:
                    parsed = tomllib.loads("\n".join(lines[:n]))
                except tomllib.TOMLDecodeError:
                    continue
                for path in _paths(parsed):
                    self._first.setdefault(path, start)
                start = n + 1
                while start <= len(lines) and (not lines[start - 1].strip() or lines[start - 1].lstrip().startswith("#")):
                    start += 1
        return self._first

    def at(self, file: str, table: tuple, label: str = "", key: str | None = None) -> str:
        """`job.toml:12 [[step]] 2 (train)`: the key's line, else the table's, else the first run key's."""
        first = self._lines()
        line = first.get((*table, key)) if key is not None else None
        if not line and table:
            line = first.get(table)
        if not line and not table:  # the run keys have no header: point at the first of them
            line = min((n for path, n in first.items() if len(path) == 1 and path[0] not in ("job", "report", "step")), default=None)
        where = f"{file}:{line}" if line else file
        return f"{where} {label}".rstrip()


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


def _convert(value, kind: str, where, key: str, base: Path):
    """`value` as `kind`; `where` names it in messages (a callable, asked only for a message)."""
    def bad(expected: str):
        return JobError(f"{where() if callable(where) else where}: {key} must be {expected}, not {value!r}")

    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
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
        if not isinstance(value, str) or not value or "\0" in value:
            raise bad("a path string")
        try:
            if "://" in value:  # an fsspec URL (s3://bucket/photos), kept as written; file:// is a local folder
                from .remote import local_path

                local = local_path(value)
                return value if local is None else local.resolve()
            return (base / os.path.expanduser(value)).resolve()
        except ValueError:  # a NUL byte decoded from a file:// URL, a malformed host
            raise bad("a path string or URL") from None
    if kind == "paths":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
            raise bad("a path or a list of paths")
        return [_convert(v, "path", where, key, base) for v in items]
    raise AssertionError(kind)


def _step(do: str, table: dict, base: Path, lines: _Lines, file: str, tkey: tuple, label: str) -> Step:
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
            args[key] = _convert(table[key], kind, lambda key=key: at(key), key, base)
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
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark, as Windows editors write, is not TOML
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise JobError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise JobError(f"{path}: not a UTF-8 text file") from None
    base, file, lines = path.parent, path.name, _Lines(text)
    job_table = data.pop("job", {})
    if not isinstance(job_table, dict):
        raise JobError(f"{lines.at(file, (), '', 'job')}: [job] must be a table")
    for key in job_table:
        if key not in JOB_KEYS:
            hint = "; keys written after a [table] header belong to that table: put the run's keys above [job]" if key in STEP_KEYS["run"] else ""
            raise JobError(f"{lines.at(file, ('job',), '[job]', key)}: unknown key {key!r} (expected: {', '.join(JOB_KEYS)}){hint}")
    name = _convert(job_table.get("name", path.stem), "str", lambda: lines.at(file, ("job",), "[job]", "name"), "name", base)
    lock = (_convert(job_table["lock"], "path", lambda: lines.at(file, ("job",), "[job]", "lock"), "lock", base) if "lock" in job_table
            else default_lock_path(path))
    job = Job(path, name, lock)
    if "step" in data:
        steps = data.pop("step")
        if data:
            raise JobError(f"{lines.at(file, (), '', next(iter(data)))}: with [[step]] tables, nothing else belongs at the top level "
                           f"(found {', '.join(map(repr, data))})")
        if not isinstance(steps, list):
            raise JobError(f"{lines.at(file, (), '', 'step')}: step must be an array of tables ([[step]])")
        for i, table in enumerate(steps, start=1):
            if not isinstance(table, dict):
                raise JobError(f"{lines.at(file, (), '', 'step')}: step {i} must be a table ([[step]] with do = ...), not {table!r}")
            if "do" not in table:
                raise JobError(f"{lines.at(file, ('step', i - 1), f'[[step]] {i}')}: missing key 'do' (one of {', '.join(STEP_KEYS)})")
            do = table.pop("do")
            if not isinstance(do, str) or do not in STEP_KEYS:
                raise JobError(f"{lines.at(file, ('step', i - 1), f'[[step]] {i}', 'do')}: do must be one of {', '.join(STEP_KEYS)}, not {do!r}")
            job.steps.append(_step(do, table, base, lines, file, ("step", i - 1), f"[[step]] {i} ({do})"))
    else:
        report = data.pop("report", None)
        if data:
            job.steps.append(_step("run", data, base, lines, file, (), "(run keys)"))
        if report is not None:
            if not isinstance(report, dict):
                raise JobError(f"{lines.at(file, (), '', 'report')}: report must be a table ([report])")
            step = _step("report", report, base, lines, file, ("report",), "[report]")
            if "outputs" not in step.args:
                if not job.steps:
                    raise JobError(f"{lines.at(file, ('report',), '[report]')}: outputs is required when the job has no run")
                step.args["outputs"] = [job.steps[0].args["output"]]
            job.steps.append(step)
    if not job.steps:
        raise JobError(f"{file}: nothing to do (give run keys such as input and output, or [[step]] tables)")
    from .audit import report_target_problem

    for i, step in enumerate(job.steps, start=1):
        table = ("report",) if step.where.endswith("[report]") else ("step", i - 1)
        if step.do == "report" and "outputs" not in step.args:
            raise JobError(f"{lines.at(file, table, f'[[step]] {i} (report)')}: missing key 'outputs'")
        if step.do == "report" and isinstance(step.args["out"], Path):
            problem = report_target_problem(step.args["outputs"], step.args["out"])
            if problem:
                raise JobError(f"{lines.at(file, table, step.where.removeprefix(file).strip(), 'out')}: out: {problem}")
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
