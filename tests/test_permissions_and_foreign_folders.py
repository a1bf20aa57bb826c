"""Folders a user may not read or write, and folders that hold a user's own files: a clear
message and a run that goes on, never a traceback, never a user's file removed."""

import os
import shutil
import signal
import subprocess
import time

import pytest

from batchmask.datasets.splits import assign_split, group_key
from conftest import SAMPLES, batchmask, batchmask_unprivileged, unprivileged

pytest.importorskip("matplotlib", reason="evaluate needs the 'eval' extra")


def locked(folder):
    """A folder nobody but root may enter; opened again after the test so pytest can remove it."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0)
    return folder


@pytest.fixture
def build_inputs(tmp_path):
    unmasked, masked = tmp_path / "in" / "unmasked", tmp_path / "in" / "masked"
    unmasked.mkdir(parents=True)
    masked.mkdir(parents=True)
    for i in range(3):
        shutil.copy(SAMPLES / "astronaut.jpg", unmasked / f"a{i}.jpg")
    for p in sorted((SAMPLES / "masks").glob("*.jpg")):
        shutil.copy(p, masked / p.name)
    yield unmasked, masked
    for root, dirs, _ in os.walk(tmp_path):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)


def test_an_unreadable_folder_inside_input_is_an_error_row_and_the_run_goes_on(tmp_path, build_inputs):
    inp = tmp_path / "photos"
    inp.mkdir()
    shutil.copy(SAMPLES / "astronaut.jpg", inp / "a.jpg")
    shutil.copy(SAMPLES / "chelsea.jpg", inp / "c.jpg")
    locked(inp / "private")
    r = batchmask_unprivileged("run", inp, tmp_path / "out", "-w", "1", "-q")
    assert r.returncode == 3, r.stderr
    rows = (tmp_path / "out" / "images.csv").read_text()
    assert "a.jpg,ok," in rows and "c.jpg,ok," in rows and "private/,error,0,0,0,0,cannot read folder: Permission denied" in rows, rows


def test_watch_makes_the_error_row_of_a_folder_it_may_not_enter(tmp_path, build_inputs):
    inp, out = tmp_path / "photos", tmp_path / "out"
    inp.mkdir()
    shutil.copy(SAMPLES / "astronaut.jpg", inp / "a.jpg")
    locked(inp / "private")
    watch = subprocess.Popen(unprivileged("watch", inp, out, "-w", "1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not ((out / "images.csv").exists() and "a.jpg" in (out / "images.csv").read_text()):
            time.sleep(0.1)
    finally:
        watch.send_signal(signal.SIGTERM)
        _, err = watch.communicate(timeout=60)
    assert watch.returncode == 0, err
    assert "private/,error,0,0,0,0,cannot read folder: Permission denied" in (out / "images.csv").read_text(), err


def test_data_build_never_writes_into_or_removes_a_users_files(tmp_path, build_inputs):
    unmasked, masked = build_inputs
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    (mine / "metadata.csv").write_text("crop\nnotes.txt\n")
    r = batchmask("data", "build", "--unmasked", unmasked, "--masked", masked, "--out", mine, "-q")
    assert r.returncode == 2 and "holds files that are not a batchmask data build (metadata.csv, notes.txt)" in r.stderr.replace("\n", " ")
    assert sorted(p.name for p in mine.iterdir()) == ["metadata.csv", "notes.txt"]

    data = tmp_path / "data"
    assert batchmask("data", "build", "--unmasked", unmasked, "--masked", masked, "--out", data, "-q").returncode == 0
    (data / "notes.txt").write_text("keep")  # a file of the user's, then listed as if it were a crop
    (data / "train").mkdir(exist_ok=True)
    (data / "train" / "photo.jpg").write_text("keep")
    with open(data / "metadata.csv", "a") as f:
        f.write("notes.txt\ntrain/photo.jpg\n")
    r = batchmask("data", "build", "--unmasked", unmasked, "--masked", masked, "--out", data, "-q")
    assert r.returncode == 0, r.stderr
    assert (data / "notes.txt").read_text() == "keep" and (data / "train" / "photo.jpg").read_text() == "keep"


def test_data_build_and_crop_evaluation_name_unreadable_and_unwritable_folders(tmp_path, build_inputs):
    unmasked, masked = build_inputs
    locked(unmasked / "private")
    data = tmp_path / "data"
    # every input is the astronaut photo, one group of near-duplicates: a seed that puts it in the test split
    group = min(group_key("masked", p.name) for p in masked.iterdir())
    seed = next(s for s in range(100) if assign_split(group, s) == "test")
    r = batchmask_unprivileged("data", "build", "--unmasked", unmasked, "--masked", masked, "--out", data, "-q", "--seed", str(seed))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "cannot read folder" in r.stderr, r.stderr  # counted among the files without a crop

    r = batchmask_unprivileged("data", "build", "--unmasked", unmasked, "--masked", masked, "--out", locked(tmp_path / "closed") / "data", "-q")
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr and "Permission denied" in r.stderr, r.stderr
    # an earlier build the user may read but not write: refused before any photo is looked at, the build left as it was
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    os.chmod(data, 0o555)
    r = batchmask_unprivileged("data", "build", "--unmasked", unmasked, "--masked", masked, "--out", data, "-q", "--seed", str(seed))
    os.chmod(data, 0o755)
    assert r.returncode == 1 and "cannot write" in r.stderr and "no face crops" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before

    locked(data / "test" / "masked" / "more")
    r = batchmask_unprivileged("evaluate", data, "--crops", "--out", tmp_path / "report", "-q")
    assert r.returncode == 3 and "skipped masked/more/: cannot read folder (Permission denied)" in r.stderr.replace("\n", " "), r.stderr
    r = batchmask_unprivileged("evaluate", data, "--crops", "--out", tmp_path / "closed" / "report")
    assert r.returncode in (1, 2) and "Permission denied" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # run and watch with an OUTPUT or INPUT they may not enter: one line, no traceback
    for args in (("run", masked, tmp_path / "closed" / "out", "-q"), ("run", tmp_path / "closed" / "in", tmp_path / "out", "-q"),
                 ("watch", masked, tmp_path / "closed" / "out")):
        r = batchmask_unprivileged(*args, timeout=60)
        assert r.returncode in (1, 2) and "ermission denied" in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_a_build_without_any_masked_crop_is_written_but_exits_2(tmp_path, build_inputs):
    unmasked, _ = build_inputs
    fakes = tmp_path / "in" / "fakes"
    fakes.mkdir()
    (fakes / "mask.jpg").write_bytes(b"not a photo")
    r = batchmask("data", "build", "--unmasked", unmasked, "--masked", fakes, "--mask-share", "0", "--out", tmp_path / "data", "-q")
    assert r.returncode == 2 and "the build holds no masked crops, and train needs both" in r.stderr.replace("\n", " "), r.stderr
    assert (tmp_path / "data" / "summary.json").is_file() and "not a recognised image format: 1" in r.stderr
