"""Inputs and outputs given as fsspec URLs (`s3://bucket/photos`, `gs://…`, `file:///srv/…`).

Reading: `scan_url` lists the photos below a URL with their size and
modification time (the resume signature); workers read each photo's bytes
with fsspec. Writing: an OUTPUT URL is mirrored by a local staging folder,
where the ledger and tables are written exactly as for a local OUTPUT; the
driver downloads them before a run (to resume) and uploads them after each
commit group and at the end. Object stores replace whole objects, so readers
of the URL never see half a table. Workers write annotated copies straight to
OUTPUT/annotated/ on the store. Needs the `remote` extra (fsspec plus the
protocol's package: s3fs, gcsfs).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from pathlib import Path

from .images import is_image_name
from .sources import InputFile, is_ignored_name

SYNCED = ("faces.csv", "faces.jsonl", "images.csv", "run.json", "runs.jsonl", ".batchmask/archived.jsonl", ".batchmask/ledger.jsonl",
          ".batchmask/replacements.jsonl", ".batchmask/force.json")  # the ledger after the tables; staged rows after the ledger
TRANSIENT = (".batchmask/replacements.jsonl", ".batchmask/force.json")  # gone locally: deleted on the store too


def is_url(location: str | os.PathLike) -> bool:
    return isinstance(location, str) and "://" in location


def local_path(url: str) -> Path | None:
    """The folder a `file://` URL names on this machine, None for other URLs. Such an OUTPUT is
    that folder (its lock included): named once as a URL and once as a path, it is one OUTPUT."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        return None
    return Path(unquote(parts.path))


def url_fs(url: str):
    try:
        from fsspec.core import url_to_fs
    except ImportError as e:
        raise RemoteError(f"{url}: URLs need the 'remote' extra (pip install 'batchmask[remote]'): {e}") from None
    try:
        return url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise RemoteError(f"{url}: {e}") from None


class RemoteError(Exception):
    pass


def _mtime_ns(info: dict) -> int:
    for key in ("mtime", "LastModified", "updated", "last_modified", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, (int, float)):
            return int(value * 1e9)
        if isinstance(value, dt.datetime):
            return int(value.timestamp() * 1e9)
        try:
            return int(dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1e9)
        except ValueError:
            continue
    etag = str(info.get("ETag") or info.get("etag") or "")
    return int(hashlib.sha1(etag.encode()).hexdigest()[:15], 16) if etag else 0


def scan_url(url: str) -> list[InputFile]:
    """Photos below `url`, as `sources.scan` gives them for a folder (paths are full URLs)."""
    fs, root = url_fs(url)
    root = root.rstrip("/")
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    found = []
    try:
        listing = fs.find(root, detail=True)
    except (OSError, ValueError) as e:
        raise RemoteError(f"cannot list {url}: {e}") from None
    if not listing and not fs.exists(root):
        raise RemoteError(f"input not found: {url}")
    for path, info in sorted(listing.items()):
        rel = path[len(root) :].lstrip("/")
        if info.get("type") == "directory" or not is_image_name(rel) or any(is_ignored_name(p) for p in rel.split("/")):
            continue
        found.append(InputFile(f"{protocol}://{path}", rel, int(info.get("size") or 0), _mtime_ns(info)))
    return found


def read_bytes(url: str, limit: int) -> bytes:
    fs, path = url_fs(url)
    size = fs.size(path)
    if size is not None and size > limit:
        raise OSError(f"file of {size} bytes exceeds the {limit}-byte read limit")
    with fs.open(path, "rb") as f:
        return f.read(limit + 1)


def write_bytes(url: str, data: bytes) -> None:
    fs, path = url_fs(url)
    parent = path.rsplit("/", 1)[0]
    if parent and hasattr(fs, "makedirs"):
        fs.makedirs(parent, exist_ok=True)
    fs.pipe_file(path, data)


def join(url: str, rel: str) -> str:
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        from .storage import UnsafePathError

        raise UnsafePathError(f"unsafe relative path: {rel!r}")
    return url.rstrip("/") + "/" + rel


def staging_dir(url: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "batchmask" / "staging" / hashlib.sha1(url.encode()).hexdigest()[:16]


class RemoteOutput:
    """A local staging folder standing in for an OUTPUT URL, synchronised both ways."""

    def __init__(self, url: str, min_interval: float = 5.0):
        self.url = url.rstrip("/")
        self.fs, self.root = url_fs(self.url)
        self.local = staging_dir(self.url)
        self.min_interval = min_interval
        self._last = 0.0

    def pull(self) -> Path:
        """Fresh staging copy of the URL's ledger and tables (what the store resumes from)."""
        self.local.mkdir(parents=True, exist_ok=True)
        for name in SYNCED:
            target = self.local / name
            target.unlink(missing_ok=True)
            remote = f"{self.root}/{name}"
            try:
                if self.fs.exists(remote):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self.fs.get_file(remote, str(target))
            except OSError as e:
                raise RemoteError(f"cannot read {self.url}/{name}: {e}") from None
        return self.local

    def push(self, force: bool = False) -> None:
        """Upload the tables (at most every `min_interval` s unless forced), ledger last."""
        if not force and time.monotonic() - self._last < self.min_interval:
            return
        self._last = time.monotonic()
        for name in SYNCED:
            path = self.local / name
            try:
                if path.exists():
                    write_bytes(f"{self.url}/{name}", path.read_bytes())
                elif name in TRANSIENT and self.fs.exists(f"{self.root}/{name}"):
                    self.fs.rm(f"{self.root}/{name}")  # staged rows already swapped in must not come back
            except OSError as e:
                raise RemoteError(f"cannot write {self.url}/{name}: {e}") from None
