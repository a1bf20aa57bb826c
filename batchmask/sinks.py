"""The cumulative outputs of a run folder, and the ledger that makes them crash-safe.

OUTPUT/
  faces.csv, faces.jsonl   one row per face
  images.csv               one row per input photo
  run.json                 the last run's config, versions, model hashes, counts, timings
  .batchmask/ledger.jsonl  one line per committed photo: its rows and the byte
                           length of each output file once they were appended

Rows are appended to the three tables, flushed and fsynced, and only then the
ledger lines are appended and fsynced: a photo is committed when its ledger
line is complete. On open, each table is cut back to the length the last
complete ledger line records (dropping rows of a run killed mid-write), or
rebuilt from the ledger if it is shorter; so a kill at any moment loses
nothing committed and duplicates nothing. Replacing the rows of changed photos
rewrites all four files through temporary files and renames, ledger last,
between two steps of `.batchmask/rewrites` (odd meanwhile), so that a reader
can tell when it read across one.

Rows that replace a photo's committed rows while those stay valid (`--force`) are
staged instead: appended to `.batchmask/replacements.jsonl` and fsynced, then
swapped in by one rewrite at the end of the run (or when OUTPUT is next opened,
after a kill). Until then the old rows stay, so stopping such a run loses none.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

from filelock import FileLock, Timeout

from .storage import atomic_write_text, fsync_dir

STATE_DIR = ".batchmask"
REWRITES = f"{STATE_DIR}/rewrites"  # a counter, odd while a rewrite is under way (readers: audit)
FACE_COLUMNS = ["image", "face", "x1", "y1", "x2", "y2", "det_score", "mask_score", "incorrect_score", "label", "run_id", "detector", "classifier"]
IMAGE_COLUMNS = ["image", "status", "faces", "masked", "incorrect", "unmasked", "error", "ms", "width", "height", "taken", "camera", "mtime", "run_id"]
TABLES = ("faces.csv", "faces.jsonl", "images.csv")
# errors that say nothing final about the photo: the next run on the same OUTPUT tries it again
MISSING_COPY = "annotated copy not in OUTPUT after it was written"  # a Dask worker that writes elsewhere
RETRYABLE_ERRORS = ("cannot read", "I/O error", "timed out after", "worker process crashed", MISSING_COPY)
# errors after which --archive leaves the file in INPUT: a copy or upload may still be under way
# (when it finishes, the file's new size and time make it a new version, processed then)
UNFINISHED_ERRORS = RETRYABLE_ERRORS + ("empty file", "corrupt or truncated image")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class OutputBusyError(Exception):
    """Another batchmask process holds this output folder."""


class OutputError(Exception):
    """The output folder cannot be used safely (symbolic links in it, a failed write)."""


def spreadsheet_safe(value):
    """OWASP CSV-injection guard: text that a spreadsheet would run as a formula gets a leading quote;
    so does text that starts with a quote, so that `'=a.jpg` and `=a.jpg` stay two names."""
    if isinstance(value, str) and value.startswith((*_FORMULA_START, "'")):
        return "'" + value
    return value


def spreadsheet_plain(value: str) -> str:
    """The text `spreadsheet_safe` was given (rows written before quotes were guarded read the same)."""
    return value[1:] if value.startswith("'") and value[1:2] in (*_FORMULA_START, "'") else value


def _csv_line(values: list) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([spreadsheet_safe(v) for v in values])
    return buf.getvalue()


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "backslashreplace")


def _head(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def render_rows(entry: dict) -> tuple[bytes, bytes, bytes]:
    """The faces.csv, faces.jsonl and images.csv bytes of one ledger entry."""
    img = entry["row"]
    faces_csv, faces_jsonl = [], []
    for face in entry["faces"]:
        faces_csv.append(_csv_line([face.get(c, "") if face.get(c) is not None else "" for c in FACE_COLUMNS]))
        faces_jsonl.append(json.dumps(face, ensure_ascii=False) + "\n")
    images_csv = _csv_line([img.get(c, "") for c in IMAGE_COLUMNS])
    return _encode("".join(faces_csv)), _encode("".join(faces_jsonl)), _encode(images_csv)


HEADERS = {
    "faces.csv": _encode(_csv_line(FACE_COLUMNS)),
    "faces.jsonl": b"",
    "images.csv": _encode(_csv_line(IMAGE_COLUMNS)),
}


def run_records(run_json: bytes | None, runs_jsonl: bytes | None) -> dict[str, dict]:
    """Each run's record by run_id, from OUTPUT's run.json and runs.jsonl (a run's last line is its
    final record; lines cut short or not batchmask's are skipped)."""
    records: dict[str, dict] = {}
    for line in [run_json or b"", *(runs_jsonl or b"").splitlines()]:
        try:
            record = json.loads(line)
            records[record["run_id"]] = record
        except (ValueError, KeyError, TypeError):
            continue
    return records


def same_version(recorded, signature: list[int]) -> bool:
    """Same size and modification time; times within 1 µs are the same (an fsspec URL gives the
    time as float seconds, a local path as exact nanoseconds: INPUT may be named either way)."""
    return (isinstance(recorded, list) and len(recorded) == 2 and recorded[0] == signature[0]
            and abs(recorded[1] - signature[1]) <= 1000)


class OutputStore:
    def __init__(self, root: str | os.PathLike, on_commit=None, before_load=None):
        self.root = Path(root)
        self.before_load = before_load  # called once the lock is held, before the ledger is read (remote OUTPUT: pull)
        self.on_commit = on_commit  # called with the entries of each commit once they are durable
        self.state = self.root / STATE_DIR
        self.ledger_path = self.state / "ledger.jsonl"
        self.archived_path = self.state / "archived.jsonl"
        self.staged_path = self.state / "replacements.jsonl"
        self.force_path = self.state / "force.json"
        self.entries: dict[str, dict] = {}
        self.staged: dict[str, dict] = {}  # committed rows waiting to replace those in `entries`
        self.archived: set[tuple[str, tuple]] = set()  # (image, signature) of inputs moved to the archive
        self._lock: FileLock | None = None
        self._files: dict[str, io.BufferedWriter] = {}
        self._ledger = None
        self._pending: list[dict] = []
        self._last_commit = time.monotonic()
        self._failed = False

    # -- opening, locking, recovery ------------------------------------------------
    def open(self) -> "OutputStore":
        for path in (self.state, self.root / "annotated", self.root / "run.json", self.root / "runs.jsonl", *(self.root / t for t in TABLES)):
            if path.is_symlink():
                raise OutputError(f"{path} is a symbolic link; batchmask only writes real files inside OUTPUT")
        for table in ("faces.csv", "images.csv"):  # never overwrite a user's own file of the same name
            path = self.root / table
            if path.is_file() and path.stat().st_size and not _head(path, 6).startswith(b"image,"):
                raise OutputError(f"{path} is not a batchmask table (its first line is not batchmask's header): "
                                  "OUTPUT must be a new folder or an earlier batchmask OUTPUT")
        self.state.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        if self.before_load is not None:
            self.before_load()
        self._load_ledger()
        self._load_archived()
        self._repair_tables()
        self._settle_rewrites()
        self._load_staged()
        self._open_for_append()
        self.apply_staged()  # left by a run that was killed before it swapped them in
        return self

    def _rewrite_count(self) -> int:
        try:
            return int((self.root / REWRITES).read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _settle_rewrites(self) -> None:
        """A rewrite killed half-way left the counter odd; the files were just repaired from the ledger."""
        count = self._rewrite_count()
        if count % 2:
            atomic_write_text(self.root / REWRITES, f"{count + 1}\n")

    def _acquire_lock(self) -> None:
        info = self.state / "lock.info"
        self._lock = FileLock(str(self.state / "lock"))
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            holder = info.read_text().strip() if info.exists() else "unknown process"
            raise OutputBusyError(f"{self.root} is in use by another batchmask run ({holder})") from None
        info.write_text(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")

    def _load_ledger(self) -> None:
        self.entries = {}
        self._lengths = {t: len(HEADERS[t]) for t in TABLES}
        if not self.ledger_path.exists():
            return
        good = 0
        with open(self.ledger_path, "rb") as f:
            for number, line in enumerate(f, start=1):
                try:
                    if not line.endswith(b"\n"):
                        raise ValueError("cut off")
                    entry = json.loads(line)
                    image, lengths = entry["row"]["image"], entry["lengths"]
                except (ValueError, KeyError, TypeError):
                    if not f.read(1):
                        break  # the last line, cut short by a kill: that photo is redone
                    raise OutputError(f"{self.ledger_path} is damaged at line {number} (only a cut-off last line is repaired): "
                                      "restore it from a backup, or move OUTPUT aside and run again") from None
                self.entries[image] = entry
                self._lengths = lengths
                good += len(line)
        if good != self.ledger_path.stat().st_size:
            os.truncate(self.ledger_path, good)

    def _load_archived(self) -> None:
        self.archived = set()
        try:
            lines = self.archived_path.read_bytes().splitlines()
        except OSError:
            return
        for line in lines:
            try:
                item = json.loads(line)
                self.archived.add((item["image"], tuple(item["signature"])))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill: that photo is just not known as archived

    def _load_staged(self) -> None:
        self.staged = {}
        try:
            lines = self.staged_path.read_bytes().splitlines(keepends=True)
        except OSError:
            return
        for line in lines:
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("cut off")
                entry = json.loads(line)
                self.staged[entry["row"]["image"]] = entry
            except (ValueError, KeyError, TypeError):
                continue  # cut short by a kill: that photo keeps its old rows and is redone

    def apply_staged(self) -> None:
        """Swap the staged rows in for the rows they replace (one rewrite), then drop the stage."""
        if self._failed or not self.staged_path.exists():
            return
        if self.staged:
            self.commit()
            merged = {k: self.staged.get(k, e) for k, e in self.entries.items()}  # staged rows only ever replace rows
            self._replace_all(list(merged.values()))
        self.staged = {}
        self.staged_path.unlink(missing_ok=True)
        fsync_dir(self.state)

    def _stage(self, entries: list[dict]) -> None:
        with open(self.staged_path, "ab") as f:
            f.write(b"".join(json.dumps(e, ensure_ascii=True).encode() + b"\n" for e in entries))
            f.flush()
            os.fsync(f.fileno())
        for e in entries:
            self.staged[e["row"]["image"]] = e

    def entry(self, rel: str) -> dict | None:
        """The photo's committed entry: staged rows first."""
        return self.staged.get(rel) or self.entries.get(rel)

    def read_force(self) -> dict | None:
        """The record of a `--force` under way (or interrupted), or None."""
        try:
            data = json.loads(self.force_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("runs"), list) else None

    def write_force(self, data: dict | None) -> None:
        if data is None:
            self.force_path.unlink(missing_ok=True)
        else:
            atomic_write_text(self.force_path, json.dumps(data, ensure_ascii=False) + "\n")

    def note_archived(self, image: str, signature: list[int]) -> None:
        """Remember that this version of `image` left INPUT for the archive (so a later file
        under the same name is another photo, not a new version of this one)."""
        with open(self.archived_path, "ab") as f:
            f.write(json.dumps({"image": image, "signature": list(signature)}, ensure_ascii=True).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.archived.add((image, tuple(signature)))

    def _repair_tables(self) -> None:
        for table in ("faces.csv", "images.csv"):  # written by an older version: same rows, new columns
            path = self.root / table
            if path.exists() and path.stat().st_size and _head(path, len(HEADERS[table])) != HEADERS[table]:
                self._rewrite(list(self.entries.values()))
                return
        for table in TABLES:
            path = self.root / table
            want = self._lengths[table]
            have = path.stat().st_size if path.exists() else -1
            if have > want:
                os.truncate(path, want)
            elif have < want or have == -1:
                self._rewrite(list(self.entries.values()))
                return

    def _open_for_append(self) -> None:
        for table in TABLES:
            path = self.root / table
            if not path.exists():
                atomic_write_text(path, HEADERS[table].decode())
            self._files[table] = open(path, "ab")
        self._ledger = open(self.ledger_path, "ab")

    def close(self) -> None:
        """Commit what is pending, close the files, release the lock: always all of it, so a
        full disk (buffered rows that cannot be flushed) still frees OUTPUT; then the first error."""
        errors = []
        try:
            if not self._failed:
                self.commit()
                self.apply_staged()
        except (OSError, OutputError) as e:
            errors.append(e)
        for f in [*self._files.values(), *([self._ledger] if self._ledger else [])]:
            try:
                f.close()
            except OSError as e:  # rows beyond the committed lengths are cut off by the next open
                errors.append(e)
        self._files.clear()
        self._ledger = None
        if self._lock is not None:
            (self.state / "lock.info").unlink(missing_ok=True)
            self._lock.release()
            self._lock = None
        if errors:
            raise errors[0]

    def __enter__(self) -> "OutputStore":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what is done --------------------------------------------------------------
    def is_current(self, rel: str, signature: list[int]) -> bool:
        """Already done for this version of the file (read errors, time-outs and crashes are transient: retried)."""
        entry = self.entry(rel)
        if entry is None or not same_version(entry.get("signature"), signature):
            return False
        return not entry["row"]["error"].startswith(RETRYABLE_ERRORS)

    def forget(self, rels: set[str]) -> None:
        """Drop the rows of these photos (changed inputs, --force) before they are redone."""
        rels = rels & (self.entries.keys() | self.staged.keys())
        if not rels:
            return
        self.commit()
        kept = [self.staged.get(k, e) for k, e in self.entries.items() if k not in rels]
        self._replace_all(kept)
        if self.staged:
            self.staged = {}
            self.staged_path.unlink(missing_ok=True)

    def _replace_all(self, entries: list[dict]) -> None:
        for f in self._files.values():
            f.close()
        self._ledger.close()
        self._rewrite(entries)
        self._open_for_append()

    def _rewrite(self, entries: list[dict]) -> None:
        """All four files replaced, between two steps of the rewrite counter (odd meanwhile),
        so that a reader (`batchmask report`) can tell it read across a rewrite."""
        count = self._rewrite_count()
        count += 1 + count % 2  # odd: under way
        atomic_write_text(self.root / REWRITES, f"{count}\n")
        self._rewrite_files(entries)
        atomic_write_text(self.root / REWRITES, f"{count + 1}\n")

    def _rewrite_files(self, entries: list[dict]) -> None:
        chunks = {t: [HEADERS[t]] for t in TABLES}
        lengths = {t: len(HEADERS[t]) for t in TABLES}
        ledger_lines = []
        for entry in entries:
            for table, data in zip(TABLES, render_rows(entry)):
                chunks[table].append(data)
                lengths[table] += len(data)
            entry = dict(entry, lengths=dict(lengths))
            ledger_lines.append(json.dumps(entry, ensure_ascii=True) + "\n")
        for table in TABLES:
            atomic_write_text(self.root / table, b"".join(chunks[table]).decode("utf-8"))
        atomic_write_text(self.ledger_path, "".join(ledger_lines))
        self.entries = {e["row"]["image"]: e for e in (json.loads(x) for x in ledger_lines)}
        self._lengths = lengths

    # -- appending -----------------------------------------------------------------
    def add(self, entry: dict, max_pending: int = 64, max_delay: float = 1.0) -> None:
        """Queue one photo's rows; they are committed in groups (fewer fsyncs)."""
        self._pending.append(entry)
        if len(self._pending) >= max_pending or time.monotonic() - self._last_commit >= max_delay:
            self.commit()

    def commit(self) -> None:
        self._last_commit = time.monotonic()
        if not self._pending or self._failed:
            return
        try:
            self._commit()
        except OSError as e:
            # half-written rows stay beyond the committed lengths; the next open cuts them off
            self._failed = True
            raise OutputError(f"writing to {self.root} failed ({e.strerror or e}); rows committed so far are safe, run again to resume") from None
        except BaseException:
            self._failed = True  # interrupted mid-write (Ctrl-C, SIGTERM): never append the same rows again
            raise

    def _commit(self) -> None:
        replacing = [e for e in self._pending if e["row"]["image"] in self.entries]
        if replacing:
            self._stage(replacing)
        lengths = dict(self._lengths)
        ledger_lines = []
        for entry in (e for e in self._pending if e["row"]["image"] not in self.entries):
            for table, data in zip(TABLES, render_rows(entry)):
                self._files[table].write(data)
                lengths[table] += len(data)
            entry["lengths"] = dict(lengths)
            ledger_lines.append(json.dumps(entry, ensure_ascii=True).encode() + b"\n")
        for f in self._files.values():
            f.flush()
            os.fsync(f.fileno())
        self._ledger.write(b"".join(ledger_lines))
        self._ledger.flush()
        os.fsync(self._ledger.fileno())
        for entry in self._pending:
            if entry["row"]["image"] not in self.staged:
                self.entries[entry["row"]["image"]] = entry
        self._lengths = lengths
        committed, self._pending = self._pending, []
        if self.on_commit is not None:
            self.on_commit(committed)

    def write_run_json(self, data: dict) -> None:
        """run.json (the last run) and its line in runs.jsonl (every run: what settings made which rows)."""
        atomic_write_text(self.root / "run.json", json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        self.append_run_record(data)

    def append_run_record(self, data: dict) -> None:
        with open(self.root / "runs.jsonl", "a+b") as f:  # appends always go to the end
            end, cut_short = f.seek(0, os.SEEK_END), False
            if end:
                f.seek(end - 1)
                cut_short = f.read(1) != b"\n"  # a record cut short (disk full, kill): start on a new line
            f.write((b"\n" if cut_short else b"") + json.dumps(data, ensure_ascii=False).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(self.root)
