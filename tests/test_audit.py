"""`batchmask report`: audit tables whose totals are faces.csv's, safe in a spreadsheet."""

import csv
import datetime as dt
import io
import shutil

import pandas as pd
import pytest
from PIL import Image

from conftest import SAMPLES, batchmask


def photo(src, dest, day: str | None = None, camera: tuple[str, str] | None = None):
    im = Image.open(src)
    exif = Image.Exif()
    if day:
        exif[0x0132] = f"{day.replace('-', ':')} 08:30:00"
    if camera:
        exif[0x010F], exif[0x0110] = camera
    dest.parent.mkdir(parents=True, exist_ok=True)
    im.save(dest, "JPEG", quality=92, exif=exif.tobytes())


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    inp = root / "in"
    photo(SAMPLES / "astronaut.jpg", inp / "lobby" / "a1.jpg", "2026-11-20", ("Acme", "Door 1"))
    photo(SAMPLES / "masks" / "astronaut_surgical.jpg", inp / "lobby" / "a2.jpg", "2026-11-20", ("Acme", "Door 1"))
    photo(SAMPLES / "masks" / "astronaut_cloth.jpg", inp / "yard" / "b1.jpg", "2026-11-21", ("Acme", "Gate"))
    photo(SAMPLES / "chelsea.jpg", inp / "yard" / "cat.jpg", "2026-11-21", ("Acme", "Gate"))
    photo(SAMPLES / "astronaut.jpg", inp / '=HYPERLINK("evil.example","x").jpg', "2026-11-22", ("=cmd|' /C calc'!A0", ""))
    (inp / "yard" / "broken.jpg").write_bytes(b"not a jpeg")
    out = root / "out"
    r = batchmask("run", inp, out, "-w", "1", "-q")
    assert r.returncode == 3, r.stderr  # the broken file
    return root, out


def faces_by_label(out):
    faces = list(csv.DictReader(open(out / "faces.csv", encoding="utf-8")))
    return {lab: sum(f["label"] == lab for f in faces) for lab in ("masked", "incorrect", "unmasked")}, len(faces)


@pytest.mark.parametrize("by", ["day", "folder", "camera"])
def test_report_totals_match_faces_csv(audited, by):
    root, out = audited
    target = root / f"by_{by}.csv"
    r = batchmask("report", out, str(out) + "/", "--out", target, "--by", by)  # the same OUTPUT named twice counts once
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(target)
    assert list(table.columns) == [by, "images", "errors", "faces", "masked", "incorrect", "unmasked", "compliance_rate"]
    labels, n_faces = faces_by_label(out)
    assert table["faces"].sum() == n_faces and table["images"].sum() == 6 and table["errors"].sum() == 1
    for lab, n in labels.items():
        assert table[lab].sum() == n
    assert n_faces >= 4 and labels["masked"] >= 2 and labels["unmasked"] >= 2
    if by == "day":
        assert set(table["day"].astype(str)) >= {"2026-11-20", "2026-11-21", "2026-11-22"}
        day20 = table[table["day"] == "2026-11-20"].iloc[0]
        assert day20["compliance_rate"] == pytest.approx(day20["masked"] / (day20["masked"] + day20["incorrect"] + day20["unmasked"]), abs=1e-4)
    if by == "folder":
        assert {"lobby", "yard", "(top)"} <= set(table["folder"])
    if by == "camera":
        # a camera name that starts like a formula is neutralised in the report CSV
        text = target.read_text()
        assert "'=cmd" in text and "\n=cmd" not in text


def test_since_until_and_html(audited):
    root, out = audited
    r = batchmask("report", out, "--out", root / "window.csv", "--since", "2026-11-21", "--until", "2026-11-21")
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(root / "window.csv")
    assert list(table["day"]) == ["2026-11-21"] and table["images"].sum() == 2  # b1 and cat; broken.jpg has only its file date (today)

    html_path = root / "report.html"
    r = batchmask("report", out, "--out", html_path, "--by", "folder")
    assert r.returncode == 0, r.stderr
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") == 1  # the chart
    labels, _ = faces_by_label(out)
    assert page.count("data:image/jpeg;base64,") == labels["unmasked"] + labels["incorrect"]  # thumbnails
    assert "<script" not in page and '=HYPERLINK("evil' not in page  # names are escaped
    assert "=HYPERLINK(&quot;evil.example&quot;" in page  # its thumbnail caption, escaped
    assert "Labelled with: 6 photos default detector, classifier " in page and ", threshold 0.60, 3 labels</p>" in page


def test_the_html_report_says_which_photos_were_labelled_with_which_settings(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    photo(SAMPLES / "astronaut.jpg", inp / "a.jpg", "2026-11-20")
    assert batchmask("run", inp, out, "-w", "1", "-q").returncode == 0
    photo(SAMPLES / "masks" / "astronaut_cloth.jpg", inp / "b.jpg", "2026-11-21")
    photo(SAMPLES / "masks" / "astronaut_surgical.jpg", inp / "c.jpg", "2026-11-21")
    assert batchmask("run", inp, out, "-w", "1", "-q", "--fast", "--threshold", "0.5").returncode == 0
    r = batchmask("report", out, "--out", tmp_path / "r.html")
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "r.html").read_text()
    assert "Labelled with: 2 photos fast detector (--fast), classifier " in page
    assert ", threshold 0.50, 3 labels; 1 photo default detector, classifier " in page
    assert ", threshold 0.60, 3 labels (counts made with different settings are not directly comparable)" in page
    r = batchmask("report", out, "--out", tmp_path / "none.html", "--since", "2030-01-01")
    assert r.returncode == 0 and "Labelled with" not in (tmp_path / "none.html").read_text()  # no photo in the period


def test_formula_names_are_neutralised_in_every_csv(audited):
    _, out = audited
    for name in ("images.csv", "faces.csv"):
        cells = [row[0] for row in csv.reader(io.StringIO((out / name).read_text()))]
        assert not any(c.startswith(("=", "+", "-", "@")) for c in cells), name
        assert any(c.startswith("'=HYPERLINK") for c in cells), name
    jsonl = (out / "faces.jsonl").read_text()
    assert '"image": "=HYPERLINK' in jsonl  # JSONL keeps raw values


def test_report_counts_only_committed_rows(audited, tmp_path):
    """A report taken while a run or watch appends rows (or after a kill mid-write) ignores rows past the ledger."""
    root, out = audited
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    with open(copy / "images.csv", "a") as f:
        f.write("half.jpg,ok,1,1,0,0,,12.0,640,480,,,2026-11-20T08:30:00,run\n")
    with open(copy / "faces.csv", "a") as f:
        f.write("half.jpg,0,1,2,3")
    r = batchmask("report", copy, "--out", tmp_path / "r.csv")
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(tmp_path / "r.csv")
    assert table["images"].sum() == 6 and table["faces"].sum() == faces_by_label(out)[1]


def test_report_rejects_bad_arguments(audited, tmp_path):
    root, out = audited
    r = batchmask("report", out, "--out", tmp_path / "r.csv", "--since", "last week")
    assert r.returncode == 2 and "--since must be a date" in r.stderr
    r = batchmask("report", out, "--out", tmp_path / "r.csv", "--by", "month")
    assert r.returncode == 2 and "--by must be one of day, folder, camera" in r.stderr
    r = batchmask("report", tmp_path / "nothing", "--out", tmp_path / "r.csv")
    assert r.returncode == 2 and "output folder not found" in r.stderr
    (tmp_path / "afile").write_text("")
    r = batchmask("report", out, "--out", tmp_path / "afile" / "r.csv")
    assert r.returncode == 2 and "afile is a file, not a folder" in r.stderr
    (tmp_path / "empty").mkdir()
    r = batchmask("report", tmp_path / "empty", "--out", tmp_path / "r.csv")
    assert r.returncode == 2 and "is it a batchmask OUTPUT folder" in r.stderr
    shutil.rmtree(tmp_path / "empty")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for target in (out / ".batchmask" / "ledger.jsonl", out / "faces.csv", out / "annotated" / "r.html"):
        r = batchmask("report", out, "--out", target)
        assert r.returncode == 2 and "own files" in r.stderr, r.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    r = batchmask("report", out, "--out", tmp_path / "r.txt")
    assert r.returncode == 2 and "must end in .csv or .html" in r.stderr
    (tmp_path / "dir.html").mkdir()
    r = batchmask("report", out, "--out", tmp_path / "dir.html")
    assert r.returncode == 2 and "is a folder" in r.stderr
    assert batchmask("report", out, "--out", out / "report.html").returncode == 0
    (out / "report.html").unlink()


def test_a_report_taken_while_rows_are_replaced_sees_one_consistent_state(audited, tmp_path):
    """Another process keeps replacing one photo's rows (every file rewritten each time, as a
    run does for a changed photo) while the tables are read: each read sees the state before
    or after a replacement, never images.csv of one and faces.csv of the other."""
    import subprocess
    import sys
    import time

    from batchmask.audit import load_tables

    root, out = audited
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    images, faces = load_tables([copy])
    per_image = faces.groupby("image").size().to_dict()
    target = "lobby/a1.jpg"
    writer = subprocess.Popen([sys.executable, "-c", f"""
import time
from batchmask.sinks import OutputStore
store = OutputStore({str(copy)!r}).open()
entry = store.entries[{target!r}]
end = time.monotonic() + 4
while time.monotonic() < end:
    store.forget({{{target!r}}})
    store.add(dict(entry))
    store.commit()
store.close()
"""])
    reads, seen = 0, set()
    try:
        time.sleep(0.5)
        while writer.poll() is None:
            images, faces = load_tables([copy])
            names = set(images["image"])
            seen.add(target in names)
            assert set(faces["image"]) <= names
            assert faces.groupby("image").size().to_dict() == {k: v for k, v in per_image.items() if k in names}
            reads += 1
    finally:
        writer.wait(timeout=30)
    assert writer.returncode == 0
    assert seen == {True, False}, (reads, seen)  # read before and after the rewrite, never between


def test_a_rewrite_killed_half_way_is_reported_then_settled_by_the_next_run(audited, tmp_path):
    root, out = audited
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    from batchmask.audit import AuditError, load_tables

    (copy / ".batchmask" / "rewrites").write_text("3\n")  # a run was killed between the two steps
    with pytest.raises(AuditError, match="running that command again repairs it"):
        load_tables([copy], wait=0.5)
    assert batchmask("run", root / "in", copy, "-w", "1", "-q").returncode == 3  # the broken file, as before
    assert (copy / ".batchmask" / "rewrites").read_text().strip() == "4"
    assert batchmask("report", copy, "--out", tmp_path / "r.csv").returncode == 0


def test_thumbnails_never_come_from_another_photo_now_under_the_same_name(tmp_path):
    inp, out, archive = tmp_path / "in", tmp_path / "out", tmp_path / "archive"
    inp.mkdir()
    shutil.copy(SAMPLES / "astronaut.jpg", inp / "cam.jpg")  # one unmasked face
    r = batchmask("run", inp, out, "-w", "1", "-q", "--no-annotate", "--archive", archive)
    assert r.returncode == 0 and (archive / "cam.jpg").is_file(), r.stderr
    shutil.copy(SAMPLES / "chelsea.jpg", inp / "cam.jpg")  # the camera reuses the name for a new photo, not yet run

    def thumbnails() -> tuple[int, str]:
        r = batchmask("report", out, "--out", tmp_path / "r.html")
        assert r.returncode == 0, r.stderr
        page = (tmp_path / "r.html").read_text()
        return page.count("data:image/jpeg;base64,"), page

    shown, _ = thumbnails()
    assert shown == 1  # from the archived photo, not the cat now in INPUT
    (archive / "cam.jpg").unlink()
    shown, page = thumbnails()
    assert shown == 0 and "1 not shown: their photos are no longer in the input or archive folder" in page


def test_a_table_replaced_by_another_file_is_named(audited, tmp_path):
    root, out = audited
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    (copy / "faces.csv").write_text("name,value\nimportant,42\n")
    r = batchmask("report", copy, "--out", tmp_path / "r.csv")
    assert r.returncode == 2 and "faces.csv has no column image, label: not a batchmask table" in r.stderr, r.stderr


def report_table(tmp_path, *options):
    """`batchmask report` of tmp_path/out as a CSV table, read back."""
    r = batchmask("report", tmp_path / "out", "--out", tmp_path / "r.csv", *options)
    assert r.returncode == 0, r.stderr
    return pd.read_csv(tmp_path / "r.csv")


def test_a_name_starting_with_a_quote_is_not_taken_for_a_guarded_formula(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(SAMPLES / "astronaut.jpg", inp / "=a.jpg")
    shutil.copy(SAMPLES / "chelsea.jpg", inp / "'=a.jpg")
    assert batchmask("run", inp, tmp_path / "out", "-q", "-w", "1").returncode == 0
    names = [row["image"] for row in csv.DictReader(open(tmp_path / "out" / "images.csv", encoding="utf-8"))]
    assert sorted(names) == ["''=a.jpg", "'=a.jpg"]
    table = report_table(tmp_path, "--by", "folder")
    assert int(table["images"].sum()) == 2 and int(table["faces"].sum()) == 1


def test_an_error_row_without_a_file_date_counts_on_the_day_it_was_made(tmp_path):
    import datetime as dt
    import os

    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(SAMPLES / "chelsea.jpg", inp / "cat.jpg")
    os.symlink(tmp_path / "gone.jpg", inp / "dangling.jpg")
    assert batchmask("run", inp, tmp_path / "out", "-q", "-w", "1").returncode == 3
    today = dt.date.today().isoformat()
    table = report_table(tmp_path, "--since", today, "--until", today)
    assert int(table["images"].sum()) == 2 and int(table["errors"].sum()) == 1
    assert report_table(tmp_path, "--last-days", "1").equals(table)  # today, as a job's last_days = 1
    r = batchmask("report", tmp_path / "out", "--out", tmp_path / "x.csv", "--last-days", "7", "--since", today)
    assert r.returncode == 2 and "--last-days and --since / --until" in r.stderr


def test_photos_in_two_outputs_from_the_same_input_count_once(audited, tmp_path):
    import json
    import re

    root, out = audited
    copies = [tmp_path / "copy", tmp_path / "copy2"]  # more OUTPUTs holding rows for the same photos of the same INPUT
    for copy in copies:
        shutil.copytree(out, copy)
    r = batchmask("report", out, *copies, "--out", tmp_path / "all.csv")
    assert r.returncode == 0, r.stderr
    assert pd.read_csv(tmp_path / "all.csv")["images"].sum() == 6
    assert "note: 6 photos processed into more than one of these OUTPUTs from the same INPUT" in r.stderr.replace("\n", " ")
    r = batchmask("report", out, copies[0], "--out", tmp_path / "both.html")
    assert r.returncode == 0 and "6 photos processed into more than one of them from the same INPUT are counted once" in (tmp_path / "both.html").read_text()

    # the later run's rows count, by the instant it started: its local time may read earlier (another time zone)
    copy = copies[0]
    started = json.loads((out / "run.json").read_text())["started"]
    later = (dt.datetime.strptime(started, "%Y-%m-%dT%H:%M:%S%z") + dt.timedelta(hours=1)).astimezone(dt.timezone(dt.timedelta(hours=-5)))
    for name in ("run.json", "runs.jsonl"):
        path = copy / name
        path.write_text(path.read_text().replace(started, later.strftime("%Y-%m-%dT%H:%M:%S%z")))
    faces = copy / "faces.csv"
    faces.write_text(re.sub(r",(unmasked|incorrect),", ",masked,", faces.read_text()))  # the later run called every face masked
    for order in ((out, copy), (copy, out)):
        r = batchmask("report", *order, "--out", tmp_path / "later.csv")
        table = pd.read_csv(tmp_path / "later.csv")
        assert r.returncode == 0 and table["masked"].sum() == table["faces"].sum() > 0, (r.stderr, table)

    # no face at all in either OUTPUT, and a period that leaves out the repeated photos: nothing to note
    for folder in copies:
        faces = folder / "faces.csv"
        faces.write_text(faces.read_text().splitlines()[0] + "\n")
    r = batchmask("report", *copies, "--out", tmp_path / "empty.csv")
    assert r.returncode == 0 and pd.read_csv(tmp_path / "empty.csv")["faces"].sum() == 0, r.stderr
    r = batchmask("report", out, *copies, "--out", tmp_path / "none.csv", "--since", "2030-01-01")
    assert r.returncode == 0 and "note:" not in r.stderr, r.stderr

    # the same names from another INPUT (another site) are other photos
    for name in ("run.json", "runs.jsonl"):
        path = copy / name
        path.write_text(path.read_text().replace(str((root / "in").resolve()), "/srv/site-b/incoming"))
    r = batchmask("report", out, copy, "--out", tmp_path / "sites.csv")
    assert r.returncode == 0 and "note:" not in r.stderr, r.stderr
    assert pd.read_csv(tmp_path / "sites.csv")["images"].sum() == 12
