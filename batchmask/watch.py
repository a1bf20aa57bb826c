"""`batchmask watch`: keep an OUTPUT up to date with a folder that photos keep landing in.

Filesystem events (watchdog: inotify, or polling for SMB/NFS shares where no
events arrive) only mark paths as *pending*; the main loop decides when a
pending file is complete: its size and mtime have not changed for `settle`
seconds. Hidden and temporary names are ignored, a rename into place counts as
a new file at its destination. Complete files go to the engine in small chunks
through the same `RunSession` as `batchmask run`, so rows, resume and the
ledger are the same. The pending set is bounded: past `max_pending` paths new
events are dropped and the folder is rescanned once the backlog has halved,
as it is at start (catch-up) and when a folder is moved in.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserverVFS

from .runner import RunOptions, RunSession, RunSummary
from .sources import InputFile, input_file, is_ignored_name, is_output_folder


@dataclass
class WatchOptions:
    polling: bool = False
    interval: float = 2.0  # polling period (s)
    settle: float = 2.0  # a file is complete when unchanged for this long (s)
    max_pending: int = 10_000
    chunk: int = 16  # photos handed to the engine per step: bounds latency of a stop


class _Pending:
    """Paths that changed and are not processed yet, with when each last changed (thread-safe)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.lock = threading.Lock()
        self.paths: dict[str, float] = {}
        self.rescan = True  # catch up on start
        self.root_gone = False  # the watched folder itself was deleted or moved away

    def touch(self, path: str) -> bool:
        """Note a change; when full, the path is dropped and a rescan will find it (False)."""
        with self.lock:
            if len(self.paths) >= self.limit and path not in self.paths:
                self.rescan = True
                return False
            self.paths[path] = time.monotonic()
            return True

    def __len__(self) -> int:
        return len(self.paths)

    def discard(self, path: str) -> None:
        with self.lock:
            self.paths.pop(path, None)

    def take_rescan(self) -> bool:
        """Whether to rescan now: asked for, and the backlog has room for what it may find."""
        with self.lock:
            if not self.rescan or len(self.paths) > self.limit // 2:
                return False
            self.rescan = False
            return True

    def snapshot(self) -> list[tuple[str, float]]:
        with self.lock:
            return list(self.paths.items())


class _Handler(FileSystemEventHandler):
    def __init__(self, pending: _Pending, root: Path):
        self.pending = pending
        self.root = str(root)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        if event.is_directory and event.event_type in ("deleted", "moved") and os.fsdecode(event.src_path) == self.root:
            self.pending.root_gone = True
            return
        if event.is_directory:
            if event.event_type in ("created", "moved"):
                self.pending.rescan = True  # a folder moved in brings files with it, unannounced
            return
        if event.event_type == "deleted":
            self.pending.discard(os.fsdecode(event.src_path))
            return
        path = event.dest_path if event.event_type == "moved" else event.src_path
        if event.event_type == "moved":
            self.pending.discard(os.fsdecode(event.src_path))
        self.pending.touch(os.fsdecode(path))


def _lister(root: Path, excluded: list[Path]):
    """os.scandir for the polling observer, leaving out the folders `scan` skips below `root`."""
    skip = {str(d) for d in excluded}

    def listdir(path):
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_symlink() and entry.is_dir():
                    continue  # folder links are not followed, as `scan` does not (a link to INPUT loops)
                if entry.is_dir(follow_symlinks=False) and (
                    entry.path in skip or is_ignored_name(entry.name) or is_output_folder(Path(entry.path))
                ):
                    continue
                yield entry

    return listdir


def _identity(folder: Path) -> tuple[int, int] | None:
    """Which folder a path names now (device, inode); None when it is gone."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class Watcher:
    def __init__(self, input_dir, output_dir, options: RunOptions | None = None, watch: WatchOptions | None = None, progress=None):
        self.input_dir = Path(input_dir).resolve()
        self.output_dir = Path(output_dir).resolve()
        self.options = options or RunOptions()
        self.watch = watch or WatchOptions()
        self.progress = progress or (lambda event, data: None)
        self.stop_event = threading.Event()
        self.pending = _Pending(self.watch.max_pending)
        self._seen: dict[str, tuple[list[int], float]] = {}  # path -> (signature, when it last changed)
        self._caught_up = False

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> RunSummary:
        session = RunSession(self.input_dir, self.output_dir, self.options, self.progress)
        session.watching = True
        if self.watch.polling:  # each poll lists the tree: not the parts never scanned (OUTPUT, archive, hidden folders)
            observer = PollingObserverVFS(os.stat, _lister(self.input_dir, session.excluded), polling_interval=self.watch.interval)
        else:
            observer = Observer()
        observer.schedule(_Handler(self.pending, self.input_dir), str(self.input_dir), recursive=True)
        with session:
            identity = _identity(self.input_dir)
            observer.start()
            self.progress("watching", {"input": str(self.input_dir), "polling": self.watch.polling})
            try:
                while not self.stop_event.is_set():
                    ready = self._ready(session)
                    if ready:
                        session.process(ready, batch_size=max(1, min(session.options.batch_size, len(ready) // 2 or 1)))
                        session.commit()
                    else:
                        self.stop_event.wait(0.2)
                    if self.pending.root_gone or _identity(self.input_dir) != identity:
                        # the observer would go on watching the old, deleted folder and never report again
                        raise RuntimeError(f"the watched folder {self.input_dir} was removed or replaced; "
                                           "rows committed so far are safe, start the watch again (it catches up)")
                    if not observer.is_alive() or not all(e.is_alive() for e in observer.emitters):
                        raise RuntimeError("the filesystem observer stopped (watched folder unreadable?)")
            finally:
                observer.stop()
                observer.join(timeout=5)
            session.recount()
        return session.summary

    def _ready(self, session: RunSession) -> list[InputFile]:
        """Pending files that are complete and not yet in OUTPUT (at most one chunk)."""
        ready: list[InputFile] = []
        if self.pending.take_rescan():
            found = session.scan()
            done = 0
            for f in found:
                if f.problem and f.rel.endswith("/"):  # a folder it may not enter: no event will name it, so its row is made now
                    ready.append(f)
                elif session.store.is_current(f.rel, f.signature):
                    done += 1
                elif not self.pending.touch(f.path):
                    break  # full: the rest is found by the next rescan
            if not self._caught_up:  # the scan at start: what OUTPUT already had then
                session.summary.skipped, self._caught_up = done, True
            session.summary.scanned = max(session.summary.scanned, len(found))
            self.progress("scanned", {"files": len(found)})
        now = time.monotonic()
        # OUTPUT and the archive are skipped only where they lie inside INPUT (as `scan` does)
        excluded = [d for d in session.excluded if d != self.input_dir and self.input_dir in d.parents]
        for path, _touched in sorted(self.pending.snapshot(), key=lambda item: item[1]):
            if len(ready) >= self.watch.chunk:
                break
            f = input_file(self.input_dir, path)
            if f is None or any(Path(path).is_relative_to(d) for d in excluded):
                self.pending.discard(path)
                self._seen.pop(path, None)
                continue
            if not f.problem and not self._settled(path, f, now):
                continue
            self.pending.discard(path)
            self._seen.pop(path, None)
            if session.store.is_current(f.rel, f.signature):
                continue  # an event for a file already done (touched, moved back, a duplicate event)
            ready.append(f)
        pending = {p for p, _ in self.pending.snapshot()}
        for path in [p for p in self._seen if p not in pending]:  # deleted while pending
            del self._seen[path]
        return session.select(ready) if ready else []

    def _settled(self, path: str, f: InputFile, now: float) -> bool:
        """Unchanged (size, mtime) for `settle` seconds of this machine's clock. The file's own
        mtime is not trusted: a share's server clock may be behind or ahead."""
        previous = self._seen.get(path)
        if previous is not None and previous[0] == f.signature:
            return now - previous[1] >= self.watch.settle
        self._seen[path] = (f.signature, now)
        return False
