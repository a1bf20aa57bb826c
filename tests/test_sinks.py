import csv
import json

import pytest

from batchmask.sinks import OutputBusyError, OutputStore, spreadsheet_safe


def entry(name, faces=1, status="ok"):
    face_rows = [
        {"image": name, "face": i, "x1": 1.0, "y1": 2.0, "x2": 3.0, "y2": 4.0, "det_score": 0.9,
         "mask_score": 0.2, "label": "unmasked", "landmarks": [[0, 0]] * 5, "run_id": "r", "detector": "d", "classifier": "c"}
        for i in range(faces)
    ]
    row = {"image": name, "status": status, "faces": faces, "masked": 0, "unmasked": faces, "error": "", "ms": 1.0,
           "width": 10, "height": 10, "run_id": "r"}
    return {"row": row, "faces": face_rows, "signature": [1, 2]}


def read(out):
    faces = list(csv.DictReader(open(out / "faces.csv")))
    images = list(csv.DictReader(open(out / "images.csv")))
    jsonl = [json.loads(x) for x in open(out / "faces.jsonl")]
    return faces, images, jsonl


def test_rows_are_committed_and_reloaded(tmp_path):
    with OutputStore(tmp_path) as store:
        store.add(entry("a.jpg", 2))
        store.add(entry("b.jpg", 0))
    faces, images, jsonl = read(tmp_path)
    assert [r["image"] for r in images] == ["a.jpg", "b.jpg"]
    assert len(faces) == len(jsonl) == 2
    with OutputStore(tmp_path) as store:
        assert store.is_current("a.jpg", [1, 2]) and not store.is_current("a.jpg", [1, 2_000_000_002]) and not store.is_current("a.jpg", [3, 2])
        assert store.is_current("a.jpg", [1, 2 + 500])  # float-second times (fsspec) within 1 µs of the exact ones
        assert not store.is_current("c.jpg", [1, 2])


def test_uncommitted_and_torn_tails_are_cut_on_open(tmp_path):
    with OutputStore(tmp_path) as store:
        store.add(entry("a.jpg", 1))
    # a run killed after appending rows but before its ledger line, mid-line
    with open(tmp_path / "faces.csv", "a") as f:
        f.write("b.jpg,0,1,2,3")
    with open(tmp_path / "images.csv", "a") as f:
        f.write("b.jpg,ok,1,0,1,,1.0,10,10,r\n")
    with open(tmp_path / ".batchmask" / "ledger.jsonl", "a") as f:
        f.write('{"row": {"image": "b.jpg"')
    with OutputStore(tmp_path) as store:
        assert set(store.entries) == {"a.jpg"}
        store.add(entry("c.jpg", 1))
    faces, images, jsonl = read(tmp_path)
    assert [r["image"] for r in images] == ["a.jpg", "c.jpg"]
    assert [r["image"] for r in faces] == ["a.jpg", "c.jpg"] == [r["image"] for r in jsonl]


def test_tables_shorter_than_the_ledger_are_rebuilt(tmp_path):
    with OutputStore(tmp_path) as store:
        store.add(entry("a.jpg", 1))
        store.add(entry("b.jpg", 3))
    (tmp_path / "faces.csv").unlink()
    (tmp_path / "images.csv").write_text("")
    with OutputStore(tmp_path):
        pass
    faces, images, jsonl = read(tmp_path)
    assert len(faces) == 4 and len(images) == 2 and len(jsonl) == 4


def test_forget_replaces_rows_without_duplicates(tmp_path):
    with OutputStore(tmp_path) as store:
        store.add(entry("a.jpg", 1))
        store.add(entry("b.jpg", 2))
    with OutputStore(tmp_path) as store:
        store.forget({"a.jpg"})
        store.add(entry("a.jpg", 3))
    faces, images, _ = read(tmp_path)
    assert sorted(r["image"] for r in images) == ["a.jpg", "b.jpg"]
    assert sum(r["image"] == "a.jpg" for r in faces) == 3


def test_second_store_on_the_same_folder_is_refused(tmp_path):
    with OutputStore(tmp_path):
        with pytest.raises(OutputBusyError, match="in use by another batchmask run"):
            OutputStore(tmp_path).open()


def test_formula_cells_are_neutralised_but_jsonl_keeps_raw_values(tmp_path):
    assert spreadsheet_safe("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert spreadsheet_safe("-1+2") == "'-1+2" and spreadsheet_safe(-1.5) == -1.5
    with OutputStore(tmp_path) as store:
        store.add(entry("=cmd.jpg", 1))
    faces, images, jsonl = read(tmp_path)
    assert images[0]["image"] == "'=cmd.jpg" and faces[0]["image"] == "'=cmd.jpg"
    assert jsonl[0]["image"] == "=cmd.jpg"


def test_tables_with_an_older_header_are_rebuilt_with_the_current_columns(tmp_path):
    with OutputStore(tmp_path) as store:
        store.add(entry("a.jpg", 1))
    old = (tmp_path / "images.csv").read_text().replace(",taken,camera,mtime", "")
    (tmp_path / "images.csv").write_text(old)
    with OutputStore(tmp_path) as store:
        store.add(entry("b.jpg", 1))
    faces, images, _ = read(tmp_path)
    assert [r["image"] for r in images] == ["a.jpg", "b.jpg"] and "taken" in images[0]


def test_a_ledger_damaged_before_its_last_line_stops_instead_of_dropping_later_rows(tmp_path):
    from batchmask.sinks import OutputError

    with OutputStore(tmp_path) as store:
        for name in ("a.jpg", "b.jpg", "c.jpg"):
            store.add(entry(name, 1))
    ledger = tmp_path / ".batchmask" / "ledger.jsonl"
    lines = ledger.read_bytes().splitlines(keepends=True)
    damaged = lines[0] + lines[1][:1] + b"#" + lines[1][2:] + lines[2]
    ledger.write_bytes(damaged)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.*") if p.is_file()}
    with pytest.raises(OutputError, match="damaged at line 2 "):
        OutputStore(tmp_path).__enter__()
    assert ledger.read_bytes() == damaged
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.*") if p.is_file()} == before


def test_a_folder_holding_someone_elses_table_is_not_overwritten(tmp_path):
    from batchmask.sinks import OutputError

    (tmp_path / "images.csv").write_text("name,value\nimportant,42\n")
    with pytest.raises(OutputError, match="is not a batchmask table"):
        OutputStore(tmp_path).__enter__()
    assert (tmp_path / "images.csv").read_text() == "name,value\nimportant,42\n"
    assert not (tmp_path / "faces.csv").exists()
