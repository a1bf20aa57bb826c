import os
import shutil
import signal

from batchmask.engine import LocalEngine
from batchmask.models import default_detector_path
from batchmask.worker import WorkerConfig
from conftest import SAMPLES


def make_tasks(tmp_path, n):
    tasks = []
    for i in range(n):
        p = tmp_path / f"p{i:02d}.jpg"
        shutil.copy(SAMPLES / "astronaut.jpg", p)
        tasks.append((str(p), p.name))
    return tasks


def test_every_task_once_and_work_spread_over_workers(tmp_path):
    tasks = make_tasks(tmp_path, 16)
    with LocalEngine(WorkerConfig(detector_path=str(default_detector_path())), workers=2) as engine:
        results = list(engine.results([tasks[i : i + 2] for i in range(0, 16, 2)]))
    assert sorted(r["image"] for r in results) == sorted(t[1] for t in tasks)
    assert all(r["status"] == "ok" and len(r["faces"]["boxes"]) == 1 for r in results)
    assert len({r["pid"] for r in results}) == 2


def test_a_worker_killed_mid_run_loses_no_photo(tmp_path):
    tasks = make_tasks(tmp_path, 24)
    seen = []
    killed = False
    with LocalEngine(WorkerConfig(detector_path=str(default_detector_path())), workers=2) as engine:
        for r in engine.results([[t] for t in tasks]):
            seen.append(r)
            if not killed:
                os.kill(r["pid"], signal.SIGKILL)  # a real worker death, as a decoder segfault would cause
                killed = True
    names = [r["image"] for r in seen]
    assert sorted(names) == sorted(t[1] for t in tasks) and len(names) == len(set(names))
    assert all(r["status"] == "ok" for r in seen)
    assert len({r["pid"] for r in seen}) > 2  # a new pool took over


def test_a_worker_whose_driver_died_before_it_started_exits(tmp_path):
    """The driver's pid comes from the driver: a worker started after its driver was killed
    (getppid() already 1) must still see that it is an orphan, and exit."""
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that is no process's parent any more
    code = ("from batchmask.worker import WorkerConfig, init_worker; from batchmask.models import default_detector_path; "
            f"init_worker(WorkerConfig(str(default_detector_path())), {gone.pid}); import time; time.sleep(30)")
    orphan = subprocess.Popen([sys.executable, "-c", code])
    assert orphan.wait(10) == 1
