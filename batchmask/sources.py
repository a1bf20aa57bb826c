"""Sources turn an input folder into tasks: every photo below it, with a signature for resume."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .images import is_image_name


@dataclass(frozen=True)
class InputFile:
    path: str  # absolute path to read
    rel: str  # POSIX path relative to the input root: the key in every output
    size: int
    mtime_ns: int
    problem: str = ""  # set when the entry cannot be read as a file (dangling link, FIFO, ...)

    @property
    def signature(self) -> list[int]:
        return [self.size, self.mtime_ns]


def scan(root: str | os.PathLike, exclude: list[str | os.PathLike] = ()) -> Iterator[InputFile]:
    """Photos below `root` (extension in any case), in a stable order.

    Directory symlinks are not followed (no loops); file symlinks are. Entries
    with an image name that are not regular files (dangling links, FIFOs,
    sockets) are yielded with `problem` set and are never opened.
    """
    root = Path(root).resolve()
    skip = {Path(e).resolve() for e in exclude}
    if root in skip:
        return
    unreadable: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable.append, followlinks=False):
        while unreadable:
            e = unreadable.pop()
            rel = Path(e.filename).relative_to(root).as_posix() if e.filename else "."
            yield InputFile(str(e.filename), rel + "/", 0, 0, f"cannot read folder: {e.strerror}")
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if (here / d).resolve() not in skip and not d.startswith(".batchmask"))
        for name in sorted(filenames):
            if not is_image_name(name):
                continue
            path = here / name
            rel = path.relative_to(root).as_posix()
            try:
                st = os.stat(path)
            except OSError as e:
                yield InputFile(str(path), rel, 0, 0, "broken symbolic link" if path.is_symlink() else f"cannot stat: {e.strerror}")
                continue
            if not stat.S_ISREG(st.st_mode):
                yield InputFile(str(path), rel, 0, 0, "not a regular file (FIFO, socket or device)")
                continue
            yield InputFile(str(path), rel, st.st_size, st.st_mtime_ns)
    for e in unreadable:
        rel = Path(e.filename).relative_to(root).as_posix() if e.filename else "."
        yield InputFile(str(e.filename), rel + "/", 0, 0, f"cannot read folder: {e.strerror}")
