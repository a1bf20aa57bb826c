"""`batchmask watch`: latency from a photo landing to its rows, and memory while thousands land at once.

    python bench/watch_latency.py [--photos 20] [--burst 5000] [--workers 2] [--settle 2]

Latency: photos from ../shared/data (Kaggle, with faces) are copied in one at a time the
way copy tools do it (write `name.part`, rename into place); the clock runs from the
rename to the moment the photo's rows are in faces.csv and images.csv. Burst: BURST
copies land within a few seconds; the driver's and the workers' RSS are sampled from
/proc every 0.25 s until every photo has its images.csv row. Prints medians and peaks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def rss_mb(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            out += [int(c) for c in open(f"/proc/{pid}/task/{task}/children").read().split()]
    except OSError:
        pass
    return out


def count_rows(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f) - 1
    except OSError:
        return 0


def images_done(out: Path) -> set[str]:
    import csv

    try:
        return {r["image"] for r in csv.DictReader(open(out / "images.csv", encoding="utf-8"))}
    except OSError:
        return set()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=20)
    ap.add_argument("--burst", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--settle", type=float, default=2.0)
    args = ap.parse_args()

    pool = sorted((SHARED / "kaggle_andrewmvd_facemask" / "images").glob("*.jpg"))
    if not pool:
        sys.exit(f"needs {SHARED}/kaggle_andrewmvd_facemask")
    work = Path(tempfile.mkdtemp(prefix="bm-watch-"))
    inp, out = work / "in", work / "out"
    inp.mkdir()
    cmd = [sys.executable, "-m", "batchmask", "watch", str(inp), str(out), "-w", str(args.workers), "--settle", str(args.settle), "--quiet", "--no-annotate"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(x) for x in proc.stdout], daemon=True).start()
    while not any("watching" in x for x in lines):
        time.sleep(0.05)
    time.sleep(1.0)

    latencies = []
    for i, src in enumerate(pool[: args.photos]):
        name = f"lat{i:03}.jpg"
        shutil.copyfile(src, inp / (name + ".part"))
        os.rename(inp / (name + ".part"), inp / name)
        landed = time.perf_counter()
        while name not in images_done(out):
            time.sleep(0.01)
        latencies.append(time.perf_counter() - landed)
        time.sleep(0.5)
    print(f"latency, rename into place -> row in images.csv/faces.csv ({args.photos} photos, settle {args.settle:g} s, "
          f"{args.workers} workers): median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s")

    peak = {"driver": 0.0, "workers_total": 0.0, "worker_max": 0.0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            kids = children(proc.pid)
            peak["driver"] = max(peak["driver"], rss_mb(proc.pid))
            sizes = [rss_mb(k) for k in kids]
            peak["workers_total"] = max(peak["workers_total"], sum(sizes))
            peak["worker_max"] = max([peak["worker_max"], *sizes])
            time.sleep(0.25)

    idle_driver = rss_mb(proc.pid)
    threading.Thread(target=sample, daemon=True).start()
    before = count_rows(out / "images.csv")
    t0 = time.perf_counter()
    burst = inp / "burst"
    burst.mkdir()
    for i in range(args.burst):
        shutil.copyfile(pool[i % len(pool)], burst / f"b{i:05}.jpg")
    landed = time.perf_counter() - t0
    while count_rows(out / "images.csv") - before < args.burst:
        time.sleep(0.5)
        if proc.poll() is not None:
            sys.exit(f"watch exited: {lines[-5:]}")
    total = time.perf_counter() - t0
    stop.set()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(120)
    print(f"burst: {args.burst} photos landed in {landed:.1f} s; all rows after {total:.1f} s ({args.burst / total:.1f} photos/s)")
    print(f"peak RSS: driver {peak['driver']:.0f} MB (idle before the burst {idle_driver:.0f} MB), "
          f"largest worker {peak['worker_max']:.0f} MB, all workers {peak['workers_total']:.0f} MB")
    print(f"SIGTERM -> exit {code}; rows in images.csv {count_rows(out / 'images.csv')} (expected {args.photos + args.burst})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
