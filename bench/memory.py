"""Peak RSS of a batchmask worker on a 48 MP photo, a 48 MP PNG and a decompression bomb.

    python bench/memory.py

Each input runs alone (`batchmask run --workers 1`); the worker's VmHWM is read
from /proc while it runs. The baseline is the same worker on a 0.3 MP photo.
"""

from __future__ import annotations

import io
import shutil
import struct
import sys
import tempfile
import zlib
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import timed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def png_bomb(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\x00" * width * 3
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(2000)) + comp.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bm-mem-"))
    face = Image.open(REPO / "data" / "samples" / "astronaut.jpg").convert("RGB")
    cases = {}
    cases["small.jpg"] = (REPO / "data" / "samples" / "astronaut.jpg").read_bytes()
    big = face.resize((8000, 6000), Image.BILINEAR)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=85)
    cases["photo-48mp.jpg"] = buf.getvalue()
    buf = io.BytesIO()
    big.save(buf, "PNG", compress_level=1)
    cases["photo-48mp.png"] = buf.getvalue()
    cases["bomb-2.5gp.png"] = png_bomb(50000, 50000)
    print(f"{'input':18s} {'file MB':>8s} {'worker peak RSS MB':>19s}  status")
    for name, data in cases.items():
        src = work / name.replace(".", "_")
        src.mkdir()
        (src / name).write_bytes(data)
        out = work / f"out-{name}"
        _, peaks = timed([sys.executable, "-m", "batchmask", "run", str(src), str(out), "--workers", "1", "-q"], True)
        status = (out / "images.csv").read_text().splitlines()[1].split(",")[1:6:4]
        worker = max((v for v in peaks.values() if v > 50), default=0)
        print(f"{name:18s} {len(data) / 1e6:8.1f} {worker:19d}  {' '.join(status)}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
