"""Dask distributed: a real `dask scheduler` and two `dask worker` processes on 127.0.0.1."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SAMPLES, batchmask

pytest.importorskip("distributed", reason="the Dask engine needs the 'dask' extra")
BIN = Path(sys.executable).parent


def _start(args, log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler on a free loopback port and two single-threaded workers without nannies."""
    d = tmp_path_factory.mktemp("dask")
    info = d / "scheduler.json"
    procs = [_start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(info)], d / "scheduler.log")]
    deadline = time.monotonic() + 60
    while not info.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    address = json.loads(info.read_text())["address"]
    workers = []
    for name in ("w1", "w2"):
        workers.append(_start([str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                               "--name", name, "--host", "127.0.0.1"], d / f"{name}.log"))
    procs += workers
    from distributed import Client

    with Client(address, timeout=30) as client:
        client.wait_for_workers(2, timeout=60)
    yield address, workers
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(5)  # a graceful Dask close can take 20 s; these are throwaway test processes
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def photos(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sources = [SAMPLES / "astronaut.jpg", SAMPLES / "chelsea.jpg", SAMPLES / "masks" / "astronaut_surgical.jpg", SAMPLES / "masks" / "astronaut_cloth.jpg"]
    for i in range(n):
        shutil.copy(sources[i % len(sources)], folder / f"p{i:02}.jpg")
    return folder


def face_rows(out: Path) -> list[tuple]:
    rows = csv.DictReader(open(out / "faces.csv"))
    return sorted((r["image"], r["x1"], r["y1"], r["x2"], r["y2"], r["det_score"], r["mask_score"], r["incorrect_score"], r["label"]) for r in rows)


def test_same_faces_as_a_local_run_on_both_workers(tmp_path, cluster):
    address, _ = cluster
    inp = photos(tmp_path / "in", 16)
    local = batchmask("run", inp, tmp_path / "local", "-w", "1", "-q")
    assert local.returncode == 0, local.stderr
    r = batchmask("run", inp, tmp_path / "dask", "--scheduler", address, "-q")
    assert r.returncode == 0, r.stderr
    assert face_rows(tmp_path / "dask") == face_rows(tmp_path / "local")
    run = json.loads((tmp_path / "dask" / "run.json").read_text())
    assert run["config"]["engine"] == "dask" and run["config"]["workers"] == 2
    per_worker = run["photos_per_worker"]
    assert len(per_worker) == 2 and all(k.startswith("tcp://127.0.0.1:") for k in per_worker) and sum(per_worker.values()) == 16
    assert (tmp_path / "dask" / "annotated" / "p00.jpg").is_file()  # workers write annotated copies to the shared path
    again = batchmask("run", inp, tmp_path / "dask", "--scheduler", address, "-q")  # resume: nothing left to do
    assert again.returncode == 0 and "0 processed" in again.stderr


def test_unreachable_scheduler_fails_fast(tmp_path):
    inp = photos(tmp_path / "in", 1)
    t0 = time.monotonic()
    r = batchmask("run", inp, tmp_path / "out", "--scheduler", "tcp://127.0.0.1:9", "-q", timeout=60)
    assert time.monotonic() - t0 < 30
    assert r.returncode == 1 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in r.stderr

    # a port where something else listens answers no Dask handshake: the same 10 s limit, no traceback
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    t0 = time.monotonic()
    r = batchmask("run", inp, tmp_path / "out", "--scheduler", f"tcp://127.0.0.1:{server.getsockname()[1]}", "-q", timeout=60)
    server.close()
    assert time.monotonic() - t0 < 30 and r.returncode == 1 and "within 10 s" in r.stderr and "Traceback" not in r.stderr, r.stderr
    for bad in ("tcp://127.0.0.1", "127.0.0.1:8786", "http://127.0.0.1:8786"):
        r = batchmask("run", inp, tmp_path / "out", "--scheduler", bad, "-q")
        assert r.returncode == 2 and "not a Dask scheduler address" in r.stderr.replace("\n", "").replace("│", ""), r.stderr


def test_a_worker_killed_mid_run_loses_no_photo(tmp_path, cluster):
    """Kills one of the two workers: the tests after it in this module (in collection order, which
    pytest-xdist keeps within each of its processes) get a cluster with one worker left."""
    address, workers = cluster
    inp = photos(tmp_path / "in", 40)
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "batchmask", "run", str(inp), str(out), "--scheduler", address, "-q", "--no-annotate"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = len(list(csv.DictReader(open(out / "images.csv")))) if (out / "images.csv").exists() else 0
        if done >= 4:
            break
        time.sleep(0.05)
    os.killpg(workers[0].pid, signal.SIGKILL)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    rows = list(csv.DictReader(open(out / "images.csv")))
    assert sorted(r["image"] for r in rows) == [f"p{i:02}.jpg" for i in range(40)]
    assert all(r["status"] == "ok" for r in rows)
    faces = face_rows(out)
    assert len(faces) == len({f[0] for f in faces}) == 30  # 3 of every 4 photos hold one face, each once


def test_sigterm_while_the_local_cluster_starts_exits_cleanly(tmp_path):
    """SIGTERM as soon as the LocalCluster's worker processes appear (the cluster half made):
    exit 130 once it has started, no traceback from distributed's exit hook, nothing left running."""
    import psutil

    inp = photos(tmp_path / "in", 2)
    proc = subprocess.Popen([sys.executable, "-m", "batchmask", "run", str(inp), str(tmp_path / "out"), "--engine", "dask", "-w", "1", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    me = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if any("spawn_main" in " ".join(c.cmdline()) for c in me.children(recursive=True)):
                break
        except psutil.Error:
            pass
        time.sleep(0.02)
    else:
        pytest.fail("no Dask worker process appeared")
    children = me.children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert "interrupted" in err
    gone, alive = psutil.wait_procs(children, timeout=20)
    assert not alive


def test_annotated_copies_a_worker_writes_elsewhere_are_not_taken_as_written(tmp_path, cluster):
    """A worker whose OUTPUT is another folder than the driver's (a missing shared mount) writes its
    annotated copies where nobody sees them: the rows say so, and the next run redoes those photos."""
    from dataclasses import replace

    from batchmask.engine.dask import DaskEngine
    from batchmask.runner import RunOptions, RunSession

    address, _ = cluster
    inp, out, elsewhere = photos(tmp_path / "in", 2), tmp_path / "out", tmp_path / "worker-side"

    def misconfigured(config, workers):
        return DaskEngine(replace(config, annotate_root=str(elsewhere)), scheduler=address)

    with RunSession(inp, out, RunOptions(scheduler=address), engine_factory=misconfigured) as session:
        session.process(session.select(session.scan()))
    rows = list(csv.DictReader(open(out / "images.csv")))
    assert [r["status"] for r in rows] == ["error", "error"]
    assert all(r["error"].startswith("annotated copy not in OUTPUT") and "is OUTPUT mounted at the same path" in r["error"] for r in rows)
    assert len(list(elsewhere.rglob("*.jpg"))) == 2
    r = batchmask("run", inp, out, "--scheduler", address + "/", "-q")  # a trailing slash names the same scheduler
    assert r.returncode == 0 and "2 processed" in r.stderr, r.stderr
    assert len(list((out / "annotated").rglob("*.jpg"))) == 2

    from distributed import Client

    with Client(address, timeout=30) as client:  # each run's models are freed on the long-lived workers when it ends
        left = client.run(lambda dask_worker: [p for p in dask_worker.plugins if p.startswith("batchmask-")])
    assert left and not any(left.values()), left


def _scheduler_and_worker(d: Path, port: int) -> list[subprocess.Popen]:
    address = f"tcp://127.0.0.1:{port}"
    procs = [_start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], d / "scheduler.log")]
    procs.append(_start([str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"], d / "worker.log"))
    from distributed import Client

    with Client(address, timeout=30) as client:
        client.wait_for_workers(1, timeout=60)
    return procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)


def test_a_scheduler_killed_mid_run_is_resumed_by_the_same_command(tmp_path):
    """kill -9 of the scheduler: exit 1 with one clear line (no distributed traceback), the rows so far
    kept; the same command on a new scheduler at the same address does the rest, each photo once."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    inp, out = photos(tmp_path / "in", 40), tmp_path / "out"
    (tmp_path / "a").mkdir()
    procs = _scheduler_and_worker(tmp_path / "a", port)
    try:
        cmd = [sys.executable, "-m", "batchmask", "run", str(inp), str(out), "--scheduler", address, "--no-annotate"]
        run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and run.poll() is None:
            if (out / "images.csv").exists() and len(list(csv.DictReader(open(out / "images.csv")))) >= 4:
                break
            time.sleep(0.05)
        os.killpg(procs[0].pid, signal.SIGKILL)
        _, err = run.communicate(timeout=120)
    finally:
        _stop(procs)
    assert run.returncode == 1, err
    assert "lost the Dask scheduler mid-run" in err and "rerun the same command" in err, err
    assert "Traceback" not in err, err
    done = [r["image"] for r in csv.DictReader(open(out / "images.csv"))]
    assert 4 <= len(done) < 40 and len(set(done)) == len(done)

    (tmp_path / "b").mkdir()
    procs = _scheduler_and_worker(tmp_path / "b", port)
    try:
        again = subprocess.run(cmd + ["-q"], capture_output=True, text=True, timeout=300)
    finally:
        _stop(procs)
    assert again.returncode == 0, again.stderr
    assert f"{40 - len(done)} processed" in again.stderr, again.stderr
    rows = list(csv.DictReader(open(out / "images.csv")))
    assert sorted(r["image"] for r in rows) == [f"p{i:02}.jpg" for i in range(40)] and all(r["status"] == "ok" for r in rows)
    assert len(face_rows(out)) == 30
