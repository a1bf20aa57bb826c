"""Disk full while writing: a clear stop, then the same command resumes once there is space."""

import csv
import shutil
import subprocess

import pytest

from conftest import SAMPLES, SHARED_DATA, batchmask, needs_shared


@pytest.fixture
def small_disk(tmp_path, request):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={getattr(request, 'param', '600k')}", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_enospc_stops_clearly_and_the_rerun_resumes(tmp_path, small_disk):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(24):
        shutil.copy(SAMPLES / ("astronaut.jpg", "chelsea.jpg", "masks/astronaut_cloth.jpg")[i % 3], src / f"p{i:02d}.jpg")
    out = small_disk / "out"
    r = batchmask("run", src, out, "-q", "--workers", "1")
    assert r.returncode == 1, r.stderr
    assert "no space left on device" in r.stderr.lower() and "Traceback" not in r.stderr
    assert "run again to resume" in r.stderr, r.stderr  # the clear message, not a later error while closing files
    assert not (out / ".batchmask" / "lock.info").exists()  # OUTPUT is released

    subprocess.run(["mount", "-o", "remount,size=50m", str(small_disk)], check=True)
    r = batchmask("run", src, out, "-q", "--workers", "1")
    assert r.returncode == 0, r.stderr
    images = [row["image"] for row in csv.DictReader(open(out / "images.csv"))]
    assert sorted(images) == sorted(p.name for p in src.iterdir())
    assert all(row["status"] == "ok" for row in csv.DictReader(open(out / "images.csv")))
    faces = [(row["image"], row["face"]) for row in csv.DictReader(open(out / "faces.csv"))]
    assert len(faces) == len(set(faces)) == 16  # 16 photos with one face each, none twice
    assert len((out / "faces.jsonl").read_text().splitlines()) == 16


@needs_shared
@pytest.mark.parametrize("small_disk", ["400k"], indirect=True)
def test_enospc_while_closing_the_tables_still_says_so_and_frees_output(tmp_path, small_disk):
    """Crowd photos: the disk fills while table rows are buffered, so closing the files fails too."""
    src = tmp_path / "in"
    src.mkdir()
    for name in sorted((SHARED_DATA / "kaggle_andrewmvd_facemask" / "images").iterdir())[:30]:
        shutil.copy(name, src / name.name)
    out = small_disk / "out"
    r = batchmask("run", src, out, "-q", "--workers", "1")
    assert r.returncode == 1 and "run again to resume" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (out / ".batchmask" / "lock.info").exists()
