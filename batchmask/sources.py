"""Sources turn an input folder into tasks: every photo below it, with a signature for resume."""

from __future__ import annotations

import errno
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


_TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".swp", "~")


def is_ignored_name(name: str) -> bool:
    """Hidden and temporary names (dotfiles, `~$x`, `x.part`, `x.tmp`, `x~`): files still being written."""
    lower = name.lower()
    return name.startswith((".", "~$")) or lower.endswith(_TEMP_SUFFIXES)


def input_file(root: str | os.PathLike, path: str | os.PathLike) -> InputFile | None:
    """The InputFile for one path below `root` (as `scan` would give it), or None when it is
    not a photo to process (not an image name, hidden or temporary, gone, a folder)."""
    root, path = Path(root), Path(path)
    try:
        rel_path = path.relative_to(root)
    except ValueError:
        return None
    if not is_image_name(path.name) or any(is_ignored_name(part) for part in rel_path.parts) or ".batchmask" in rel_path.parts:
        return None
    folders = [root / Path(*rel_path.parts[:i]) for i in range(1, len(rel_path.parts))]
    if any(is_output_folder(d) for d in folders):
        return None  # inside a batchmask OUTPUT below INPUT, as `scan` skips them
    if any(d.is_symlink() for d in folders):
        return None  # reached through a folder link, which `scan` does not follow
    rel = rel_path.as_posix()
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return InputFile(str(path), rel, 0, 0, "broken symbolic link") if path.is_symlink() else None
    except OSError as e:
        return InputFile(str(path), rel, 0, 0, _stat_problem(path, e))
    if stat.S_ISDIR(st.st_mode):
        return None
    if not stat.S_ISREG(st.st_mode):
        return InputFile(str(path), rel, 0, 0, "not a regular file (FIFO, socket or device)")
    return InputFile(str(path), rel, st.st_size, st.st_mtime_ns)


def _stat_problem(path: Path, e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "symbolic link loop"
    if path.is_symlink() and isinstance(e, FileNotFoundError):
        return "broken symbolic link"
    return f"cannot stat: {e.strerror}"


def is_output_folder(path: Path) -> bool:
    """A batchmask OUTPUT (it has a ledger): its annotated copies are not new photos."""
    try:
        return (path / ".batchmask" / "ledger.jsonl").is_file()
    except OSError:  # a folder we may not enter (EACCES): the scan reports it as unreadable
        return False


def scan(root: str | os.PathLike, exclude: list[str | os.PathLike] = ()) -> Iterator[InputFile]:
    """Photos below `root` (extension in any case), in a stable order.

    Directory symlinks are not followed (no loops); file symlinks are. Hidden
    and temporary names (`is_ignored_name`) and batchmask OUTPUT folders below
    `root` (an earlier run's, say) are skipped. Entries
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
        dirnames[:] = sorted(d for d in dirnames if (here / d).resolve() not in skip and not is_ignored_name(d) and not is_output_folder(here / d))
        for name in sorted(filenames):
            if not is_image_name(name) or is_ignored_name(name):
                continue
            path = here / name
            rel = path.relative_to(root).as_posix()
            try:
                st = os.stat(path)
            except OSError as e:
                yield InputFile(str(path), rel, 0, 0, _stat_problem(path, e))
                continue
            if not stat.S_ISREG(st.st_mode):
                yield InputFile(str(path), rel, 0, 0, "not a regular file (FIFO, socket or device)")
                continue
            yield InputFile(str(path), rel, st.st_size, st.st_mtime_ns)
    for e in unreadable:
        rel = Path(e.filename).relative_to(root).as_posix() if e.filename else "."
        yield InputFile(str(e.filename), rel + "/", 0, 0, f"cannot read folder: {e.strerror}")
