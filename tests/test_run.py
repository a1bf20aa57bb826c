"""`batchmask run` end to end, in subprocesses, on real files."""

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from batchmask.sinks import FACE_COLUMNS, IMAGE_COLUMNS
from batchmask.models import default_classifier_dir
from conftest import SAMPLES, batchmask

EXIT_PARTIAL = 3


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_run_writes_every_output_and_lists_every_input_once(photo_tree, tmp_path):
    out = tmp_path / "out"
    r = batchmask("run", photo_tree, out, "--workers", "2", "--quiet")
    assert r.returncode == EXIT_PARTIAL, r.stderr
    assert "Traceback" not in r.stderr
    images = {row["image"]: row for row in rows(out / "images.csv")}
    assert set(images) == {
        "astronaut.jpg", "cam1/surgical.JPG", "cam1/cloth.png", "cam1/day2/cat.jpeg", "cam1/day2/small.webp",
        "broken/empty.jpg", "broken/truncated.jpg", "broken/notes.jpg",
        "cam1/anim.GIF", "cam1/scan.tiff", "cat.bmp",
    }
    assert list(rows(out / "images.csv")[0]) == IMAGE_COLUMNS
    assert images["broken/empty.jpg"]["error"].startswith("empty file")
    assert images["broken/notes.jpg"]["error"] == "not a recognised image format"
    assert images["broken/truncated.jpg"]["status"] == "error"
    assert images["cam1/day2/cat.jpeg"]["status"] == "ok" and images["cam1/day2/cat.jpeg"]["faces"] == "0"

    faces = rows(out / "faces.csv")
    assert list(faces[0]) == FACE_COLUMNS
    by_image = {f["image"]: f for f in faces}
    assert set(by_image) == {"astronaut.jpg", "cam1/surgical.JPG", "cam1/cloth.png", "cam1/day2/small.webp", "cam1/anim.GIF", "cam1/scan.tiff"}
    assert by_image["astronaut.jpg"]["label"] == "unmasked"
    assert by_image["cam1/surgical.JPG"]["label"] == "masked"
    x1, y1, x2, y2 = (float(by_image["astronaut.jpg"][k]) for k in ("x1", "y1", "x2", "y2"))
    assert 150 < x1 < x2 < 300 and 40 < y1 < y2 < 200

    jsonl = [json.loads(line) for line in open(out / "faces.jsonl")]
    assert len(jsonl) == len(faces) and all(len(j["landmarks"]) == 5 for j in jsonl)

    for rel in ("astronaut.jpg", "cam1/surgical.JPG", "cam1/cloth.png", "cam1/day2/cat.jpeg", "cam1/day2/small.webp", "cam1/anim.GIF.png", "cam1/scan.tiff", "cat.bmp"):
        assert (out / "annotated" / rel).is_file(), rel
    assert not (out / "annotated" / "broken" / "empty.jpg").exists()

    run = json.loads((out / "run.json").read_text())
    assert run["counts"]["this_run"]["processed"] == 11 and run["counts"]["this_run"]["errors"] == 3
    assert len(run["models"]["classifier"]["sha256"]) == 64 and run["versions"]["onnxruntime"]
    assert run["exit_code"] == EXIT_PARTIAL


def test_second_run_adds_nothing_and_changed_inputs_replace_their_rows(photo_tree, tmp_path):
    out = tmp_path / "out"
    assert batchmask("run", photo_tree, out, "-q", "--no-annotate").returncode == EXIT_PARTIAL
    before = {name: (out / name).read_bytes() for name in ("faces.csv", "faces.jsonl", "images.csv")}
    r = batchmask("run", photo_tree, out, "-q", "--no-annotate")
    assert r.returncode == EXIT_PARTIAL  # the broken files are still there and still rejected
    assert "0 processed" in r.stderr
    for name, data in before.items():
        assert (out / name).read_bytes() == data, name
    assert not (out / "annotated").exists()

    # a changed photo is redone, its old rows replaced; a repaired file becomes ok
    shutil.copy(SAMPLES / "masks" / "astronaut_surgical.jpg", photo_tree / "astronaut.jpg")
    for bad in (photo_tree / "broken").iterdir():
        bad.unlink()
    r = batchmask("run", photo_tree, out, "-q", "--no-annotate")
    assert r.returncode == 0, r.stderr
    assert "1 processed" in r.stderr
    images = rows(out / "images.csv")
    assert sorted(i["image"] for i in images) == sorted(set(i["image"] for i in images))
    astro = [f for f in rows(out / "faces.csv") if f["image"] == "astronaut.jpg"]
    assert len(astro) == 1 and astro[0]["label"] == "masked"


def test_force_redoes_everything_without_duplicates(photo_tree, tmp_path):
    out = tmp_path / "out"
    batchmask("run", photo_tree, out, "-q", "--no-annotate")
    first = rows(out / "faces.csv")
    r = batchmask("run", photo_tree, out, "-q", "--no-annotate", "--force")
    assert "11 processed" in r.stderr
    again = rows(out / "faces.csv")
    assert len(again) == len(first)
    assert {f["run_id"] for f in again} != {f["run_id"] for f in first}


def _started(cmd: list, out: Path, done: int) -> subprocess.Popen:
    """A run started in its own session, returned once `done` photos of it are in images.csv."""
    before = len(rows(out / "images.csv")) if (out / "images.csv").exists() else 0
    proc = subprocess.Popen([sys.executable, "-m", "batchmask", *map(str, cmd)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    staged = out / ".batchmask" / "replacements.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        redone = len(staged.read_bytes().splitlines()) if staged.exists() else len(rows(out / "images.csv")) - before
        if redone >= done:
            return proc
        time.sleep(0.05)
    pytest.fail("the run ended before it was stopped")


def test_a_stopped_force_keeps_every_row_and_the_same_command_finishes_it(tmp_path):
    """--force replaces rows only as their photos are redone: SIGTERM or kill -9 midway leaves every photo's
    rows (old or new, never both), and `--force` again redoes only the photos the stopped run had not."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(120):  # about 4 s of work on one worker: stopped well before its end
        shutil.copy(SAMPLES / ("astronaut.jpg", "masks/astronaut_surgical.jpg", "chelsea.jpg")[i % 3], src / f"p{i:03d}.jpg")
    out = tmp_path / "out"
    assert batchmask("run", src, out, "-q", "--no-annotate").returncode == 0
    first = rows(out / "images.csv")
    faces = len(rows(out / "faces.csv"))
    cmd = ["run", src, out, "-q", "--no-annotate", "-w", "1", "--force"]

    proc = _started(cmd, out, 6)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 130, proc.stderr.read()
    images = rows(out / "images.csv")
    assert sorted(i["image"] for i in images) == sorted(i["image"] for i in first) and len(rows(out / "faces.csv")) == faces

    # without --force: nothing to do, and the stopped --force is pointed out; the redone rows are in (swapped in at the
    # stop, or by this run's open when the stop came in the middle of a commit)
    r = batchmask("run", src, out, "--no-annotate")
    images = rows(out / "images.csv")
    redone = sum(i["run_id"] != first[0]["run_id"] for i in images)
    assert 6 <= redone < 120 and not (out / ".batchmask" / "replacements.jsonl").exists()
    assert r.returncode == 0 and "0 processed" in r.stderr and f"{120 - redone} photo(s) keep rows from before it" in r.stderr, r.stderr
    assert len(images) == 120 and len(rows(out / "faces.csv")) == faces

    proc = _started(cmd, out, 3)  # finishing it, killed -9 in turn: its staged rows are swapped in by the next open
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(rows(out / "images.csv")) == 120 and len(rows(out / "faces.csv")) == faces
    r = batchmask(*cmd)
    assert r.returncode == 0 and "photo(s) left to redo" in r.stderr, r.stderr
    processed = int(r.stderr.split(" processed")[0].split()[-1])
    assert 0 < processed <= 120 - redone - 3
    images = rows(out / "images.csv")
    assert len(images) == 120 and len(rows(out / "faces.csv")) == faces
    assert not any(i["run_id"] == first[0]["run_id"] for i in images)  # every photo redone, by one of the three --force runs
    assert not (out / ".batchmask" / "force.json").exists()
    again = batchmask(*cmd)  # a --force after a finished one starts over
    assert again.returncode == 0 and "120 processed" in again.stderr


def test_usage_errors_exit_2_without_traceback(tmp_path):
    r = batchmask("run", tmp_path / "missing", tmp_path / "out")
    assert r.returncode == 2 and "input folder not found" in r.stderr and "Traceback" not in r.stderr
    r = batchmask("run", tmp_path, tmp_path / "out", "--workers", "0")
    assert r.returncode == 2
    r = batchmask("run", tmp_path, tmp_path / "out", "--model", tmp_path / "nomodel")
    assert r.returncode == 2 and "model directory not found" in r.stderr
    (tmp_path / "notamodel").mkdir()
    r = batchmask("run", tmp_path, tmp_path / "out", "--model", tmp_path / "notamodel")
    assert r.returncode == 2 and "not a model directory (no model.json)" in r.stderr
    (tmp_path / "out" / "annotated").mkdir(parents=True)
    r = batchmask("run", tmp_path / "out" / "annotated", tmp_path / "out")
    assert r.returncode == 2 and "INPUT must not be OUTPUT/annotated" in r.stderr
    photo = tmp_path / "photo.jpg"
    shutil.copy(SAMPLES / "astronaut.jpg", photo)
    r = batchmask("run", photo, tmp_path / "out2")
    assert r.returncode == 2 and "INPUT is a file, not a folder" in r.stderr and not (tmp_path / "out2").exists()


def test_help_shows_flags_without_a_value_and_options_with_theirs():
    r = batchmask("run", "--help", env={**os.environ, "COLUMNS": "120"})
    assert r.returncode == 0
    lines = {line.split()[1]: line for line in r.stdout.splitlines() if line.startswith("│ --")}
    assert "<" not in lines["--force"] and "<" not in lines["--no-annotate"], r.stdout
    assert "<path>" in lines["--archive"] and "<float" in lines["--timeout"], r.stdout
    from batchmask import __version__

    r = batchmask("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"batchmask {__version__}"


def test_corrupt_model_fails_with_a_clear_message(photo_tree, tmp_path):
    from batchmask.models import default_classifier_dir

    model = tmp_path / "model"
    shutil.copytree(default_classifier_dir(), model)
    with open(model / "model.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    r = batchmask("run", photo_tree, tmp_path / "out", "--model", model, "-q")
    assert r.returncode == 1 and "does not match model.json" in r.stderr and "Traceback" not in r.stderr

    # a value of the wrong kind in model.json is named before any worker starts, and nothing is written
    shutil.copy(default_classifier_dir() / "model.onnx", model / "model.onnx")
    meta = json.loads((model / "model.json").read_text())
    for key, value, message in [("threshold", "high", "'threshold' must be a number from 0 to 1, not 'high'"),
                                ("crop_margin", -1, "'crop_margin' must be a number from 0.5 to 4, not -1"),
                                ("input_size", 9.5, "'input_size' must be a whole number"),
                                ("crop_levels", [99, 1], "crop_levels must be two percentiles")]:
        (model / "model.json").write_text(json.dumps({**meta, key: value}))
        r = batchmask("run", photo_tree, tmp_path / "out2", "--model", model, "-q")
        assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "out2").exists()


def test_repeated_sigkill_then_rerun_loses_and_duplicates_nothing(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(40):
        name = ("astronaut.jpg", "masks/astronaut_surgical.jpg", "chelsea.jpg")[i % 3]
        shutil.copy(SAMPLES / name, src / f"p{i:03d}.jpg")
    reference = tmp_path / "reference"
    assert batchmask("run", src, reference, "-q", "--no-annotate").returncode == 0

    out = tmp_path / "out"
    rng = random.Random(20261126)
    for delay in [rng.uniform(1.5, 4.5) for _ in range(5)]:  # kill the whole process group, repeatedly
        proc = subprocess.Popen(
            [sys.executable, "-m", "batchmask", "run", str(src), str(out), "-q", "--no-annotate"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # even after kill -9, every committed row's run is on record: its settings were written before its first row
    recorded = set()
    for line in open(out / "runs.jsonl", encoding="utf-8") if (out / "runs.jsonl").exists() else []:
        try:
            recorded.add(json.loads(line)["run_id"])
        except ValueError:
            pass  # a record cut short by the kill
    assert {i["run_id"] for i in rows(out / "images.csv")} <= recorded
    # SIGTERM (systemd, docker stop) ends the run with a line a cron log shows, exit 130
    term = tmp_path / "term"
    proc = subprocess.Popen([sys.executable, "-m", "batchmask", "run", str(src), str(term), "-q", "--no-annotate", "-w", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ((term / "images.csv").exists() and rows(term / "images.csv")) and time.monotonic() < deadline:  # rows commit within a second
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 130
    assert "interrupted: rows committed so far are kept" in proc.stderr.read()
    runs = {r["run_id"]: r for r in map(json.loads, open(term / "runs.jsonl"))}  # every row's run_id leads to its settings
    assert {i["run_id"] for i in rows(term / "images.csv")} <= set(runs)
    assert [r["status"] for r in runs.values()] == ["interrupted"]
    r = batchmask("run", src, out, "-q", "--no-annotate")
    assert r.returncode == 0, r.stderr

    def key(f):
        return (f["image"], f["face"], f["x1"], f["y1"], f["x2"], f["y2"], f["label"])

    got, want = rows(out / "faces.csv"), rows(reference / "faces.csv")
    assert sorted(map(key, got)) == sorted(map(key, want))
    assert sorted(i["image"] for i in rows(out / "images.csv")) == sorted(i["image"] for i in rows(reference / "images.csv"))
    assert len([json.loads(x) for x in open(out / "faces.jsonl")]) == len(want)


def test_output_inside_input_is_not_scanned(photo_tree):
    out = photo_tree / "results"
    batchmask("run", photo_tree, out, "-q")
    r = batchmask("run", photo_tree, out, "-q")
    assert "0 processed" in r.stderr
    assert not any(i["image"].startswith("results/") for i in rows(out / "images.csv"))

    # an earlier OUTPUT left inside INPUT is not read as photos by a run into another OUTPUT
    elsewhere = photo_tree.parent / "elsewhere"
    batchmask("run", photo_tree, elsewhere, "-q")
    assert not any(i["image"].startswith("results/") for i in rows(elsewhere / "images.csv"))
    assert {i["image"] for i in rows(elsewhere / "images.csv")} == {i["image"] for i in rows(out / "images.csv")}


def test_a_photo_over_the_time_limit_becomes_an_error_row(tmp_path):
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (8000, 6000), (120, 110, 100)).save(src / "slow.png", compress_level=1)
    shutil.copy(SAMPLES / "chelsea.jpg", src / "quick.jpg")
    out = tmp_path / "out"
    r = batchmask("run", src, out, "-q", "--no-annotate", "--timeout", "0.25", "--workers", "1")
    assert r.returncode == EXIT_PARTIAL, r.stderr
    images = {i["image"]: i for i in rows(out / "images.csv")}
    assert images["slow.png"]["status"] == "error" and images["slow.png"]["error"].startswith("timed out after 0.25 s")
    assert images["quick.jpg"]["status"] == "ok"

    # a time-out says nothing final about the photo: the next run with a longer limit retries it alone
    r = batchmask("run", src, out, "-q", "--no-annotate", "--timeout", "120", "--workers", "1")
    assert r.returncode == 0 and "1 processed" in r.stderr, r.stderr
    images = {i["image"]: i for i in rows(out / "images.csv")}
    assert images["slow.png"]["status"] == "ok" and len(images) == 2


def test_a_second_run_on_the_same_output_is_refused(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(30):
        shutil.copy(SAMPLES / "astronaut.jpg", src / f"p{i:02d}.jpg")
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "batchmask", "run", str(src), str(out), "-q", "--workers", "1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 20
    while not (out / ".batchmask" / "lock.info").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGSTOP)  # held mid-run, so the second start meets it however slowly that start goes
    try:
        t0 = time.time()
        second = batchmask("run", src, out, "-q")
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert second.returncode == 4 and "in use by another batchmask run (pid" in second.stderr
    assert time.time() - t0 < 25  # at once, not after the first run
    assert first.wait(timeout=120) == 0


def test_outputs_never_follow_links_out_of_the_output_folder(photo_tree, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "annotated")
    r = batchmask("run", photo_tree, out, "-q")
    assert r.returncode == 1 and "is a symbolic link" in r.stderr
    assert list(elsewhere.iterdir()) == []


def test_pixel_limit_is_configurable(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(SAMPLES / "astronaut.jpg", src / "a.jpg")
    r = batchmask("run", src, tmp_path / "out", "-q", "--max-pixels", "100000")
    assert r.returncode == EXIT_PARTIAL
    (row,) = rows(tmp_path / "out" / "images.csv")
    assert row["error"] == "image too large: 512x512 pixels exceeds the limit of 100000"


def test_three_labels_by_default_and_two_on_request(tmp_path):
    from batchmask.annotate import COLOURS

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(SAMPLES / "astronaut.jpg", src / "bare.jpg")
    shutil.copy(SAMPLES / "masks" / "astronaut_surgical.jpg", src / "surgical.jpg")
    shutil.copy(SAMPLES / "masks" / "astronaut_under_nose.jpg", src / "under_nose.jpg")
    out = tmp_path / "out"
    assert batchmask("run", src, out, "-q").returncode == 0
    by_image = {f["image"]: f for f in rows(out / "faces.csv")}
    assert {k: v["label"] for k, v in by_image.items()} == {"bare.jpg": "unmasked", "surgical.jpg": "masked", "under_nose.jpg": "incorrect"}
    assert float(by_image["under_nose.jpg"]["incorrect_score"]) > 0.5
    # the box of a mask worn incorrectly is drawn in its own colour
    f = by_image["under_nose.jpg"]
    x1, y1 = int(float(f["x1"])), int(float(f["y1"]))
    y2 = int(float(f["y2"]))
    drawn = np.asarray(Image.open(out / "annotated" / "under_nose.jpg").convert("RGB")).astype(int)
    edge = drawn[(y1 + y2) // 2 - 5:(y1 + y2) // 2 + 5, max(0, x1 - 3):x1 + 4].reshape(-1, 3)
    nearest = {label: np.abs(edge - np.array(rgb)).sum(axis=1).min() for label, rgb in COLOURS.items()}
    assert min(nearest, key=nearest.get) == "incorrect", nearest

    two = tmp_path / "two"
    assert batchmask("run", src, two, "--labels", "2", "-q").returncode == 0
    by_image = {f["image"]: f for f in rows(two / "faces.csv")}
    assert by_image["under_nose.jpg"]["label"] == "unmasked" and by_image["surgical.jpg"]["label"] == "masked"
    assert by_image["under_nose.jpg"]["incorrect_score"] == f["incorrect_score"]


def test_archive_moves_inputs_and_a_reused_name_keeps_both_photos(tmp_path):
    """Cameras reuse file names: with --archive, a new photo under an archived photo's name is another photo."""
    src, out, archive = tmp_path / "in", tmp_path / "out", tmp_path / "archive"
    (src / "cam1").mkdir(parents=True)
    shutil.copy(SAMPLES / "astronaut.jpg", src / "cam1" / "snap.jpg")
    (src / "cam1" / "bad.jpg").write_bytes(b"not a photo")
    whole = (SAMPLES / "astronaut.jpg").read_bytes()
    (src / "cam1" / "uploading.jpg").write_bytes(whole[: len(whole) // 3])  # a copy still under way
    (src / "cam1" / "empty.jpg").write_bytes(b"")
    r = batchmask("run", src, out, "-q", "-w", "1", "--archive", archive)
    assert r.returncode == EXIT_PARTIAL, r.stderr
    assert (archive / "cam1" / "snap.jpg").is_file() and not (src / "cam1" / "snap.jpg").exists()
    assert (archive / "cam1" / "bad.jpg").is_file()  # a final error: the file is moved too
    assert (src / "cam1" / "uploading.jpg").is_file() and (src / "cam1" / "empty.jpg").is_file()  # may still be arriving
    assert not (archive / "cam1" / "uploading.jpg").exists() and not (archive / "cam1" / "empty.jpg").exists()

    (src / "cam1" / "uploading.jpg").write_bytes(whole)  # the copy finishes
    (src / "cam1" / "empty.jpg").unlink()
    shutil.copy(SAMPLES / "masks" / "astronaut_surgical.jpg", src / "cam1" / "snap.jpg")  # another photo, same name
    r = batchmask("run", src, out, "-q", "-w", "1", "--archive", archive)
    assert r.returncode == 0 and "2 processed" in r.stderr, r.stderr
    assert (archive / "cam1" / "uploading.jpg").is_file() and not (src / "cam1" / "uploading.jpg").exists()
    images = {i["image"]: i for i in rows(out / "images.csv")}
    assert set(images) == {"cam1/snap.jpg", "cam1/snap (1).jpg", "cam1/bad.jpg", "cam1/uploading.jpg", "cam1/empty.jpg"}
    assert images["cam1/uploading.jpg"]["status"] == "ok"
    labels = {f["image"]: f["label"] for f in rows(out / "faces.csv")}
    assert labels == {"cam1/snap.jpg": "unmasked", "cam1/snap (1).jpg": "masked", "cam1/uploading.jpg": "unmasked"}
    assert (archive / "cam1" / "snap (1).jpg").is_file() and (out / "annotated" / "cam1" / "snap (1).jpg").is_file()
    assert (out / "annotated" / "cam1" / "snap.jpg").is_file()

    r = batchmask("run", src, out, "-q", "-w", "1", "--archive", archive)
    assert r.returncode == 0 and "0 processed" in r.stderr, r.stderr


def test_an_archive_inside_input_is_never_scanned_again_and_links_follow_their_targets(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(SAMPLES / "astronaut.jpg", src / "good.jpg")
    os.symlink("good.jpg", src / "link.jpg")  # archived after its target: the link is moved all the same
    r = batchmask("run", src, out, "-q", "-w", "1", "--archive", src / "done")
    assert r.returncode == 0 and "could not archive" not in r.stderr, r.stderr
    assert os.path.islink(src / "done" / "link.jpg") and (src / "done" / "good.jpg").is_file()
    assert sorted(os.listdir(src)) == ["done"]
    shutil.copy(SAMPLES / "chelsea.jpg", src / "new.jpg")
    r = batchmask("run", src, out, "-w", "1")  # no --archive this time: done/ holds photos that have rows already
    assert r.returncode == 0 and "1 processed" in r.stderr and "not scanned: done inside INPUT" in r.stderr, r.stderr
    images = {i["image"]: i["status"] for i in rows(out / "images.csv")}
    assert images == {"good.jpg": "ok", "link.jpg": "ok", "new.jpg": "ok"}
    (tmp_path / "afile").write_text("")
    r = batchmask("run", src, tmp_path / "out2", "-q", "--archive", tmp_path / "afile")
    assert r.returncode == 2 and "--archive exists and is not a folder" in r.stderr


def test_force_with_archive_redoes_the_photos_before_moving_them(tmp_path):
    src, out, archive = tmp_path / "in", tmp_path / "out", tmp_path / "arch"
    src.mkdir()
    for name in ("astronaut.jpg", "chelsea.jpg"):
        shutil.copy(SAMPLES / name, src / name)
    assert batchmask("run", src, out, "-q", "--no-annotate").returncode == 0
    first = {i["image"]: i for i in rows(out / "images.csv")}
    r = batchmask("run", src, out, "-q", "--no-annotate", "--force", "--archive", archive)
    assert r.returncode == 0 and "2 processed" in r.stderr, r.stderr
    again = {i["image"]: i for i in rows(out / "images.csv")}
    assert [i["status"] for i in again.values()] == ["ok", "ok"] and all(again[k]["run_id"] != first[k]["run_id"] for k in first)
    assert sorted(os.listdir(archive)) == ["astronaut.jpg", "chelsea.jpg"] and not os.listdir(src)


def test_another_outputs_annotated_copies_as_input_are_announced(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(SAMPLES / "astronaut.jpg", src / "a.jpg")
    assert batchmask("run", src, tmp_path / "out", "-q").returncode == 0
    r = batchmask("run", tmp_path / "out" / "annotated", tmp_path / "again", "-q")
    assert r.returncode == 0 and "INPUT is inside another OUTPUT's annotated copies" in r.stderr.replace("\n", ""), r.stderr
    assert "annotated copies" not in batchmask("run", src, tmp_path / "third", "-q").stderr


def test_fast_mode_is_on_record_and_switching_it_is_announced(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(SAMPLES / "astronaut.jpg", src / "a.jpg")
    r = batchmask("run", src, out, "-q", "-w", "1", "--fast")
    assert r.returncode == 0 and "1 face" in r.stderr, r.stderr
    assert json.loads((out / "run.json").read_text())["config"]["detector"]["scales"] == [0]
    shutil.copy(SAMPLES / "chelsea.jpg", src / "b.jpg")
    r = batchmask("run", src, out, "-q", "-w", "1")
    assert r.returncode == 0, r.stderr
    assert "earlier rows were labelled with other settings (detector fast → default)" in r.stderr
    assert json.loads((out / "run.json").read_text())["config"]["detector"]["scales"] == [0, 960]


def test_changed_labelling_settings_are_announced_and_every_run_is_on_record(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(SAMPLES / "astronaut.jpg", src / "a.jpg")
    assert batchmask("run", src, out, "-q", "-w", "1").returncode == 0
    shutil.copy(SAMPLES / "chelsea.jpg", src / "b.jpg")
    r = batchmask("run", src, out, "-q", "-w", "1", "--threshold", "0.3", "--labels", "2")
    assert r.returncode == 0, r.stderr
    shipped = json.loads((default_classifier_dir() / "model.json").read_text())["threshold"]
    assert f"earlier rows were labelled with other settings (threshold {shipped} → 0.3; labels 3 → 2)" in r.stderr
    records = [json.loads(line) for line in open(out / "runs.jsonl")]
    # a run with photos to do records its settings before its first row, then its final record
    assert [(x["config"]["threshold"], x["status"]) for x in records] == [(shipped, "running"), (shipped, "finished"), (0.3, "running"), (0.3, "finished")]
    assert {i["run_id"] for i in rows(out / "images.csv")} == {x["run_id"] for x in records}
    with open(out / "runs.jsonl", "ab") as f:
        f.write(b'{"run_id": "cut sho')  # a record cut short (disk full, kill)
    r = batchmask("run", src, out, "-q", "-w", "1", "--threshold", "0.3", "--labels", "2")
    assert "other settings" not in r.stderr
    assert json.loads(open(out / "runs.jsonl").read().splitlines()[-1])["config"]["labels"] == 2  # the next record is whole

    # the same classifier file with its crop levels switched off labels differently: also announced
    model = tmp_path / "model"
    shutil.copytree(default_classifier_dir(), model)
    meta = json.loads((model / "model.json").read_text())
    levels = meta.pop("crop_levels")
    (model / "model.json").write_text(json.dumps(meta))
    r = batchmask("run", src, out, "-q", "-w", "1", "--threshold", "0.3", "--labels", "2", "--model", model)
    assert r.returncode == 0, r.stderr
    assert f"classifier crop (margin, levels) ({meta['crop_margin']}, {levels}) → ({meta['crop_margin']}, None)" in r.stderr


def test_inputs_whose_annotated_copies_would_share_a_name_keep_one_copy_each(tmp_path):
    from batchmask.worker import annotated_name

    names = ["x.gif", "x.gif.png", "x.gif.png.png", "x.png", "x.png.png", "x.jfif", "x.jfif.PNG", "y.jpg", "z.avif.jpg"]
    assert len({annotated_name(n) for n in names}) == len(names)
    assert [annotated_name(n) for n in ("x.gif", "x.png", "y.jpg", "x.gif.png")] == ["x.gif.png", "x.png", "y.jpg", "x.gif.png.png"]

    src = tmp_path / "in"
    src.mkdir()
    face = Image.open(SAMPLES / "astronaut.jpg").convert("RGB")
    sizes = {"x.gif": 300, "x.gif.png": 260, "x.gif.png.png": 220}
    for name, side in sizes.items():
        face.resize((side, side)).save(src / name, "GIF" if name.endswith(".gif") else "PNG")
    out = tmp_path / "out"
    assert batchmask("run", src, out, "-q").returncode == 0
    copies = {p.name: Image.open(p).size for p in (out / "annotated").iterdir()}
    assert copies == {annotated_name(n): (side, side) for n, side in sizes.items()}


def test_photos_rejected_as_too_large_are_judged_again_under_another_limit(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(SAMPLES / "astronaut.jpg", src / "a.jpg")
    r = batchmask("run", src, out, "-q", "-w", "1", "--max-pixels", "1000")
    assert r.returncode == EXIT_PARTIAL and "image too large" in (out / "images.csv").read_text(), r.stderr
    r = batchmask("run", src, out, "-q", "-w", "1", "--max-pixels", "1000")
    assert r.returncode == EXIT_PARTIAL and "0 processed" in r.stderr, r.stderr  # same limit: nothing to redo
    r = batchmask("run", src, out, "-q", "-w", "1")
    assert r.returncode == 0 and "1 processed" in r.stderr, r.stderr
    assert [row["status"] for row in rows(out / "images.csv")] == ["ok"]

    # a run killed before it wrote run.json: the limit is the one in the photo's own ledger entry
    shutil.copy(SAMPLES / "chelsea.jpg", src / "b.jpg")
    assert batchmask("run", src, out, "-q", "-w", "1", "--max-pixels", "1000").returncode == EXIT_PARTIAL
    (out / "run.json").unlink()
    r = batchmask("run", src, out, "-q", "-w", "1")
    assert r.returncode == 0 and "1 processed" in r.stderr, r.stderr
    assert [row["status"] for row in rows(out / "images.csv")] == ["ok", "ok"]


def test_input_named_as_a_path_or_a_file_url_is_the_same_input(tmp_path):
    pytest.importorskip("fsspec", reason="URLs need the 'remote' extra")
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(SAMPLES / "astronaut.jpg", src / "a.jpg")
    assert batchmask("run", src, out, "-q", "-w", "1").returncode == 0
    r = batchmask("run", src.as_uri(), out, "-q", "-w", "1")
    assert r.returncode == 0 and "0 processed" in r.stderr and "1 unchanged" in r.stderr, r.stderr


def test_an_input_that_could_not_be_archived_is_named_and_moved_by_the_next_run(tmp_path):
    src, out, blocked = tmp_path / "in", tmp_path / "out", tmp_path / "blocked"
    src.mkdir()
    shutil.copy(SAMPLES / "astronaut.jpg", src / "a.jpg")
    blocked.write_text("a file where the archive's parent folder should be")
    r = batchmask("run", src, out, "-q", "-w", "1", "--archive", blocked / "archive")
    assert r.returncode == EXIT_PARTIAL, r.stderr
    assert "could not archive a.jpg" in r.stderr and "1 not archived" in r.stderr
    assert (src / "a.jpg").is_file() and [i["status"] for i in rows(out / "images.csv")] == ["ok"]
    blocked.unlink()
    r = batchmask("run", src, out, "-q", "-w", "1", "--archive", blocked / "archive")
    assert r.returncode == 0 and "0 processed" in r.stderr, r.stderr
    assert (blocked / "archive" / "a.jpg").is_file() and not (src / "a.jpg").exists()
    assert [i["image"] for i in rows(out / "images.csv")] == ["a.jpg"]


def test_another_input_replacing_rows_of_the_same_names_is_announced(tmp_path):
    cam_a, cam_b, out = tmp_path / "camA", tmp_path / "camB", tmp_path / "out"
    cam_a.mkdir()
    cam_b.mkdir()
    shutil.copy(SAMPLES / "astronaut.jpg", cam_a / "IMG_0001.jpg")
    shutil.copy(SAMPLES / "chelsea.jpg", cam_b / "IMG_0001.jpg")
    shutil.copy(SAMPLES / "chelsea.jpg", cam_b / "IMG_0002.jpg")
    assert batchmask("run", cam_a, out, "-q", "-w", "1").returncode == 0
    r = batchmask("run", cam_b, out, "-q", "-w", "1")
    assert r.returncode == 0 and f"OUTPUT's last run read {cam_a}; 1 photo(s) of {cam_b}" in r.stderr.replace("\n", ""), r.stderr
    r = batchmask("run", cam_a, tmp_path / "out2", "-q", "-w", "1")
    assert "warning" not in r.stderr


def test_an_empty_input_is_announced(tmp_path):
    (tmp_path / "in").mkdir()
    r = batchmask("run", tmp_path / "in", tmp_path / "out", "-q")
    assert r.returncode == 0 and f"warning: no photos in {tmp_path / 'in'}" in r.stderr.replace("\n", ""), r.stderr


def test_a_photo_replaced_by_a_broken_file_loses_its_old_annotated_copy(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(SAMPLES / "astronaut.jpg", src / "a.jpg")
    assert batchmask("run", src, out, "-q", "-w", "1").returncode == 0
    assert (out / "annotated" / "a.jpg").is_file()
    (src / "a.jpg").write_bytes(b"not a photo any more")
    assert batchmask("run", src, out, "-q", "-w", "1").returncode == EXIT_PARTIAL
    assert [r["status"] for r in rows(out / "images.csv")] == ["error"]
    assert not (out / "annotated" / "a.jpg").exists()


def test_a_photo_whose_annotated_copy_cannot_be_named_keeps_its_rows(tmp_path):
    """A GIF's copy gets `.png` appended: at 255 bytes the name is too long. The photo is fine:
    its rows are written (status ok, the reason in `error`), not an error row retried forever."""
    from PIL import Image

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    name = "a" * 251 + ".gif"
    Image.open(SAMPLES / "astronaut.jpg").save(src / name)
    r = batchmask("run", src, out, "-q", "-w", "1")
    assert r.returncode == 0, r.stderr
    (row,) = rows(out / "images.csv")
    assert row["status"] == "ok" and row["faces"] == "1" and row["error"].startswith("annotated copy not written")
    assert batchmask("run", src, out, "-q", "-w", "1").stderr.count("0 processed") == 1
