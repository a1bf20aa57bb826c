"""`batchmask watch` as a real process, fed by real file copies, slow writes, renames and signals."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import SAMPLES

PHOTOS = [SAMPLES / "astronaut.jpg", SAMPLES / "chelsea.jpg", SAMPLES / "masks" / "astronaut_surgical.jpg", SAMPLES / "masks" / "astronaut_cloth.jpg"]


class WatchProcess:
    def __init__(self, *args, env=None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "batchmask", "watch", *map(str, args), "-w", "1", "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for_line("watching")

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, text: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                time.sleep(0.2)
                raise AssertionError(f"watch exited {self.proc.returncode}: {self.lines}")
            time.sleep(0.05)
        raise AssertionError(f"no line with {text!r} in {timeout} s: {self.lines}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def rows(out: Path) -> list[dict]:
    path = out / "images.csv"
    return list(csv.DictReader(open(path, encoding="utf-8"))) if path.exists() else []


def wait_for_rows(out: Path, images: set[str], timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = rows(out)
        if images <= {r["image"] for r in got}:
            return got
        time.sleep(0.1)
    raise AssertionError(f"rows for {images - {r['image'] for r in rows(out)}} never appeared")


def burst_into_a_small_watch(inp: Path, out: Path, n: int):
    """An in-process watcher with a pending limit of 5, fed `n` photos at once: (events, summary, rows)."""
    from batchmask.runner import RunOptions
    from batchmask.watch import Watcher, WatchOptions

    events, result = [], []
    watcher = Watcher(inp, out, RunOptions(workers=1, annotate=False), WatchOptions(settle=0.3, max_pending=5), lambda e, d: events.append(e))
    thread = threading.Thread(target=lambda: result.append(watcher.run()))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while "watching" not in events and time.monotonic() < deadline:
            time.sleep(0.05)
        for i in range(n):
            shutil.copy(PHOTOS[1], inp / f"burst{i:02}.jpg")
        got = wait_for_rows(out, {f"burst{i:02}.jpg" for i in range(n)}, timeout=120)
    finally:
        watcher.stop()
        thread.join(60)
    assert not thread.is_alive()
    return events, result[0], got


def test_catch_up_copies_slow_writes_renames_restart_and_sigterm(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    (inp / "cam1").mkdir(parents=True)
    shutil.copy(PHOTOS[0], inp / "before.jpg")
    w = WatchProcess(inp, out, "--settle", "1")
    wait_for_rows(out, {"before.jpg"})  # catch-up of what was already there

    shutil.copy(PHOTOS[1], inp / "cam1" / "copied.jpg")
    t0 = time.monotonic()
    wait_for_rows(out, {"cam1/copied.jpg"})
    assert time.monotonic() - t0 < 30

    # a file written slowly in chunks is read only once complete
    data = PHOTOS[2].read_bytes()
    with open(inp / "slow.jpg", "wb") as f:
        for i in range(4):
            f.write(data[i * len(data) // 4 : (i + 1) * len(data) // 4])
            f.flush()
            time.sleep(0.4)
    # a copy tool's temporary name, renamed into place when complete; hidden files are ignored
    shutil.copy(PHOTOS[3], inp / "renamed.jpg.part")
    shutil.copy(PHOTOS[3], inp / ".hidden.jpg")
    time.sleep(0.3)
    os.rename(inp / "renamed.jpg.part", inp / "renamed.jpg")
    got = wait_for_rows(out, {"slow.jpg", "renamed.jpg"})
    by_image = {r["image"]: r for r in got}
    assert by_image["slow.jpg"]["status"] == "ok" and by_image["slow.jpg"]["faces"] == "1"
    assert by_image["renamed.jpg"]["status"] == "ok"

    assert w.stop(signal.SIGTERM) == 0
    assert any("stopped:" in line for line in w.lines)
    got = rows(out)
    names = [r["image"] for r in got]
    assert sorted(names) == ["before.jpg", "cam1/copied.jpg", "renamed.jpg", "slow.jpg"]  # each once, nothing hidden or partial
    ok_lines = [line for line in w.lines if line.startswith("ok ")]
    assert len(ok_lines) == 4 and all("faces=" in line for line in ok_lines)
    run = json.loads((out / "run.json").read_text())
    assert run["exit_code"] == 0 and run["counts"]["this_run"]["scanned"] == 1 and run["counts"]["this_run"]["processed"] == 4

    # photos that land while it is down are picked up by the next start; nothing is redone
    shutil.copy(PHOTOS[1], inp / "while_down.jpg")
    w = WatchProcess(inp, out, "--settle", "1")
    got = wait_for_rows(out, {"while_down.jpg"})
    time.sleep(1.0)
    assert w.stop(signal.SIGINT) == 0
    got = rows(out)
    assert sorted(r["image"] for r in got) == sorted(names + ["while_down.jpg"])
    assert len({r["run_id"] for r in got}) == 2
    faces = list(csv.DictReader(open(out / "faces.csv", encoding="utf-8")))
    assert len(faces) == sum(int(r["faces"]) for r in got)


def test_changed_photo_is_redone_and_archive_moves_inputs(tmp_path):
    inp, out, archive = tmp_path / "in", tmp_path / "out", tmp_path / "done"
    inp.mkdir()
    w = WatchProcess(inp, out, "--settle", "0.5", "--archive", archive)
    shutil.copy(PHOTOS[0], inp / "a.jpg")
    wait_for_rows(out, {"a.jpg"})
    deadline = time.monotonic() + 10
    while (inp / "a.jpg").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (inp / "a.jpg").exists() and (archive / "a.jpg").read_bytes() == PHOTOS[0].read_bytes()
    # the same name arriving again is another photo: its rows, like its archived file, go under a free name
    shutil.copy(PHOTOS[1], inp / "a.jpg")
    deadline = time.monotonic() + 30
    while not (archive / "a (1).jpg").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (archive / "a (1).jpg").read_bytes() == PHOTOS[1].read_bytes()
    assert w.stop() == 0
    got = {r["image"]: r["faces"] for r in rows(out)}
    assert got == {"a.jpg": "1", "a (1).jpg": "0"}  # the astronaut's row is kept beside the cat's


def test_a_photo_caught_half_written_counts_once_as_it_ended(tmp_path):
    """A copy that pauses longer than --settle is read half-written (an error row), then again when it
    completes (its rows): the stop summary and run.json count the photo once, as it ended."""
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    w = WatchProcess(inp, out, "--settle", "0.5")
    data = PHOTOS[0].read_bytes()
    with open(inp / "late.jpg", "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        deadline = time.monotonic() + 30
        while not any(r["image"] == "late.jpg" and r["status"] == "error" for r in rows(out)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [r["status"] for r in rows(out)] == ["error"]
        f.write(data[len(data) // 2:])
    deadline = time.monotonic() + 30
    while not any(r["image"] == "late.jpg" and r["status"] == "ok" for r in rows(out)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert w.stop() == 0
    assert [r["status"] for r in rows(out)] == ["ok"]
    stopped = [line for line in w.lines if "stopped:" in line]
    assert stopped and "1 processed (0 rejected)" in stopped[-1] and "1 face:" in stopped[-1], w.lines
    run = json.loads((out / "run.json").read_text())
    assert run["counts"]["this_run"]["processed"] == 1 and run["counts"]["this_run"]["errors"] == 0


@pytest.mark.parametrize("interval", [0.5])
def test_polling_mode_sees_new_files(tmp_path, interval):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    w = WatchProcess(inp, out, "--polling", "--interval", interval, "--settle", "0.5", "--fast")
    assert any("(polling, --fast detector)" in line for line in w.lines), w.lines
    shutil.copy(PHOTOS[0], inp / "polled.jpg")
    wait_for_rows(out, {"polled.jpg"})
    assert w.stop() == 0
    assert json.loads((out / "run.json").read_text())["config"]["detector"]["scales"] == [0]


@pytest.mark.parametrize("polling", [False, True])
def test_a_removed_watched_folder_stops_the_watch_with_an_error(tmp_path, polling):
    """A share reconnect or a cleanup script must not leave a live process watching nothing."""
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    w = WatchProcess(inp, out, "--settle", "0.5", *(["--polling", "--interval", "0.5"] if polling else []))
    shutil.copy(PHOTOS[0], inp / "first.jpg")
    wait_for_rows(out, {"first.jpg"})
    shutil.rmtree(inp)
    inp.mkdir()
    if polling:  # polling lists the path again: the new folder is watched; or, if a poll found it gone, the watch stops
        shutil.copy(PHOTOS[1], inp / "second.jpg")
        try:
            wait_for_rows(out, {"second.jpg"}, timeout=30)
            assert w.stop() == 0
            return
        except AssertionError:
            pass
    assert w.proc.wait(30) == 1
    w.wait_for_line("was removed or replaced")


def test_watch_refuses_bad_folders(tmp_path):
    from conftest import batchmask

    r = batchmask("watch", tmp_path / "missing", tmp_path / "out")
    assert r.returncode == 2 and "input folder not found" in r.stderr


def test_a_burst_beyond_the_pending_limit_falls_back_to_a_rescan(tmp_path):
    """In-process watcher with a tiny pending limit: 30 files at once overflow it; every one is still done once."""
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    events, _, got = burst_into_a_small_watch(inp, out, 30)
    assert events.count("scanned") >= 2  # the start-up scan and at least one rescan after the overflow
    assert sorted(r["image"] for r in rows(out)) == sorted(r["image"] for r in got) == [f"burst{i:02}.jpg" for i in range(30)]


def test_input_inside_output_is_watched(tmp_path):
    """OUTPUT may hold INPUT (out/incoming): only an OUTPUT inside INPUT is skipped."""
    out = tmp_path / "out"
    inp = out / "incoming"
    inp.mkdir(parents=True)
    w = WatchProcess(inp, out, "--settle", "0.5")
    shutil.copy(PHOTOS[0], inp / "a.jpg")
    wait_for_rows(out, {"a.jpg"})
    assert w.stop() == 0


def test_an_older_output_inside_the_watched_folder_is_not_read_as_photos(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    shutil.copy(PHOTOS[0], inp / "a.jpg")
    from conftest import batchmask

    assert batchmask("run", inp, inp / "old", "-q", "-w", "1").returncode == 0  # an earlier OUTPUT left in INPUT
    w = WatchProcess(inp, out, "--settle", "0.5")
    wait_for_rows(out, {"a.jpg"})
    shutil.copy(PHOTOS[1], inp / "old" / "annotated" / "new.jpg")  # written live into that OUTPUT
    shutil.copy(PHOTOS[1], inp / "b.jpg")
    wait_for_rows(out, {"b.jpg"})
    time.sleep(1.5)
    assert w.stop() == 0
    assert {r["image"] for r in rows(out)} == {"a.jpg", "b.jpg"}


def test_polling_does_not_list_the_folders_never_scanned(tmp_path):
    """Each poll lists INPUT's tree: an archive or OUTPUT inside it grows forever and is left out."""
    from watchdog.utils.dirsnapshot import DirectorySnapshot

    from batchmask.watch import _lister

    inp = tmp_path / "in"
    for rel in ("sub/a.jpg", "archive/old.jpg", "out/annotated/a.jpg", "older-out/x.jpg", ".sync/partial.jpg"):
        (inp / rel).parent.mkdir(parents=True, exist_ok=True)
        (inp / rel).write_bytes(b"x")
    (inp / "older-out" / ".batchmask").mkdir()
    (inp / "older-out" / ".batchmask" / "ledger.jsonl").write_text("")
    snapshot = DirectorySnapshot(str(inp), listdir=_lister(inp, [inp / "out", inp / "archive"]))
    listed = {os.path.relpath(p, inp) for p in snapshot.paths}
    assert listed == {".", "sub", "sub/a.jpg"}, listed


def test_unchanged_count_is_what_output_held_at_start_not_after_a_rescan(tmp_path):
    """Photos done before the watch started are reported as unchanged once; a rescan after a burst
    finds the watch's own results done too, and must not count them as unchanged."""
    from conftest import batchmask

    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    for i in range(3):
        shutil.copy(PHOTOS[1], inp / f"before{i}.jpg")
    assert batchmask("run", inp, out, "-q", "-w", "1", "--no-annotate").returncode == 0
    events, summary, _ = burst_into_a_small_watch(inp, out, 12)
    assert events.count("scanned") >= 2  # the rescan after the overflow happened
    assert summary.skipped == 3
    assert summary.processed == 12


def test_polling_does_not_follow_folder_links(tmp_path):
    """Links to INPUT itself (loops) and to a folder outside are not followed, as `run` and the
    inotify watch do not: each new photo gets one row."""
    inp, out, outside = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    inp.mkdir()
    outside.mkdir()
    shutil.copy(PHOTOS[1], outside / "x.jpg")
    os.symlink(inp, inp / "loop1")
    os.symlink(inp, inp / "loop2")
    os.symlink(outside, inp / "ext")
    w = WatchProcess(inp, out, "--polling", "--interval", "0.3", "--settle", "0.5")
    shutil.copy(PHOTOS[0], inp / "new.jpg")
    wait_for_rows(out, {"new.jpg"})
    time.sleep(2)
    assert w.stop() == 0
    assert [r["image"] for r in rows(out)] == ["new.jpg"]


def test_a_name_that_is_not_utf8_is_logged_escaped_on_a_strict_stdout(tmp_path):
    """`watch --quiet` under systemd prints to a strict UTF-8 stdout; such a name killed it."""
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    w = WatchProcess(inp, out, "--settle", "0.5", env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})
    shutil.copy(PHOTOS[0], os.path.join(os.fsencode(inp), b"bad\xff.jpg"))
    w.wait_for_line("ok bad\\udcff.jpg")
    shutil.copy(PHOTOS[1], inp / "next.jpg")
    wait_for_rows(out, {"next.jpg"})
    assert w.stop() == 0
