"""Dask distributed against the local process pool: images/s of whole `batchmask run` commands.

    python bench/dask_throughput.py [--limit 200] [--repeats 3]

Copies Kaggle + webcam photos from ../shared/data into one folder, starts a real
`dask scheduler` and two `dask worker` processes (one thread each) on 127.0.0.1,
then alternates, `--repeats` times: the local pool with 1 and 2 workers, and
`--scheduler` runs with 1 and 2 Dask workers (the second worker is retired for the
1-worker runs). Every run writes a fresh OUTPUT. Prints median images/s and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import timed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bm-dask-"))
    photos = work / "photos"
    photos.mkdir()
    srcs = sorted((args.data / "kaggle_andrewmvd_facemask" / "images").glob("*"))[: args.limit - 40]
    srcs += sorted((args.data / "formatcom_webcam" / "images").glob("*"))[:40]
    for s in srcs:
        shutil.copy(s, photos / f"{s.parent.parent.name}_{s.name}")
    n = len(srcs)

    info = work / "scheduler.json"
    procs = [start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(info)], work / "s.log")]
    while not info.exists():
        time.sleep(0.1)
    address = json.loads(info.read_text())["address"]

    def workers(k: int) -> list[subprocess.Popen]:
        from distributed import Client

        ps = [start([str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1", "--name", f"w{i}"], work / f"w{i}.log") for i in range(k)]
        with Client(address, timeout=30) as c:
            c.wait_for_workers(k, timeout=60)
        return ps

    def stop(ps: list[subprocess.Popen]) -> None:
        from distributed import Client

        for p in ps:
            os.killpg(p.pid, signal.SIGTERM)
        for p in ps:
            p.wait(30)
        with Client(address, timeout=30) as c:  # wait until the scheduler has let them go
            while c.scheduler_info()["workers"]:
                time.sleep(0.2)

    rates: dict[str, list[float]] = {}
    run = [sys.executable, "-m", "batchmask", "run", str(photos)]
    try:
        for rep in range(args.repeats):
            for label, extra in (("local pool, 1 worker", ["-w", "1"]), ("local pool, 2 workers", ["-w", "2"])):
                seconds, _ = timed(run + [str(work / f"out-{rep}-{extra[1]}l"), *extra, "-q"])
                rates.setdefault(label, []).append(n / seconds)
            for k in (1, 2):
                ps = workers(k)
                seconds, _ = timed(run + [str(work / f"out-{rep}-{k}d"), "--scheduler", address, "-q"])
                rates.setdefault(f"Dask, {k} worker{'s' if k > 1 else ''}", []).append(n / seconds)
                stop(ps)
            print(f"repeat {rep + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()), flush=True)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\n{n} photos (Kaggle + webcam), {args.repeats} repeats, medians, whole commands (start-up included):")
    for k, v in med.items():
        print(f"  {k:24s} {v:6.1f} images/s")
    print(f"  Dask 2 / Dask 1 workers: {med['Dask, 2 workers'] / med['Dask, 1 worker']:.2f}x; "
          f"Dask 2 workers / local pool 2 workers: {med['Dask, 2 workers'] / med['local pool, 2 workers']:.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
