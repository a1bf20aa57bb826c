"""Fuzz the decode -> detect -> classify -> annotate path with mutated image files (Hypothesis).

    python bench/fuzz_decode.py [--minutes 3]

Seeds are small valid JPEG, PNG, GIF, WebP, TIFF and BMP files; Hypothesis flips,
inserts, deletes and truncates bytes. Every mutant must come back from the worker
as `ok` or as an `error` row with a reason, never as an internal error; a crash
of the process itself would end the run. Failures are printed with the mutant saved.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from batchmask.models import default_classifier_dir, default_detector_path
from batchmask.worker import Worker, WorkerConfig

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "samples" / "astronaut.jpg"


def seeds() -> list[bytes]:
    im = Image.open(SAMPLE).convert("RGB").resize((96, 96))
    out = []
    for fmt, kw in (("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}), ("GIF", {}), ("WEBP", {}), ("TIFF", {}), ("BMP", {})):
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        out.append(buf.getvalue())
    return out


SEEDS = seeds()


@st.composite
def mutants(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "huge"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[pos:]
        elif op == "huge" and len(data) > 24:
            data[pos : pos + 4] = b"\xff\xff\xff\x7f"
    return bytes(data)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=3.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bm-fuzz-"))
    worker = Worker(WorkerConfig(
        detector_path=str(default_detector_path()), classifier_dir=str(default_classifier_dir()),
        annotate_root=str(tmp / "annotated"), timeout=10,
    ))
    stats = {"ok": 0, "error": 0}
    reasons: dict[str, int] = {}
    deadline = time.monotonic() + args.minutes * 60
    names = ["x.jpg", "x.png", "x.gif", "x.webp", "x.tif", "x.bmp"]

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(mutants(), st.sampled_from(names))
    def check(data: bytes, name: str) -> None:
        path = tmp / name
        path.write_bytes(data)
        r = worker.handle_one(str(path), name)
        stats[r["status"]] += 1
        key = r["error"].split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
        if r["error"].startswith("internal error"):
            (tmp / f"crash-{len(reasons)}-{name}").write_bytes(data)
        assert not r["error"].startswith("internal error"), r["error"]

    try:
        while time.monotonic() < deadline:
            check()
    finally:
        print(f"{sum(stats.values())} mutants in {args.minutes:g} min: {stats}")
        for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]):
            print(f"  {v:6d}  {k or 'ok'}")


if __name__ == "__main__":
    main()
