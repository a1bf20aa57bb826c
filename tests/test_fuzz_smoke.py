"""A short Hypothesis run of the fuzz target in bench/fuzz_decode.py: mutants never become internal errors."""

import sys
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from fuzz_decode import mutants  # noqa: E402

from batchmask.models import default_detector_path  # noqa: E402
from batchmask.worker import Worker, WorkerConfig  # noqa: E402

WORKER = Worker(WorkerConfig(detector_path=str(default_detector_path()), timeout=10))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(mutants(), st.sampled_from(["x.jpg", "x.png", "x.gif", "x.webp", "x.tif", "x.bmp"]))
def test_mutated_images_become_ok_or_error_rows(tmp_path_factory, data, name):
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(data)
    r = WORKER.handle_one(str(path), name)
    assert r["status"] in ("ok", "error")
    assert not r["error"].startswith("internal error"), r["error"]
