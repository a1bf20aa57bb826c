"""Large photos: batchmask against the decode floor and the AIZOO peer on 12 MP and 24 MP JPEGs.

    python bench/large_photos.py [--photos 60] [--repeats 3]

Builds two sets from the shared Kaggle + webcam photos, upscaled (Lanczos) to
4000×3000 (12 MP) and 6000×4000 (24 MP) JPEGs at quality 90. The decode floor is
the time to decode each photo at the size batchmask's detector needs (the same
`load_image` call, with DCT-scaled JPEG decoding), on one core, times the number
of workers; `--fast` needs a smaller size, so it has its own floor. Then,
alternating `--repeats` times: `batchmask run` with 2 workers (default settings),
the same with `--fast`, and the AIZOO peer (its own venv, OpenCV's threads).
Prints median images/s, the ratios, and the peak RSS of the batchmask workers.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import peer_command, peer_python, timed  # noqa: E402

from batchmask.detector import FAST, DetectorConfig  # noqa: E402
from batchmask.images import load_image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def build_set(sources: list[Path], folder: Path, size: tuple[int, int]) -> None:
    folder.mkdir(parents=True)
    for i, src in enumerate(sources):
        im = Image.open(src).convert("RGB")
        w, h = size if im.width >= im.height else size[::-1]
        im.resize((w, h), Image.LANCZOS).save(folder / f"p{i:03}.jpg", quality=90)


def decode_floor(folder: Path, workers: int, side: int) -> float:
    """Images/s of decoding alone at the detector's size, one process, scaled to `workers` cores."""
    files = sorted(folder.glob("*.jpg"))
    load_image(str(files[0]), target_side=side)
    t = time.perf_counter()
    for f in files:
        load_image(str(f), target_side=side)
    return len(files) / (time.perf_counter() - t) * workers


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--photos", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = Path(args.data)
    peers = data.parent / "peers"
    pool = sorted((data / "kaggle_andrewmvd_facemask" / "images").glob("*.jpg"))[::15] + sorted((data / "formatcom_webcam" / "images").glob("*.jpg"))[::10]
    pool = pool[: args.photos]
    work = Path(tempfile.mkdtemp(prefix="bm-large-"))
    py = peer_python(data)
    for label, size in (("12 MP", (4000, 3000)), ("24 MP", (6000, 4000))):
        folder = work / label.replace(" ", "")
        build_set(pool, folder, size)
        n = len(pool)
        floor = statistics.median(decode_floor(folder, 2, DetectorConfig().max_side) for _ in range(3))
        fast_floor = statistics.median(decode_floor(folder, 2, FAST.max_side) for _ in range(3))
        rates: dict[str, list[float]] = {"batchmask, 2 workers": [], "batchmask --fast": [], "AIZOO peer": []}
        rss: list[int] = []
        for r in range(args.repeats):
            for name, extra in (("batchmask, 2 workers", []), ("batchmask --fast", ["--fast"])):
                out = work / f"out-{label}-{r}{'-'.join(extra)}"
                secs, peaks = timed([sys.executable, "-m", "batchmask", "run", str(folder), str(out), "-w", "2", "-q", *extra], True)
                rates[name].append(n / secs)
                rss += [v for v in peaks.values() if v > 100]
            secs, _ = timed(peer_command(py, peers, folder, work / f"peer-{label}-{r}.jsonl"))
            rates["AIZOO peer"].append(n / secs)
        m = {k: statistics.median(v) for k, v in rates.items()}
        print(f"\n{label}: {n} photos, {args.repeats} repeats, medians (whole commands, start-up included)")
        print(f"  decode floor (2 cores, reduced-size decode): {floor:.1f} images/s; at --fast's size: {fast_floor:.1f}")
        for k, v in m.items():
            print(f"  {k:22s} {v:.1f} images/s  ({', '.join(f'{x:.1f}' for x in rates[k])})")
        print(f"  batchmask time / decode-floor time: {floor / m['batchmask, 2 workers']:.2f}x; batchmask / AIZOO: {m['batchmask, 2 workers'] / m['AIZOO peer']:.2f}x")
        print(f"  --fast time / its decode-floor time: {fast_floor / m['batchmask --fast']:.2f}x; --fast / AIZOO: {m['batchmask --fast'] / m['AIZOO peer']:.2f}x")
        if rss:
            print(f"  peak RSS per batchmask worker: max {max(rss)} MB")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
