"""Atomic file writes and output paths that cannot escape their folder."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


_UMASK = os.umask(0)
os.umask(_UMASK)


class UnsafePathError(ValueError):
    pass


def safe_join(root: str | os.PathLike, rel: str) -> Path:
    """`root/rel`, refusing absolute paths, `..` and anything that resolves outside root."""
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UnsafePathError(f"unsafe relative path: {rel!r}")
    root_path = Path(root).resolve()
    target = root_path.joinpath(*parts)
    parent = target.parent.resolve()
    if parent != root_path and root_path not in parent.parents:
        raise UnsafePathError(f"path leaves the output folder: {rel!r}")
    return target


def fsync_dir(path: str | os.PathLike) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    """Write to a temporary file beside `path`, then rename over it: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8", "backslashreplace"), durable)


def strict_json(obj):
    """`obj` with NaN and infinities as None (null): strict JSON parsers reject bare NaN."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Pretty, strict JSON (no NaN), written atomically."""
    atomic_write_text(path, json.dumps(strict_json(obj), indent=2, allow_nan=False) + "\n")
