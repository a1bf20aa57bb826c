"""Whole-command throughput: `batchmask run` with 1 and 2 workers beside the AIZOO peer.

    python bench/throughput.py [--data ../shared/data] [--limit 300] [--repeats 3]

Copies the photos of the two annotated sets (Kaggle crowd scenes + webcam
selfies) into one folder, then alternates, `--repeats` times: batchmask with 1
worker, batchmask with 2 workers, the same with `--fast` (no upscaled look),
the AIZOO peer (../shared/peers, its own venv, OpenCV's threads). Prints median images/s, ratios, and the peak RSS of
each batchmask worker process (VmHWM, read from /proc while it runs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def children_of(pid: int) -> set[int]:
    out, frontier = set(), {pid}
    procs = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
                procs[int(p.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    while frontier:
        nxt = {c for c, parent in procs.items() if parent in frontier}
        out |= nxt
        frontier = nxt
    return out


def peak_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def timed(cmd: list[str], watch_children: bool = False) -> tuple[float, dict[int, int]]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks: dict[int, int] = {}

    def poll():
        while proc.poll() is None:
            for c in children_of(proc.pid):
                peaks[c] = max(peaks.get(c, 0), peak_rss(c))
            time.sleep(0.2)

    t = threading.Thread(target=poll, daemon=True)
    if watch_children:
        t.start()
    _, err = proc.communicate()
    elapsed = time.perf_counter() - t0
    if proc.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    return elapsed, peaks


def peer_python(shared: Path) -> str:
    venv = REPO / "bench" / ".peer-venv"
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "numpy", "opencv-python-headless<5", "pillow"], check=True)
    return str(py)


def peer_command(py: str, peers: Path, images: Path, out: Path) -> list[str]:
    """The AIZOO peer over a folder of photos, through ../shared/peers/run_peer.py."""
    return [
        py, str(peers / "run_peer.py"), "--peer", "aizoo",
        "--use", f"proto={peers / 'aizoo' / 'face_mask_detection.prototxt'}",
        "--use", f"weights={peers / 'aizoo' / 'face_mask_detection.caffemodel'}",
        "--peer-repo", "/nonexistent", "--images", str(images), "--out", str(out),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--limit", type=int, default=300, help="photos (0: all 914)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = Path(args.data)
    peers = data.parent / "peers"
    photos = sorted((data / "kaggle_andrewmvd_facemask" / "images").glob("*.jpg")) + sorted((data / "formatcom_webcam" / "images").glob("*.jpg"))
    if args.limit:
        photos = photos[:: max(1, len(photos) // args.limit)][: args.limit]
    work = Path(tempfile.mkdtemp(prefix="bm-bench-"))
    src = work / "photos"
    src.mkdir()
    for p in photos:
        shutil.copy(p, src / f"{p.parent.parent.name}__{p.name}")
    n = len(photos)
    print(f"{n} photos (Kaggle + webcam), {os.cpu_count()} cores, {args.repeats} alternating repeats")
    py = peer_python(data)
    results: dict[str, list[float]] = {"batchmask 1 worker": [], "batchmask 2 workers": [], "--fast 1 worker": [], "--fast 2 workers": [],
                                       "AIZOO peer": []}
    rss: list[int] = []
    for r in range(args.repeats):
        for fast in (False, True):
            for workers in (1, 2):
                out = work / f"out-{workers}-{r}{'-fast' if fast else ''}"
                cmd = [sys.executable, "-m", "batchmask", "run", str(src), str(out), "--workers", str(workers), "--quiet"] + (["--fast"] if fast else [])
                secs, peaks = timed(cmd, True)
                results[f"{'--fast' if fast else 'batchmask'} {workers} worker{'s' if workers > 1 else ''}"].append(n / secs)
                rss += [v for v in peaks.values() if v > 100]
        secs, _ = timed(peer_command(py, peers, src, work / f"peer-{r}.jsonl"))
        results["AIZOO peer"].append(n / secs)
    print(f"\n{'whole command':22s} {'median img/s':>12s}  runs")
    for name, vals in results.items():
        print(f"{name:22s} {statistics.median(vals):12.1f}  {', '.join(f'{v:.1f}' for v in vals)}")
    m = {k: statistics.median(v) for k, v in results.items()}
    print(f"\n2 workers / 1 worker: {m['batchmask 2 workers'] / m['batchmask 1 worker']:.2f}x")
    print(f"batchmask 2 workers / AIZOO: {m['batchmask 2 workers'] / m['AIZOO peer']:.2f}x")
    print(f"--fast 2 workers / 1 worker: {m['--fast 2 workers'] / m['--fast 1 worker']:.2f}x; --fast 2 workers / AIZOO: {m['--fast 2 workers'] / m['AIZOO peer']:.2f}x")
    if rss:
        print(f"peak RSS per batchmask worker process: median {statistics.median(rss):.0f} MB, max {max(rss)} MB")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
