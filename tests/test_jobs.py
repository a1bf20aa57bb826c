"""`batchmask job run`: validated TOML job files, an OS lock against overlapping starts."""

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

from conftest import REPO, SAMPLES, SHARED_DATA, batchmask, needs_shared


def write_job(folder: Path, text: str, name: str = "job.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ('input = "in"\noutput = "out"\ntreshold = 0.3\n', "job.toml:3 (run keys): unknown key 'treshold' (the run step takes: input, output,"),
    ('input = "in"\noutput = "out"\nworkers = "two"\n', "workers must be an integer, not 'two'"),
    ('input = "in"\n', "missing key 'output'"),
    ('input = "in"\noutput = "out"\nthreshold = 1.5\n', "threshold must be between 0 and 1"),
    ('input = "in"\noutput = "out"\n[report]\nout = "r.csv"\nby = "week"\n', "job.toml:5 [report]: by must be day, folder or camera, not 'week'"),
    ('[[step]]\ndo = "train"\ndata = "d"\nout = "m"\nepoch = 3\n', "job.toml:5 [[step]] 1 (train): unknown key 'epoch'"),
    ('[job]\nname = "n"\n\n[[step]]\ndo = "evaluate"\nimages = "i"\nboxes = "b.csv"\nout = "r"\ntitle = """\nworkers = 3\n"""\nworkers = 0\n',
     "job.toml:12 [[step]] 1 (evaluate): workers must be at least 1, not 0"),
    ('[[step]]\ndo = "data-build"\nunmasked = [\n "u[1", # ["old"\n]\nmasked = "m"\nout = "o"\n[["step"]]\ndo = "train"\ndata = "d"\n',
     "job.toml:8 [[step]] 2 (train): missing key 'out'"),
    # lines the way TOML counts them: strings holding quotes, U+2028 in a comment, CRLF, a byte-order mark
    ('[[step]]\ndo = "evaluate"\nimages = "i"\nboxes = "b"\nout = "o"\ntitle = \'a """ b\'\n[[step]]\ndo = "evaluate"\nimages = "i"\n'
     'boxes = "b"\nout = "o"\ntitle = """x\nsay \\""" it\'s \'\'\'\nworkers = 1\n"""\nworkers = 0\n', "job.toml:16 [[step]] 2 (evaluate): workers must be at least 1"),
    ('\ufeff# a\u2028b\r\ninput = "in"\r\noutput = "out"\r\nworkers = 0\r\n', "job.toml:4 (run keys): workers must be at least 1"),
    ('input = "in"\noutput = "out"\nreport = { out = "r.csv", by = "week" }\n', "job.toml:3 [report]: by must be day, folder or camera"),
    ('# x\ninput = "in"\nworkers = 2\n', "job.toml:2 (run keys): missing key 'output'"),
    ('[[step]]\ndata = "d"\n', "job.toml:1 [[step]] 1: missing key 'do' (one of run,"),
    ('input = "a\\u0000b"\noutput = "out"\n', "job.toml:1 (run keys): input must be a path string"),
    ('input = "in"\noutput = "out"\ntimeout = nan\n', "job.toml:3 (run keys): timeout must be a number, not nan"),
    ('input = "in"\noutput = "out"\nscheduler = "tcp://[::1"\n', "job.toml:3 (run keys): scheduler: not a Dask scheduler address"),
    ('input = "in"\noutput = "out"\n[report]\nout = "r.txt"\n', "job.toml:4 [report]: out: the report file must end in .csv or .html"),
    ('input = "in"\noutput = "out"\n[report]\nout = "out/faces.csv"\n', "[report]: out: "),
    ('[[step]]\ndo = "bake"\n', "do must be one of run, report, data-build, train, ensemble, calibrate, evaluate, not 'bake'"),
    ('input = "in"\noutput = \n', "not valid TOML"),
    ('[job]\nname = "x"\n', "nothing to do"),
    ('input = "in"\noutput = "out"\nworkers = 0\n', "workers must be at least 1, not 0"),
    ('step = [1]\n', "step 1 must be a table"),
    ('[[step]]\ndo = ["run"]\n', "do must be one of run,"),
    ('input = "in"\noutput = "out"\nscheduler = "10.0.0.5"\n', "scheduler: not a Dask scheduler address: '10.0.0.5'"),
    ('[[step]]\ndo = "report"\nout = "r.csv"\nlast_days = 7\nsince = 2026-01-01\n', "last_days and since / until choose the same period"),
    ('[[step]]\ndo = "report"\nout = "r.csv"\nsince = 2026-02-01\nuntil = 2026-01-01\n', "since (2026-02-01) is after until (2026-01-01)"),
    ('[job]\nname = "x"\ninput = "in"\noutput = "out"\n', "keys written after a [table] header belong to that table"),
    ('input = "in"\noutput = "out"\n[report]\nout = "r.csv"\nworkers = 1\n', "keys written after a [table] header belong to that table"),
])
def test_bad_job_files_name_the_fault(tmp_path, text, message):
    from batchmask.jobs import JobError, load_job

    (tmp_path / "job.toml").write_bytes(text.encode())  # as written: CRLF stays CRLF
    with pytest.raises(JobError) as caught:
        load_job(tmp_path / "job.toml")
    assert message in str(caught.value)


def test_a_bad_job_file_is_a_usage_error_naming_its_line(tmp_path):
    r = batchmask("job", "run", write_job(tmp_path, '# nightly\ninput = "in"\noutput = "out"\n\nworkers = 0\n'))
    assert r.returncode == 2, r.stderr
    assert "job.toml:5 (run keys): workers must be at least 1, not 0" in r.stderr.replace("\n", ""), r.stderr


def test_shipped_job_examples_are_valid():
    for job in sorted((REPO / "jobs").glob("*.toml")):
        r = batchmask("job", "run", job, "--check")
        assert r.returncode == 0 and f"{job.name}: valid" in r.stdout and "1. " in r.stdout, (job, r.stdout, r.stderr)


def test_job_runs_a_batch_then_its_report_relative_to_the_job_file(tmp_path, photo_tree):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    job = write_job(jobs, f'input = "{os.path.relpath(photo_tree, jobs)}"\noutput = "../out"\nworkers = 1\nlabels = 2\n'
                          '[report]\nout = "../reports/by-folder.csv"\nby = "folder"\n')
    r = batchmask("job", "run", job, cwd=Path.home())  # as cron would start it
    assert r.returncode == 3, r.stderr  # photo_tree holds broken files: partial, report still written
    assert "step 2/2 report" in r.stderr
    faces = list(csv.DictReader(open(tmp_path / "out" / "faces.csv")))
    assert faces and {f["label"] for f in faces} <= {"masked", "unmasked"}  # labels = 2
    report = list(csv.DictReader(open(tmp_path / "reports" / "by-folder.csv")))
    assert sum(int(r["faces"]) for r in report) == len(faces)

    # a step that fails outranks the photos rejected before it: cron must see its failure, not 3
    (tmp_path / "reports" / "blocked").write_text("a file where a folder is needed")
    job = write_job(jobs, f'input = "{os.path.relpath(photo_tree, jobs)}"\noutput = "../out"\nworkers = 1\n'
                          '[report]\nout = "../reports/blocked/r.csv"\n', name="failing.toml")
    r = batchmask("job", "run", job)
    assert r.returncode == 2 and "step 2 (report) failed with exit code 2" in r.stderr, r.stderr
    assert "blocked is a file, not a folder" in r.stderr


def test_a_report_step_reads_an_output_given_as_a_url(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(SAMPLES / "astronaut.jpg", src / "a.jpg")
    job = write_job(tmp_path, f'input = "in"\noutput = "out"\nworkers = 1\nannotate = false\nfast = true\n'
                              f'[report]\noutputs = ["{(tmp_path / "out").as_uri()}"]\nout = "r.csv"\n')
    r = batchmask("job", "run", job)
    assert r.returncode == 0, r.stderr
    assert sum(int(row["faces"]) for row in csv.DictReader(open(tmp_path / "r.csv"))) == 1
    assert json.loads((tmp_path / "out" / "run.json").read_text())["config"]["detector"]["scales"] == [0]  # fast = true


@needs_shared
def test_a_job_chain_runs_evaluate_on_annotated_photos(tmp_path):
    webcam = SHARED_DATA / "formatcom_webcam"
    job = write_job(tmp_path, f'[[step]]\ndo = "evaluate"\nimages = "{webcam / "images"}"\nboxes = "{webcam / "boxes.csv"}"\n'
                              f'out = "report"\nworkers = 1\nfast = true\n[[step]]\ndo = "report"\noutputs = ["report/run"]\nout = "audit.csv"\n')
    r = batchmask("job", "run", job, timeout=300)
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["images"] == 61 and metrics["recall"] > 0.85  # selfies: fast mode finds them too
    assert "fast mode (no upscaled look for small faces)" in (tmp_path / "report" / "report.md").read_text()
    assert (tmp_path / "audit.csv").read_text().startswith("day,images,")


def start_job(job: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "batchmask", "job", "run", str(job)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(path: Path, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_overlapping_starts_and_a_killed_run(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(24):
        shutil.copy(SAMPLES / "astronaut.jpg", inp / f"p{i:02}.jpg")
    lock = tmp_path / "locks" / "job.lock"
    job = write_job(tmp_path, f'input = "in"\noutput = "out"\nworkers = 1\n[job]\nlock = "{lock}"\n')

    first = start_job(job)
    wait_for(lock.with_name("job.lock.info"))
    os.killpg(first.pid, signal.SIGSTOP)  # held mid-run, so the second start meets it however slowly that start goes
    try:
        t0 = time.monotonic()
        second = batchmask("job", "run", job, timeout=30)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert time.monotonic() - t0 < 25  # at once: no wait for the first job's lock
    assert second.returncode == 4, second.stderr
    assert "already in progress" in second.stderr and f"pid {first.pid} since" in second.stderr
    assert first.wait(120) == 0, first.stderr.read()

    # a run killed mid-way leaves no lock behind: the next start goes ahead and finishes the rest
    for i in range(24, 48):
        shutil.copy(SAMPLES / "chelsea.jpg", inp / f"p{i:02}.jpg")
    third = start_job(job)
    wait_for(lock.with_name("job.lock.info"))
    time.sleep(2.0)
    os.killpg(third.pid, signal.SIGKILL)
    third.wait(30)
    again = batchmask("job", "run", job, timeout=300)
    assert again.returncode == 0, again.stderr
    rows = list(csv.DictReader(open(tmp_path / "out" / "images.csv")))
    assert sorted(r["image"] for r in rows) == [f"p{i:02}.jpg" for i in range(48)]


def test_check_warns_about_folders_a_run_here_would_refuse(tmp_path):
    (tmp_path / "out").write_text("a file")
    r = batchmask("job", "run", write_job(tmp_path, 'input = "missing"\noutput = "out"\n'), "--check")
    assert r.returncode == 0 and "valid" in r.stdout, r.stdout
    text = r.stderr.replace("\n", "")
    assert "step 1 (run): input folder not found here" in text and "step 1 (run): output exists and is not a folder" in text
