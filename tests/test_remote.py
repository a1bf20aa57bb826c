"""INPUT and OUTPUT as fsspec URLs: file:// and s3:// against a real S3 API server (moto) on loopback."""

import csv
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SAMPLES, batchmask

pytest.importorskip("fsspec", reason="URLs need the 'remote' extra")


def test_a_file_url_is_the_local_folder_it_names(tmp_path):
    """file:// INPUT and OUTPUT are those folders: the same rows as paths, resumed from either
    spelling, and one lock (two runs on one OUTPUT, one as a URL and one as a path, wrote every row twice)."""
    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    shutil.copy(SAMPLES / "astronaut.jpg", inp / "a.jpg")
    shutil.copy(SAMPLES / "masks" / "astronaut_cloth.jpg", inp / "sub" / "b.jpg")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    r = batchmask("run", f"file://{inp}", f"file://{tmp_path / 'out'}", "-w", "1", "-q", env=env)
    assert r.returncode == 0, r.stderr
    local = batchmask("run", inp, tmp_path / "local", "-w", "1", "-q")
    assert local.returncode == 0

    def faces(folder):
        return sorted((f["image"], f["x1"], f["mask_score"], f["label"]) for f in csv.DictReader(open(folder / "faces.csv")))

    assert faces(tmp_path / "out") == faces(tmp_path / "local") and len(faces(tmp_path / "out")) == 2
    assert (tmp_path / "out" / "annotated" / "sub" / "b.jpg").is_file()
    assert not (tmp_path / "cache" / "batchmask").exists()  # no staging copy: written in place
    again = batchmask("run", inp, tmp_path / "out", "-w", "1", "-q", env=env)
    assert again.returncode == 0 and "0 processed" in again.stderr and "2 unchanged" in again.stderr

    from filelock import FileLock

    with FileLock(str(tmp_path / "out" / ".batchmask" / "lock")):  # as a run on the path holds it
        busy = batchmask("run", f"file://{inp}", f"file://{tmp_path / 'out'}", "-w", "1", "-q", env=env)
    assert busy.returncode == 4 and "in use by another batchmask run" in busy.stderr, busy.stderr


def test_bad_urls_are_usage_errors(tmp_path):
    r = batchmask("run", "nosuchproto://bucket/x", tmp_path / "out", "-q")
    assert r.returncode == 2 and "nosuchproto" in r.stderr
    r = batchmask("run", "file:///nonexistent/photos", tmp_path / "out", "-q")
    assert r.returncode == 2 and "input folder not found: /nonexistent/photos" in r.stderr


@pytest.fixture
def s3(tmp_path):
    pytest.importorskip("s3fs", reason="s3:// needs s3fs")
    pytest.importorskip("moto", reason="the S3 test server is moto")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.2)
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("photos")
    yield fs, env
    server.terminate()
    server.wait(10)
    for k in env:
        if k.startswith("AWS_"):
            os.environ.pop(k, None)


def test_s3_input_and_output(s3, tmp_path):
    fs, env = s3
    fs.pipe_file("photos/in/a.jpg", (SAMPLES / "astronaut.jpg").read_bytes())
    fs.pipe_file("photos/in/cam/b.jpg", (SAMPLES / "masks" / "astronaut_surgical.jpg").read_bytes())
    fs.pipe_file("photos/in/cam/broken.jpg", b"not a photo")
    fs.pipe_file("photos/in/.hidden.jpg", (SAMPLES / "astronaut.jpg").read_bytes())
    r = batchmask("run", "s3://photos/in", "s3://photos/out", "-w", "1", "-q", env=env)
    assert r.returncode == 3, r.stderr  # the broken photo
    rows = {row["image"]: row for row in csv.DictReader(io.StringIO(fs.cat("photos/out/images.csv").decode()))}
    assert set(rows) == {"a.jpg", "cam/b.jpg", "cam/broken.jpg"}
    assert rows["a.jpg"]["faces"] == "1" and rows["cam/b.jpg"]["masked"] == "1" and rows["cam/broken.jpg"]["status"] == "error"
    assert fs.exists("photos/out/annotated/cam/b.jpg") and fs.exists("photos/out/.batchmask/ledger.jsonl")

    fs.pipe_file("photos/in/c.jpg", (SAMPLES / "chelsea.jpg").read_bytes())
    shutil.rmtree(tmp_path / "cache")
    r = batchmask("run", "s3://photos/in", "s3://photos/out", "-w", "1", "-q", env=env)
    assert "1 processed" in r.stderr, r.stderr
    rows = list(csv.DictReader(io.StringIO(fs.cat("photos/out/images.csv").decode())))
    assert sorted(row["image"] for row in rows) == ["a.jpg", "c.jpg", "cam/b.jpg", "cam/broken.jpg"]

    # the audit report reads the tables, and the photos for its thumbnails, from the store
    r = batchmask("report", "s3://photos/out", "--out", tmp_path / "audit.html", "--by", "folder", env=env)
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "audit.html").read_text()
    faces = list(csv.DictReader(io.StringIO(fs.cat("photos/out/faces.csv").decode())))
    assert page.count("data:image/jpeg;base64,") == sum(f["label"] in ("unmasked", "incorrect") for f in faces) >= 1
