import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image, ImageOps

from batchmask.evaluation.groundtruth import GroundTruthError, load_ground_truth
from batchmask.evaluation.metrics import Prediction, average_precision, compute_metrics
from batchmask.models import default_classifier_dir
from conftest import SAMPLES, SHARED_DATA, batchmask, needs_shared


def test_csv_ground_truth_and_errors_name_the_line(tmp_path):
    good = tmp_path / "gt.csv"
    good.write_text("image,x1,y1,x2,y2,label\na.jpg,0,0,10,10,masked\na.jpg,20,0,30,10,without_mask\n")
    assert load_ground_truth(good) == {"a.jpg": [([0, 0, 10, 10], "masked"), ([20, 0, 30, 10], "unmasked")]}
    bad = tmp_path / "bad.csv"
    bad.write_text("image,x1,y1,x2,y2,label\na.jpg,0,0,10,10,masked\nb.jpg,5,5,1,1,masked\n")
    with pytest.raises(GroundTruthError, match=r"bad.csv:3: box must have x2 > x1"):
        load_ground_truth(bad)
    bad.write_text("image,x1,y1,x2,y2,label\na.jpg,0,0,10,10,hat\n")
    with pytest.raises(GroundTruthError, match=r"bad.csv:2: unknown label 'hat'"):
        load_ground_truth(bad)
    bad.write_text("image,x1,y1,label\n")
    with pytest.raises(GroundTruthError, match="missing column"):
        load_ground_truth(bad)
    good.write_text("IMAGE,X1,Y1,X2,Y2,Label\na.jpg,0,0,10,10,masked\nempty.jpg,,,,,\n")  # a photo annotated with no face
    assert load_ground_truth(good) == {"a.jpg": [([0, 0, 10, 10], "masked")], "empty.jpg": []}


@pytest.mark.parametrize("body, message", [
    ("image,x1,y1,x2,y2,label\na.jpg,0,0,10,10,masked\n\n\nb.jpg,0,0,10,10,hat\n", r"bad.csv:5: unknown label 'hat'"),
    ("image,x1,y1,x2,y2,label\na.jpg\n", r"bad.csv:2: 1 fields, the header has 6"),
    ("image,x1,y1,x2,y2,label\na.jpg,0,0,10,10,masked,extra\n", r"bad.csv:2: 7 fields"),
    ("image,x1,y1,x2,y2,label\na.jpg,0,0,inf,10,masked\n", r"bad.csv:2: box coordinates must be finite numbers"),
    ("image,x1,y1,x2,y2,label,label\na.jpg,0,0,10,10,masked,unmasked\n", r"bad.csv:1: column\(s\) label appear more than once"),
    ("image,x1,y1,x2,y2,label\n", r"bad.csv: no annotated faces"),
    ("", r"bad.csv: empty file"),
    ("image,x1,y1,x2,y2,label\na.jpg,0,0,10,10,masked\nb.jpg,1,1,5,5,masked\na.jpg,0,0,10,10,unmasked\n",
     r"bad.csv:4: the same box of 'a.jpg' is on line 2 already"),
    ("image;x1;y1;x2;y2;label\na.jpg;0;0;10;10;masked\n", r"bad.csv:1: fields separated by ';'"),
    ('image,x1,y1,x2,y2,label\n"a.jpg,0,0,10,10,masked\nb.jpg,0,0,10,10,masked\n', r"bad.csv:2-3: 1 fields"),  # the quote opens on line 2
])
def test_csv_ground_truth_rejects_malformed_rows_by_physical_line(tmp_path, body, message):
    bad = tmp_path / "bad.csv"
    bad.write_text(body)
    with pytest.raises(GroundTruthError, match=message):
        load_ground_truth(bad)


def test_ground_truth_that_is_not_utf8_names_the_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes("image,x1,y1,x2,y2,label\na.jpg,0,0,10,10,masked\ncaf\u00e9.jpg,0,0,10,10,masked\n".encode("latin-1"))
    with pytest.raises(GroundTruthError, match=r"bad.csv:3: not UTF-8"):
        load_ground_truth(bad)


@pytest.mark.parametrize("change, message", [
    ({"annotations": [{"image_id": 1, "category_id": 9, "bbox": [1, 2, 10, 10]}]}, r"annotations\[0\]: category_id 9 is not in 'categories'"),
    ({"annotations": [{"image_id": 5, "category_id": 7, "bbox": [1, 2, 10, 10]}]}, r"annotations\[0\]: image_id 5 is not in 'images'"),
    ({"annotations": [{"image_id": 1, "category_id": 7, "bbox": ["107", "1", "88", "75"]}]}, r"annotations\[0\]: bbox must be 4 numbers"),
    ({"annotations": [{"image_id": 1, "category_id": 7, "bbox": [1, 2, 10]}]}, r"annotations\[0\]: bbox must be 4 numbers"),
    ({"annotations": [{"image_id": 1, "category_id": 7}]}, r"annotations\[0\]: bbox must be 4 numbers"),
    ({"annotations": [{"image_id": 1, "category_id": 7, "bbox": [True, 2, 10, 10]}]}, r"annotations\[0\]: bbox must be 4 numbers"),
    ({"categories": None}, r"not COCO detection JSON"),
    ({"annotations": [{"image_id": [1], "category_id": 7, "bbox": [1, 2, 10, 10]}]}, r"annotations\[0\]: image_id \[1\] is not in 'images'"),
    ({"images": [{"id": {"a": 1}, "file_name": "a.jpg"}]}, r"images\[0\]: needs an 'id'"),
    ({"categories": [{"id": 7, "name": "with_mask"}, {"id": 7, "name": "without_mask"}]}, r"categories\[1\]: id 7 is already the id of 'with_mask'"),
    ({"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}]}, r"images\[1\]: id 1 is already the id of 'a.jpg'"),
    ({"images": [{"id": "1", "file_name": "a.jpg"}]}, r"image_id 1 is not in 'images' \(ids are compared as written"),
])
def test_coco_errors_name_the_annotation(tmp_path, change, message):
    data = {"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 7, "name": "with_mask"}],
            "annotations": [{"image_id": 1, "category_id": 7, "bbox": [1, 2, 10, 10]}]}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**data, **change}))
    with pytest.raises(GroundTruthError, match=message):
        load_ground_truth(bad)


def test_voc_single_file_and_duplicate_images(tmp_path):
    one = tmp_path / "a.xml"
    one.write_text("<annotation><filename>a.jpg</filename><object><name>with_mask</name>"
                   "<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>11</xmax><ymax>12</ymax></bndbox></object></annotation>")
    assert load_ground_truth(one) == {"a.jpg": [([1, 2, 11, 12], "masked")]}
    (tmp_path / "b.xml").write_text(one.read_text())
    with pytest.raises(GroundTruthError, match=r"b.xml: image 'a.jpg' is already annotated by .*a.xml"):
        load_ground_truth(tmp_path)
    (tmp_path / "b.xml").write_text("<svg/>")
    with pytest.raises(GroundTruthError, match=r"b.xml: not a PASCAL VOC annotation"):
        load_ground_truth(tmp_path)
    (tmp_path / "b.xml").unlink()
    (tmp_path / "folder.xml").mkdir()  # a folder with an .xml name is not an annotation file
    assert load_ground_truth(tmp_path) == {"a.jpg": [([1, 2, 11, 12], "masked")]}


def test_voc_and_coco_ground_truth(tmp_path):
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><object><name>mask_weared_incorrect</name>"
        "<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>11</xmax><ymax>12</ymax></bndbox></object></annotation>"
    )
    assert load_ground_truth(voc) == {"a.jpg": [([1, 2, 11, 12], "incorrect")]}
    coco = tmp_path / "c.json"
    coco.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
        "categories": [{"id": 7, "name": "with_mask"}],
        "annotations": [{"image_id": 1, "category_id": 7, "bbox": [1, 2, 10, 10]}],
    }))
    assert load_ground_truth(coco) == {"a.jpg": [([1, 2, 11, 12], "masked")], "b.jpg": []}
    (voc / "b.xml").write_text("<annotation><object>")
    with pytest.raises(GroundTruthError, match="invalid XML"):
        load_ground_truth(voc)


def test_metrics_on_a_known_case():
    gt = {
        "a.jpg": [([0, 0, 40, 40], "masked"), ([100, 0, 140, 40], "unmasked"), ([200, 0, 240, 40], "unmasked")],
        "b.jpg": [([0, 0, 40, 40], "incorrect"), ([50, 50, 60, 60], "masked")],
    }
    preds = {
        "a.jpg": [
            Prediction([1, 1, 40, 40], 0.99, 0.9),  # masked, right
            Prediction([100, 0, 140, 41], 0.98, 0.8),  # unmasked, called masked: wrong
            Prediction([300, 0, 340, 40], 0.6, 0.1),  # false detection, flagged unmasked
        ],
        "b.jpg": [Prediction([0, 0, 40, 40], 0.9, 0.2)],  # incorrect labelled unmasked
    }
    m = compute_metrics(gt, preds, threshold=0.5, min_width=16)
    assert 0.63 in [s["threshold"] for s in compute_metrics(gt, preds, threshold=0.63)["threshold_sweep"]]  # off the grid, still swept
    t = m["table"]
    assert t["masked"] == {"ground_truth": 1, "identified_correct": 1, "identified_wrong": 0, "not_identified": 0}
    assert t["unmasked"] == {"ground_truth": 2, "identified_correct": 0, "identified_wrong": 1, "not_identified": 1}
    assert t["incorrect"]["labelled_unmasked"] == 1
    assert m["tnr"] == 0.0 and m["fnr"] == 0.0
    assert m["recall_all_sizes"] == pytest.approx(3 / 5) and m["recall"] == pytest.approx(3 / 4)
    assert m["false_detections"] == 1 and m["false_detections_flagged_unmasked"] == 1
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall_by_width"]["<16"] == {"faces": 1, "found": 0, "recall": 0.0}


def test_three_label_confusion_and_rates():
    gt = {"a.jpg": [([0, 0, 40, 40], "masked"), ([50, 0, 90, 40], "incorrect"), ([100, 0, 140, 40], "incorrect"),
                    ([150, 0, 190, 40], "unmasked"), ([200, 0, 240, 40], "incorrect")]}
    preds = {"a.jpg": [
        Prediction([0, 0, 40, 40], 0.9, 0.6, 0.3),  # masked -> masked
        Prediction([50, 0, 90, 40], 0.9, 0.2, 0.7),  # incorrect -> incorrect
        Prediction([100, 0, 140, 40], 0.9, 0.7, 0.2),  # incorrect -> masked
        Prediction([150, 0, 190, 40], 0.9, 0.1, 0.5),  # unmasked -> incorrect (0.5 > 0.4)
    ]}  # the fifth face is missed: left out of the matrix, counted as not identified in the seed table
    m = compute_metrics(gt, preds, threshold=0.5, min_width=16)
    t = m["three_labels"]
    assert t["confusion"] == [[1, 0, 0], [1, 1, 0], [0, 1, 0]]
    assert t["incorrect_labelled_incorrect"] == 0.5 and t["incorrect_labelled_noncompliant"] == 0.5
    assert t["noncompliant_recall"] == pytest.approx(2 / 3) and t["masked_labelled_incorrect"] == 0.0
    assert t["precision"]["incorrect"] == 0.5
    row = m["table"]["incorrect"]
    assert (row["labelled_masked"], row["labelled_incorrect"], row["labelled_unmasked"], row["not_identified"]) == (1, 1, 0, 1)
    assert m["tnr"] == 1.0  # an unmasked face labelled incorrect is still caught (not labelled masked)
    two = compute_metrics(gt, {"a.jpg": [Prediction(p.box, p.det_score, p.mask_score) for p in preds["a.jpg"]]}, 0.5)
    assert two["three_labels"] is None


def test_average_precision():
    assert average_precision(np.array([0.9, 0.8]), np.array([True, True]), 2) == pytest.approx(1.0)
    assert average_precision(np.array([0.9, 0.8]), np.array([False, True]), 2) == pytest.approx(0.25)


@needs_shared
def test_evaluate_command_on_the_webcam_set_and_on_peer_predictions(tmp_path):
    pytest.importorskip("matplotlib", reason="evaluate needs the 'eval' extra")
    webcam = SHARED_DATA / "formatcom_webcam"
    out = tmp_path / "report"
    r = batchmask("evaluate", webcam / "images", "--boxes", webcam / "boxes.csv", "--out", out, "-q")
    assert r.returncode == 0, r.stderr
    for name in ("report.md", "report.html", "metrics.json", "roc.png", "recall_by_width.png", "threshold_sweep.png"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["images"] == 61 and m["faces"]["all"] == 63
    assert m["recall"] > 0.85 and m["tnr"] > 0.7 and m["fnr"] < 0.2
    assert "identified and classified correctly" in (out / "report.md").read_text()
    assert "data:image/png;base64," in (out / "report.html").read_text()

    # our own faces.jsonl scored as predictions gives the same figures
    again = tmp_path / "again"
    r = batchmask("evaluate", webcam / "images", "--boxes", webcam / "boxes.csv", "--out", again,
                  "--predictions", out / "run" / "faces.jsonl", "--threshold", str(m["threshold"]), "-q")
    assert r.returncode == 0, r.stderr
    m2 = json.loads((again / "metrics.json").read_text())
    assert (m2["tnr"], m2["fnr"], m2["recall"]) == (m["tnr"], m["fnr"], m["recall"])
    assert "no line in" not in r.stderr  # photos without a face have no line in faces.jsonl: images.csv beside it lists them
    r = batchmask("evaluate", webcam / "images", "--boxes", webcam / "boxes.csv", "--out", tmp_path / "own",
                  "--predictions", out / "run" / "faces.jsonl")  # no --threshold: the one its rows were labelled at
    m3 = json.loads((tmp_path / "own" / "metrics.json").read_text())
    assert r.returncode == 0 and f"threshold {m['threshold']:.2f}: the one the rows of faces.jsonl were labelled at" in r.stderr, r.stderr
    assert (m3["threshold"], m3["tnr"], m3["fnr"]) == (m["threshold"], m["tnr"], m["fnr"])


def test_evaluate_rejects_bad_inputs(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(SAMPLES / "astronaut.jpg", photos / "a.jpg")
    gt = tmp_path / "gt.csv"
    gt.write_text("image,x1,y1,x2,y2,label\na.jpg,0,0,x,10,masked\n")
    r = batchmask("evaluate", photos, "--boxes", gt, "--out", tmp_path / "r")
    assert r.returncode == 2 and "gt.csv:2: box coordinates must be finite numbers" in r.stderr
    r = batchmask("evaluate", tmp_path / "nope", "--boxes", gt, "--out", tmp_path / "r")
    assert r.returncode == 2 and "images folder not found" in r.stderr
    gt.write_text("image,x1,y1,x2,y2,label\na.jpg,0,0,10,10,masked\ngone.jpg,0,0,10,10,masked\n")
    r = batchmask("evaluate", tmp_path, "--boxes", gt, "--out", tmp_path / "r")
    assert r.returncode == 2 and "none of the 2 photos named in" in r.stderr and "'a.jpg'" in r.stderr
    (tmp_path / "file").write_text("")
    r = batchmask("evaluate", photos, "--boxes", gt, "--out", tmp_path / "file")
    assert r.returncode == 2 and "--out must be a folder" in r.stderr
    r = batchmask("evaluate", photos, "--boxes", gt, "--out", tmp_path / "r", "--model", tmp_path / "nomodel")
    assert r.returncode == 2 and "model directory not found" in r.stderr
    (tmp_path / "nomodel").mkdir()
    r = batchmask("evaluate", photos, "--boxes", gt, "--out", tmp_path / "r", "--model", tmp_path / "nomodel")
    assert r.returncode == 2 and "not a model directory (no model.json)" in r.stderr
    preds = tmp_path / "p.jsonl"
    for line, message in [
        ('{"image": "a.jpg", "x1": 1}', "p.jsonl:1: not a prediction line"),
        ('{"image": "a.jpg", "faces": [{"box": [1, 2, 3], "det_score": 0.9}]}', "p.jsonl:1: not a prediction line (ValueError: box must be 4 numbers"),
        ('{"image": "a.jpg", "x1": 1, "y1": 1, "x2": NaN, "y2": 5, "det_score": 0.9}', "box coordinate must be finite"),
        ('{"image": "a.jpg", "x1": 1, "y1": 1, "x2": 5, "y2": 5, "det_score": 0.9, "mask_score": 7}', "mask score must be within 0..1"),
        ('{"image": "a.jpg", "x1": 1, "y1": 1, "x2": 5, "y2": 5, "det_score": 0.9}', "p.jsonl:1: not a prediction line (ValueError: no mask score"),
        ('{"image": "a.jpg", "faces": [{"box": [1, 1, 5, 5], "det_score": 0.9, "mask_prob": null}]}', "no mask score"),
        ('{"image": "a.jpg", "x1": 1, "y1": 1, "x2": 5, "y2": 5, "det_score": 0.9, "mask_score": 0.8, "incorrect_score": 0.5}', "add up to more than 1"),
        ('{"image": "a.jpg", "x1": 1, "y1": 1, "x2": 5, "y2": 5, "det_score": 0.9, "mask_score": 0.8}\n' * 2,
         "p.jsonl:2: the same box of 'a.jpg' was already given on line 1"),
        ("", "no predictions in"),
        ('{"image": "images/a.jpg", "faces": []}', "no image name in"),
        ('{"image": "gone.jpg", "faces": []}', "no image name in"),  # annotated, but not in IMAGES
    ]:
        preds.write_text(line + "\n")
        r = batchmask("evaluate", photos, "--boxes", gt, "--out", tmp_path / "r", "--predictions", preds)
        assert r.returncode == 2 and message in r.stderr, (line, r.stderr)
    preds.write_bytes(b'{"image": "a.jpg", "faces": []}\n{"image": "caf\xe9.jpg", "faces": []}\n')
    r = batchmask("evaluate", photos, "--boxes", gt, "--out", tmp_path / "r", "--predictions", preds)
    assert r.returncode == 2 and "p.jsonl:2: not a prediction line (not UTF-8 text)" in r.stderr


def test_evaluate_reads_names_as_written_and_only_the_annotated_photos(tmp_path):
    pytest.importorskip("matplotlib", reason="evaluate needs the 'eval' extra")
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    shutil.copy(SAMPLES / "masks" / "astronaut_cloth.jpg", photos / "a.jpg")
    ImageOps.mirror(Image.open(SAMPLES / "masks" / "astronaut_cloth.jpg")).save(photos / "sub" / "b.jpg", quality=95)  # not a near-duplicate
    (photos / "notes.jpg").write_bytes(b"")  # not annotated: not a photo of this evaluation
    gt = tmp_path / "gt.csv"
    gt.write_text(f"image,x1,y1,x2,y2,label\n./a.jpg,170,75,280,185,masked\n{photos / 'sub' / 'b.jpg'},232,75,342,185,masked\n")
    out = photos / "report"  # inside IMAGES: its PNGs must not become photos on the next run
    for _ in range(2):
        r = batchmask("evaluate", photos, "--boxes", gt, "--out", out, "-q")
        assert r.returncode == 0, r.stderr
        m = json.loads((out / "metrics.json").read_text())
        assert m["images"] == 2 and m["recall_all_sizes"] == 1.0, m
        assert sorted(row.split(",")[0] for row in (out / "run" / "images.csv").read_text().splitlines()[1:]) == ["a.jpg", "sub/b.jpg"]

    preds = tmp_path / "p.jsonl"
    line = '{"image": "./a.jpg", "faces": [{"box": [170, 75, 280, 185], "det_score": 0.9, "mask_prob": 0.9}]}\n'
    preds.write_bytes(b"\xef\xbb\xbf" + line.encode())  # a byte-order mark, as some editors write
    r = batchmask("evaluate", photos, "--boxes", gt, "--out", tmp_path / "p", "--predictions", preds, "-q")
    assert r.returncode == 0 and json.loads((tmp_path / "p" / "metrics.json").read_text())["table"]["masked"]["identified_correct"] == 1, r.stderr
    # one line a photo: a photo without its line is named (a file cut short looks like photos without faces)
    assert "1 of the 2 annotated photos have no line in" in r.stderr.replace("\n", " ") and "'sub/b.jpg'" in r.stderr, r.stderr
    assert "1 annotated photos absent from it" in (tmp_path / "p" / "report.md").read_text()
    # held-out scoring: the first N names of the ground truth, sorted as calibrate --tuning sorts them, are left out
    # (the absolute path of sub/b.jpg sorts before a.jpg)
    r = batchmask("evaluate", photos, "--boxes", gt, "--out", tmp_path / "h", "--predictions", preds, "--exclude-first", "1", "-q")
    held = json.loads((tmp_path / "h" / "metrics.json").read_text())
    assert r.returncode == 0 and held["images"] == 1 and held["recall_all_sizes"] == 1.0, r.stderr
    assert "the first photo by sorted name (calibration's tuning photos) left out" in (tmp_path / "h" / "report.md").read_text()
    r = batchmask("evaluate", photos, "--boxes", gt, "--out", tmp_path / "h", "--predictions", preds, "--exclude-first", "2")
    assert r.returncode == 2 and "--exclude-first 2 leaves none of the 2 annotated photos" in r.stderr
    # `face` is read as unmasked (AIZOO's convention), with a warning: a plain face-detection set has no mask labels
    faces_gt = tmp_path / "faces.csv"
    faces_gt.write_text("image,x1,y1,x2,y2,label\na.jpg,170,75,280,185,face\n")
    r = batchmask("evaluate", photos, "--boxes", faces_gt, "--out", tmp_path / "f", "--predictions", preds, "-q")
    assert r.returncode == 0 and "1 labelled 'face': read as unmasked" in r.stderr.replace("\n", " "), r.stderr
    assert json.loads((tmp_path / "f" / "metrics.json").read_text())["table"]["unmasked"]["identified_wrong"] == 1
    assert "1 ground-truth box labelled 'face' read as unmasked" in (tmp_path / "f" / "report.md").read_text()
    # only the scored photos' boxes count in the report (the console warning is about the whole file)
    faces_gt.write_text(f"image,x1,y1,x2,y2,label\na.jpg,170,75,280,185,face\n{photos / 'sub' / 'b.jpg'},232,75,342,185,face\n")
    r = batchmask("evaluate", photos, "--boxes", faces_gt, "--out", tmp_path / "f", "--predictions", preds, "-q", "--exclude-first", "1")
    assert r.returncode == 0 and "2 labelled 'face': read as unmasked" in r.stderr.replace("\n", " "), r.stderr
    report = (tmp_path / "f" / "report.md").read_text()
    assert "1 ground-truth box labelled 'face' read as unmasked; the first photo by sorted name" in report, report[:600]
    preds.write_text(line + line)
    r = batchmask("evaluate", photos, "--boxes", gt, "--out", tmp_path / "p", "--predictions", preds, "-q")
    assert r.returncode == 2 and "p.jsonl:2: image 'a.jpg' was already given on line 1" in r.stderr, r.stderr


def test_near_duplicates_of_tuning_photos_are_not_held_out(tmp_path):
    from batchmask.evaluation.tuning_split import load_near_duplicates, tuning_photos

    # the first N by sorted name and, transitively, their near-duplicates
    names = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]
    assert tuning_photos(names, 1, [("e.jpg", "c.jpg"), ("c.jpg", "a.jpg"), ("x.jpg", "b.jpg")]) == (["a.jpg", "c.jpg", "e.jpg"], ["c.jpg", "e.jpg"])
    assert tuning_photos(names, 2, [("d.jpg", "e.jpg")]) == (["a.jpg", "b.jpg"], [])
    bad = tmp_path / "nd.csv"
    for text, message in (("", "empty file"), ("image_a,photo\na,b\n", "nd.csv:1: missing column(s) image_b"),
                          ("image_a,image_b\na.jpg,b.jpg\nc.jpg\n", "nd.csv:3: 1 fields, the header has 2"),
                          ("image_a,image_b\na.jpg,\n", "nd.csv:2: empty image name")):
        bad.write_text(text)
        with pytest.raises(GroundTruthError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_near_duplicates(bad)
    bad.write_text("image_a,image_b,image_a\na,b,c\n")
    with pytest.raises(GroundTruthError, match="nd.csv:1: column.s. image_a appear more than once"):
        load_near_duplicates(bad)
    bad.write_text("Image_A,Image_B\n./a.jpg,b.jpg\n\n")
    assert load_near_duplicates(bad) == [("a.jpg", "b.jpg")]

    pytest.importorskip("matplotlib", reason="evaluate needs the 'eval' extra")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, name in enumerate(("a.jpg", "b.jpg", "c.jpg")):  # three different photos (the predictions say what is in them)
        Image.fromarray((np.random.default_rng(i).random((400, 400, 3)) * 255).astype(np.uint8)).save(photos / name)
    gt_dir = tmp_path / "set"
    gt_dir.mkdir()
    gt = gt_dir / "boxes.csv"
    gt.write_text("image,x1,y1,x2,y2,label\n" + "".join(f"{n},170,75,280,185,masked\n" for n in ("a.jpg", "b.jpg", "c.jpg")))
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(f'{{"image": "{n}", "faces": [{{"box": [170, 75, 280, 185], "det_score": 0.9, "mask_prob": 0.9}}]}}\n'
                             for n in ("a.jpg", "b.jpg", "c.jpg")))

    def held_out(*extra):
        r = batchmask("evaluate", photos, "--boxes", gt, "--out", tmp_path / "h", "--predictions", preds, "--exclude-first", "1", *extra)
        assert r.returncode == 0, r.stderr
        return json.loads((tmp_path / "h" / "metrics.json").read_text()), r.stderr.replace("\n", " ")

    m, said = held_out()
    assert m["images"] == 2 and "near-duplicate pairs: 0 found by comparing the photos; none crosses" in said, said
    assert "near-duplicate" not in m["source"]
    # near_duplicates.csv beside the ground truth is found and said; c.jpg leaves the held-out photos with a.jpg
    (gt_dir / "near_duplicates.csv").write_text("image_a,image_b\nc.jpg,a.jpg\n")
    m, said = held_out()
    assert m["images"] == 1 and "near-duplicate pairs: 1 listed in" in said and "1 photo joins the tuning photos" in said, said
    assert "left out, with 1 near-duplicate of them (listed in near_duplicates.csv or found by comparing the photos: c.jpg)" in m["source"]
    (gt_dir / "near_duplicates.csv").write_text("image_a,image_b\nb.jpg,c.jpg\n")
    m, said = held_out()
    assert m["images"] == 3 - 1 and "none crosses the tuning / held-out boundary" in said
    # with no list, a copy of a tuning photo is found by comparing the photos
    (gt_dir / "near_duplicates.csv").unlink()
    Image.open(photos / "a.jpg").resize((300, 300)).save(photos / "c.jpg", quality=60)
    m, said = held_out()
    assert m["images"] == 1 and "near-duplicate pairs: 1 found by comparing the photos; 1 photo joins" in said, said
    # an explicit file wins; a bad or absent one is an error naming it
    other = tmp_path / "other.csv"
    other.write_text("image_a,image_b\na.jpg,b.jpg\nb.jpg,c.jpg\n")
    r = batchmask("evaluate", photos, "--boxes", gt, "--out", tmp_path / "h", "--predictions", preds, "--exclude-first", "1",
                  "--near-duplicates", other)
    assert r.returncode == 2 and "and the near-duplicates of those photos (listed in other.csv or found by comparing the photos) leave none of the 3" in r.stderr.replace("\n", " "), r.stderr
    other.write_text("image_a,image_b\na.jpg;b.jpg\n")
    r = batchmask("evaluate", photos, "--boxes", gt, "--out", tmp_path / "h", "--predictions", preds, "--exclude-first", "1",
                  "--near-duplicates", other)
    assert r.returncode == 2 and "bad near-duplicates file:" in r.stderr and "other.csv:2: 1 fields" in r.stderr.replace("\n", ""), r.stderr
    r = batchmask("evaluate", photos, "--boxes", gt, "--out", tmp_path / "h", "--predictions", preds, "--exclude-first", "1",
                  "--near-duplicates", tmp_path / "nope.csv")
    assert r.returncode == 2 and "near-duplicates file not found" in r.stderr
    r = batchmask("evaluate", photos, "--boxes", gt, "--out", tmp_path / "h", "--predictions", preds, "--exclude-first", "1",
                  "--near-duplicates", tmp_path)
    assert r.returncode == 2 and "near-duplicates file is not a file" in r.stderr
    # a photo may be named by its absolute path in either file
    Image.fromarray((np.random.default_rng(2).random((400, 400, 3)) * 255).astype(np.uint8)).save(photos / "c.jpg")
    other.write_text(f"image_a,image_b\n{photos / 'a.jpg'},b.jpg\n")
    r = batchmask("evaluate", photos, "--boxes", gt, "--out", tmp_path / "h", "--predictions", preds, "--exclude-first", "1",
                  "--near-duplicates", other, "-q")
    assert r.returncode == 0 and "not in" not in r.stderr and "near-duplicate pairs" not in r.stderr  # -q: the summary line only and json.loads((tmp_path / "h" / "metrics.json").read_text())["images"] == 1, r.stderr
    r = batchmask("evaluate", photos, "--boxes", gt, "--out", tmp_path / "h", "--predictions", preds, "-q", "--near-duplicates", other)
    assert r.returncode == 0 and "--near-duplicates is used only with --exclude-first" in r.stderr.replace("\n", " ")


def test_evaluate_redoes_every_row_made_with_other_detector_settings(tmp_path):
    pytest.importorskip("matplotlib", reason="evaluate needs the 'eval' extra")
    photos = tmp_path / "photos"
    photos.mkdir()
    # three photos that are not near-duplicates of each other (--exclude-first would leave those out together)
    cloth = Image.open(SAMPLES / "masks" / "astronaut_cloth.jpg")
    cloth.save(photos / "a.jpg", quality=95)
    ImageOps.mirror(cloth).save(photos / "b.jpg", quality=95)
    wider = Image.new("RGB", (768, 512), (40, 40, 40))
    wider.paste(cloth, (256, 0))
    wider.save(photos / "c.jpg", quality=95)
    face = {"a.jpg": [170, 75, 280, 185], "b.jpg": [232, 75, 342, 185], "c.jpg": [426, 75, 536, 185]}
    gt = tmp_path / "gt.csv"
    gt.write_text("image,x1,y1,x2,y2,label\n" + "".join(f"{n},{','.join(map(str, box))},masked\n" for n, box in face.items()))
    out = tmp_path / "report"

    def last_run(*extra):
        r = batchmask("evaluate", photos, "--boxes", gt, "--out", out, "-q", *extra)
        assert r.returncode == 0, r.stderr
        return json.loads((out / "run" / "runs.jsonl").read_text().splitlines()[-1])

    assert last_run()["counts"]["this_run"]["processed"] == 3
    assert last_run("--fast", "--exclude-first", "1")["counts"]["this_run"]["processed"] == 2  # b and c, with fast settings
    # a.jpg still has the default detector's rows, although the last run was a fast one: all three are redone
    fast = last_run("--fast")
    assert fast["counts"]["this_run"]["processed"] == 3
    assert {row.split(",")[-1] for row in (out / "run" / "images.csv").read_text().splitlines()[1:]} == {fast["run_id"]}
    assert last_run("--fast")["counts"]["this_run"]["processed"] == 0  # nothing stale any more: resumed, not redone

    # a default evaluate killed after committing some rows, not yet swapped in (staged): they count as well
    other = tmp_path / "other"
    assert batchmask("run", photos, other, "-q", "--no-annotate").returncode == 0
    staged = (other / ".batchmask" / "ledger.jsonl").read_text().splitlines()[:1]
    (out / "run" / ".batchmask" / "replacements.jsonl").write_text(staged[0] + "\n")
    with open(out / "run" / "runs.jsonl", "a") as f:
        f.write((other / "runs.jsonl").read_text().splitlines()[-1] + "\n")
    fast = last_run("--fast")
    assert fast["counts"]["this_run"]["processed"] == 3  # a.jpg's staged row is a default detector's: all redone
    assert not (out / "run" / ".batchmask" / "replacements.jsonl").exists()
    assert {row.split(",")[-1] for row in (out / "run" / "images.csv").read_text().splitlines()[1:]} == {fast["run_id"]}

    # predictions for the photos --exclude-first leaves out are not "unknown" photos
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(f'{{"image": "{n}", "faces": [{{"box": {face[n]}, "det_score": 0.9, "mask_prob": 0.9}}]}}\n'
                             for n in ("a.jpg", "b.jpg")))
    r = batchmask("evaluate", photos, "--boxes", gt, "--out", tmp_path / "p", "--predictions", preds, "--exclude-first", "1", "--fast", "-q")
    assert r.returncode == 0 and "not annotated photos" not in r.stderr, r.stderr
    assert "--fast is not used with --predictions" in r.stderr
    preds.write_text('{"image": "a.jpg", "faces": []}\n')
    r = batchmask("evaluate", photos, "--boxes", gt, "--out", tmp_path / "p", "--predictions", preds, "--exclude-first", "1")
    assert r.returncode == 2 and "only has predictions for 1 of the photos --exclude-first leaves out" in r.stderr, r.stderr


def test_evaluate_leaves_out_absent_photos_and_exits_3_on_rejected_ones(tmp_path):
    pytest.importorskip("matplotlib", reason="evaluate needs the 'eval' extra")
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(SAMPLES / "masks" / "astronaut_cloth.jpg", photos / "a.jpg")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")
    gt = tmp_path / "gt.csv"
    gt.write_text("image,x1,y1,x2,y2,label\na.jpg,150,60,350,330,masked\nbroken.jpg,0,0,10,10,masked\ngone.jpg,0,0,10,10,unmasked\n")
    out = tmp_path / "r"
    r = batchmask("evaluate", photos, "--boxes", gt, "--out", out, "-q")
    assert r.returncode == 3, r.stderr
    assert "1 of 3 annotated photos are not in" in r.stderr and "'gone.jpg'" in r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["images"] == 2 and m["left_out_images"] == ["gone.jpg"] and m["faces"]["all"] == 2
    assert "Left out: 1 annotated photos that are not in the photo folder: gone.jpg" in (out / "report.md").read_text()
    assert m["unreadable_images"] == ["broken.jpg"] and "Unreadable: 1 photos could not be read" in (out / "report.md").read_text()
    assert m["boxes_outside_photo"] == 0

    gt.write_text("image,x1,y1,x2,y2,label\na.jpg,150,60,350,330,masked\na.jpg,5000,5000,6000,6000,masked\n")
    r = batchmask("evaluate", photos, "--boxes", gt, "--out", tmp_path / "big", "-q", "--model", default_classifier_dir())
    assert "warning: 1 ground-truth boxes reach beyond their photo" in r.stderr.replace("\n", ""), r.stderr
    assert json.loads((tmp_path / "big" / "metrics.json").read_text())["boxes_outside_photo"] == 1

    # the same REPORT on another photo folder redoes the run instead of reusing its rows
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(photos / "a.jpg", other / "a.jpg")
    r = batchmask("evaluate", other, "--boxes", gt, "--out", out, "-q")
    assert r.returncode == 0, r.stderr
    rows = (out / "run" / "images.csv").read_text()
    assert "broken.jpg" not in rows and json.loads((out / "metrics.json").read_text())["images"] == 1


def test_classifier_only_mode_on_crop_folders(tmp_path):
    from conftest import SAMPLES

    crops = tmp_path / "crops"
    (crops / "masked").mkdir(parents=True)
    (crops / "unmasked").mkdir()
    from PIL import Image

    import batchmask as bm
    from batchmask.classifier import crop_faces

    def save_crop(src, dest):  # the face, framed as the classifier sees it
        rgb = np.asarray(Image.open(src).convert("RGB"))
        Image.fromarray(crop_faces(rgb, bm.detect(rgb).boxes[:1], 128)[0]).save(dest)

    for name in ("astronaut_surgical.jpg", "astronaut_cloth.jpg"):
        save_crop(SAMPLES / "masks" / name, crops / "masked" / name)
    save_crop(SAMPLES / "astronaut.jpg", crops / "unmasked" / "a.jpg")
    (crops / "unmasked" / "broken.jpg").write_bytes(b"nope")
    out = tmp_path / "report"
    r = batchmask("evaluate", crops, "--crops", "--out", out)
    assert r.returncode == 3 and "skipped unmasked/broken.jpg: " in r.stderr, r.stderr  # scored without it, and said so
    m = json.loads((out / "metrics.json").read_text())
    assert m["counts"] == {"masked": 2, "incorrect": 0, "unmasked": 1} and len(m["skipped"]) == 1
    assert m["binary"]["tnr"] == 1.0 and m["binary"]["fnr"] == 0.0  # the samples are easy
    assert "Three labels" in (out / "report.md").read_text()

    r = batchmask("evaluate", crops, "--out", out)
    assert r.returncode == 2 and "--boxes is required" in r.stderr
    r = batchmask("evaluate", tmp_path, "--crops", "--out", out)
    assert r.returncode == 2 and "no masked/, incorrect/ or unmasked/ folder" in r.stderr
    for split in ("train/masked", "val/unmasked"):  # a data build too small for a test split
        (tmp_path / "built" / split).mkdir(parents=True)
    r = batchmask("evaluate", tmp_path / "built", "--crops", "--out", out)
    assert r.returncode == 2 and "without a test split" in r.stderr.replace("\n", " "), r.stderr


def edited_model(folder, **changes):
    """A copy of the shipped classifier at FOLDER, or FOLDER with model.json changed (None removes a key)."""
    if not folder.exists():
        shutil.copytree(default_classifier_dir(), folder)
    meta = json.loads((folder / "model.json").read_text())
    meta.update(changes)
    (folder / "model.json").write_text(json.dumps({k: v for k, v in meta.items() if v is not None}))
    return folder


@needs_shared
def test_evaluate_redoes_the_photos_when_the_crop_margin_changes(tmp_path):
    pytest.importorskip("matplotlib", reason="evaluate needs the 'eval' extra")
    webcam = SHARED_DATA / "formatcom_webcam"
    model = edited_model(tmp_path / "model")
    out = tmp_path / "report"
    args = ("evaluate", webcam / "images", "--boxes", webcam / "boxes.csv", "--out", out, "--model", model, "-q")
    assert batchmask(*args).returncode == 0
    first = [json.loads(line)["mask_score"] for line in open(out / "run" / "faces.jsonl")]
    edited_model(model, crop_margin=1.6)
    assert batchmask(*args).returncode == 0
    run = json.loads((out / "run" / "run.json").read_text())
    assert run["models"]["classifier"]["crop_margin"] == 1.6
    again = [json.loads(line)["mask_score"] for line in open(out / "run" / "faces.jsonl")]
    assert len(again) == len(first) and again != first
    assert json.loads((model / "model.json").read_text())["crop_levels"]  # the shipped model stretches crop levels
    edited_model(model, crop_levels=None)
    assert batchmask(*args).returncode == 0
    assert json.loads((out / "run" / "run.json").read_text())["models"]["classifier"]["crop_levels"] is None
    plain = [json.loads(line)["mask_score"] for line in open(out / "run" / "faces.jsonl")]
    assert len(plain) == len(first) and plain != again


@needs_shared
def test_calibrate_chooses_the_best_tnr_within_the_fnr_limit(tmp_path):
    pytest.importorskip("sklearn", reason="calibrate needs the 'eval' extra")
    webcam = SHARED_DATA / "formatcom_webcam"
    model = edited_model(tmp_path / "model", threshold=0.95, crop_margin=1.6, threshold_choice=None)
    images = tmp_path / "images"
    shutil.copytree(webcam / "images", images)
    first = sorted(load_ground_truth(webcam / "boxes.csv"))[0]
    (images / first).write_bytes(b"not a photo")  # an unreadable photo is left out and named, the rest goes on
    # a near-duplicate of a tuning photo is a tuning photo too (a held-out photo must not be one calibration saw)
    later = sorted(load_ground_truth(webcam / "boxes.csv"))[40]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"image_a,image_b\n{later},{first}\nnot-in-this-set.jpg,{first}\n")
    r = batchmask("calibrate", model, "--images", images, "--boxes", webcam / "boxes.csv", "--tuning", "30", "--max-fnr", "0.1",
                  "--near-duplicates", pairs)
    assert r.returncode == 0, r.stderr
    assert f"skipped {first}" in r.stderr
    said = r.stderr.replace("\n", " ")
    assert "near-duplicate pairs: 2 listed in" in said and "and 0 found by comparing the photos; 1 photo joins the tuning photos" in said, said
    assert "1 photo name in" in said and "'not-in-this-set.jpg'" in said
    meta = json.loads((model / "model.json").read_text())
    choice, sweep = meta["threshold_choice"], meta["threshold_choice"]["sweep"]
    assert choice["tuning_photos"] == (f"first 30 of boxes.csv by sorted name and 1 near-duplicate of them (listed in pairs.csv or found by "
                                       f"comparing the photos: {later}), 30 of them readable")
    assert list(choice["skipped_photos"]) == [first]
    assert len(sweep) == 5 * 2 * 13 and {row["margin"] for row in sweep} == {1.1, 1.15, 1.2, 1.25, 1.3}
    assert {tuple(row["levels"] or ()) for row in sweep} == {(), (1.0, 99.0)}
    chosen = next(row for row in sweep if row["margin"] == meta["crop_margin"] and row["threshold"] == meta["threshold"]
                  and row["levels"] == meta.get("crop_levels"))
    within = [row for row in sweep if row["fnr"] + row["fnr_se"] <= 0.1]
    assert within and chosen in within and chosen["tnr"] == max(row["tnr"] for row in within)
    assert f"threshold {meta['threshold']:.2f}" in r.stderr
    assert ("crop levels stretched" in r.stderr) == ("crop_levels" in meta)
    assert "faces >= 16 px: a choice on under 50 faces of a class is mostly chance" in r.stderr.replace("\n", " ")  # 30 webcam photos
    assert choice["warnings"] and "NaN" not in (model / "model.json").read_text()  # strict JSON

    bad = tmp_path / "gt.csv"
    bad.write_text("image,x1,y1,x2,y2,label\na.jpg,0,0,10,10,hat\n")
    r = batchmask("calibrate", model, "--images", webcam / "images", "--boxes", bad)
    assert r.returncode == 2 and "gt.csv:2" in r.stderr
    r = batchmask("calibrate", tmp_path / "nope", "--images", webcam / "images", "--boxes", webcam / "boxes.csv")
    assert r.returncode == 2 and "not a model directory" in r.stderr
    r = batchmask("calibrate", model, "--images", tmp_path, "--boxes", webcam / "boxes.csv", "--tuning", "3")
    assert r.returncode == 2 and "none of the 3 tuning photos could be read" in r.stderr

    # no operating point within the limit: an error, and model.json is left as it was
    before = (model / "model.json").read_text()
    hard = tmp_path / "hard.csv"
    rows = (webcam / "boxes.csv").read_text().splitlines()
    hard.write_text("\n".join([rows[0]] + [r.replace(",unmasked", ",masked") if r.startswith("10-photo.jpg,") else r for r in rows[1:]]) + "\n")
    r = batchmask("calibrate", model, "--images", webcam / "images", "--boxes", hard, "--tuning", "5", "--max-fnr", "0.05")
    assert r.returncode == 2 and "no crop margin and threshold keeps FNR + 1 SE within 0.05" in r.stderr, r.stderr
    assert (model / "model.json").read_text() == before
    r = batchmask("calibrate", model, "--images", webcam / "images", "--boxes", hard, "--tuning", "1")
    assert r.returncode == 2 and "no unmasked face" in r.stderr, r.stderr

    # a model that calls every face masked (FNR 0, TNR 0 at every threshold) is refused, unless asked for
    pytest.importorskip("onnx", reason="the blind test model is written with onnx (the 'train' extra)")
    from test_ensemble import tiny_classifier

    blind = tiny_classifier(tmp_path / "blind", [[0.1, 0, 0]] * 3, opset=17)  # P(masked) ~ 1 for any crop
    before = (blind / "model.json").read_text()
    r = batchmask("calibrate", blind, "--images", webcam / "images", "--boxes", webcam / "boxes.csv", "--tuning", "12", "-q")
    assert r.returncode == 2 and "catches only 0% of the unmasked tuning faces, under --min-tnr 0.5" in r.stderr.replace("\n", " "), r.stderr
    assert (blind / "model.json").read_text() == before
    r = batchmask("calibrate", blind, "--images", webcam / "images", "--boxes", webcam / "boxes.csv", "--tuning", "12", "-q", "--min-tnr", "0")
    assert r.returncode == 0 and "catches only 0%" in r.stderr.replace("\n", " "), r.stderr


def test_commands_without_their_extra_fail_at_once(tmp_path):
    # an install without scikit-learn and TensorFlow, as `pip install .` gives: sitecustomize hides them
    (tmp_path / "hide").mkdir()
    (tmp_path / "hide" / "sitecustomize.py").write_text("import sys\nsys.modules['sklearn'] = sys.modules['tensorflow'] = None\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "hide")}
    gt = tmp_path / "gt.csv"
    gt.write_text("image,x1,y1,x2,y2,label\nastronaut.jpg,170,60,280,190,unmasked\n")
    r = batchmask("evaluate", SAMPLES, "--boxes", gt, "--out", tmp_path / "report", env=env)
    assert r.returncode == 1 and "evaluate needs the 'eval' extra" in r.stderr and "sklearn not installed" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "report").exists()
    r = batchmask("calibrate", edited_model(tmp_path / "model"), "--images", SAMPLES, "--boxes", gt, env=env)
    assert r.returncode == 1 and "calibrate needs the 'eval' extra" in r.stderr
    (tmp_path / "crops" / "masked").mkdir(parents=True)
    r = batchmask("train", tmp_path / "crops", "--out", tmp_path / "m", env=env)
    assert r.returncode == 1 and "train needs the 'train' extra" in r.stderr and "tensorflow not installed" in r.stderr


def test_calibration_scores_stay_with_their_faces_when_the_reported_order_differs():
    """`reported` re-sorts faces; the calibration sweep must keep each face's own mask score."""
    from PIL import Image

    from batchmask.evaluation.operating_point import classified_at_margin
    from batchmask.faces import Faces
    from batchmask.models import default_detector_path
    from batchmask.worker import Worker, WorkerConfig
    from conftest import astronaut

    worker = Worker(WorkerConfig(str(default_detector_path()), str(default_classifier_dir())))
    masked = np.asarray(Image.open(SAMPLES / "masks" / "astronaut_surgical.jpg").convert("RGB"))
    img = np.ascontiguousarray(np.hstack([astronaut(), masked]))
    # unmasked face on the left (raw top 40), masked on the right (raw top 45, but shorter: reported top higher)
    raw = Faces(np.array([[170, 40, 290, 240], [682, 45, 792, 165]], float), np.array([0.99, 0.9]), np.zeros((2, 5, 2)))
    shown = classified_at_margin(worker, img, raw, worker.classifier.margin, worker.classifier.levels)
    assert list(shown.det_scores.round(2)) == [0.9, 0.99]  # the reported order differs from the raw order
    alone = [worker.classifier.predict(img, raw.boxes[i : i + 1])[0, 0] for i in (1, 0)]
    assert np.allclose(shown.mask_scores, alone, atol=1e-5)
    assert shown.mask_scores[0] > shown.mask_scores[1]


def test_stretched_levels_brighten_a_dark_crop_and_keep_its_hues():
    from batchmask.classifier import stretch_levels

    rng = np.random.default_rng(0)
    dark = (rng.random((2, 96, 96, 3)) * [40, 30, 20] + 10).astype(np.uint8)  # dim, warm
    flat = np.full((1, 96, 96, 3), 90, np.uint8)
    out = stretch_levels(np.concatenate([dark, flat]))
    assert out.dtype == np.uint8 and out.shape == (3, 96, 96, 3)
    luma = out[:2].astype(float) @ [0.299, 0.587, 0.114]
    assert np.percentile(luma, 1) < 16 and np.percentile(luma, 99) > 235  # the crop spans the range now (was 15..40)
    means = out[:2].reshape(2, -1, 3).mean(1)
    assert (means[:, 0] > means[:, 1]).all() and (means[:, 1] > means[:, 2]).all()  # still warm: one gain for all channels
    assert (out[2] == 90).all()  # nothing to stretch in a flat crop
    assert stretch_levels(np.zeros((0, 96, 96, 3), np.uint8)).shape == (0, 96, 96, 3)


def test_a_model_with_crop_levels_classifies_stretched_crops(tmp_path):
    from batchmask.classifier import MaskClassifier, stretch_levels
    from batchmask.models import ModelError

    crops = (np.random.default_rng(1).random((3, 96, 96, 3)) * 60).astype(np.uint8)
    plain = MaskClassifier(edited_model(tmp_path / "plain", crop_levels=None))
    levelled = MaskClassifier(edited_model(tmp_path / "levels", crop_levels=[1, 99]))
    assert levelled.levels == (1.0, 99.0) and plain.levels is None
    assert np.allclose(levelled.predict_crops(crops), plain.predict_crops(stretch_levels(crops)), atol=1e-6)
    assert not np.allclose(levelled.predict_crops(crops), plain.predict_crops(crops), atol=1e-3)
    for bad in ("yes", [99, 1], [5]):
        with pytest.raises(ModelError, match="crop_levels must be two percentiles"):
            MaskClassifier(edited_model(tmp_path / "levels", crop_levels=bad))


def test_crop_auc_counts_tied_scores_half():
    from batchmask.evaluation.crops import _roc_auc

    assert _roc_auc(np.array([1, 0]), np.array([0.5, 0.5])) == 0.5
    assert _roc_auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.5, 0.5, 0.1])) == 0.875
    assert np.isnan(_roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_crowd_and_difficult_boxes_are_neither_faces_to_find_nor_false_detections(tmp_path):
    from batchmask.evaluation.metrics import Prediction, compute_metrics

    coco = tmp_path / "c.json"
    coco.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg"}],
        "categories": [{"id": 7, "name": "with_mask"}],
        "annotations": [{"image_id": 1, "category_id": 7, "bbox": [0, 0, 40, 40]},
                        {"image_id": 1, "category_id": 7, "bbox": [100, 0, 200, 60], "iscrowd": 1}],
    }))
    gt = load_ground_truth(coco)
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename>"
        "<object><name>with_mask</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>40</xmax><ymax>40</ymax></bndbox></object>"
        "<object><name>with_mask</name><difficult>1</difficult><bndbox><xmin>100</xmin><ymin>0</ymin><xmax>300</xmax><ymax>60</ymax></bndbox></object>"
        "</annotation>")
    for truth in (gt, load_ground_truth(voc)):
        preds = {"a.jpg": [Prediction([0, 0, 40, 40], 0.9, 0.9), Prediction([110, 5, 150, 50], 0.8, 0.9),  # a face of the crowd
                           Prediction([400, 0, 440, 40], 0.7, 0.9)]}  # a real false detection
        m = compute_metrics(truth, preds, 0.5)
        assert m["faces"]["all"] == 1 and m["recall"] == 1.0 and m["false_detections"] == 1 and m["predictions"] == 2, m
    only_crowd = tmp_path / "crowd.json"
    only_crowd.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 7, "name": "with_mask"}],
                                      "annotations": [{"image_id": 1, "category_id": 7, "bbox": [0, 0, 9, 9], "iscrowd": 1}]}))
    with pytest.raises(GroundTruthError, match="no annotated faces"):
        load_ground_truth(only_crowd)


def test_face_labels_are_counted_for_the_warning_unless_the_box_is_ignored(tmp_path):
    from batchmask.evaluation.groundtruth import ambiguous_label_warning

    coco = tmp_path / "c.json"
    coco.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "FACE"}],
        "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40]},
                        {"image_id": 1, "category_id": 1, "bbox": [100, 0, 200, 60], "iscrowd": 1}]}))
    voc = tmp_path / "a.xml"
    voc.write_text("<annotation><filename>a.jpg</filename>"
                   "<object><name>face</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>40</xmax><ymax>40</ymax></bndbox></object>"
                   "<object><name>face</name><difficult>1</difficult><bndbox><xmin>100</xmin><ymin>0</ymin><xmax>300</xmax><ymax>60</ymax></bndbox></object>"
                   "</annotation>")
    csv_gt = tmp_path / "g.csv"
    csv_gt.write_text("image,x1,y1,x2,y2,label\na.jpg,0,0,40,40, Face \na.jpg,50,0,90,40,masked\n")
    for path in (coco, voc, csv_gt):
        counts: dict = {}
        gt = load_ground_truth(path, counts)
        assert counts == {"face": {"a.jpg": 1}} and gt["a.jpg"][0][1] == "unmasked", (path, counts)
        assert ambiguous_label_warning(counts).startswith("1 labelled 'face': read as unmasked")
    assert ambiguous_label_warning({}) is None
