"""The local engine: a pool of worker processes on this machine.

Processes receive paths, not pixels, load the models once (pool initializer)
and get at most a few batches each in flight, so memory stays bounded however
many photos are queued. A worker that dies (a decoder crash, the OOM killer)
breaks the pool; the engine starts a new one, retries the photos that were in
flight one by one, and turns a photo that kills a worker twice into an error.
With a per-photo timeout, workers stop a slow photo themselves (SIGALRM); a
worker stuck in native code past a hard deadline is killed, and handled the same way.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from ..worker import WorkerConfig, init_worker, run_tasks

Task = tuple[str, str]


class EngineError(RuntimeError):
    """The engine cannot make progress (workers cannot start or keep dying)."""


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def crashed_result(task: Task) -> dict:
    return {"image": task[1], "status": "error", "error": "worker process crashed while reading this photo", "ms": 0.0}


def stuck_result(task: Task, seconds: float) -> dict:
    return {"image": task[1], "status": "error", "error": f"timed out after {seconds:g} s (worker stopped)", "ms": 0.0}


class LocalEngine:
    def __init__(self, config: WorkerConfig, workers: int | None = None, in_flight_per_worker: int = 2):
        self.config = config
        self.workers = workers or default_workers()
        self.max_in_flight = self.workers * in_flight_per_worker
        self._pool: ProcessPoolExecutor | None = None
        self._fresh_pool_failures = 0
        self.timeout = config.timeout

    def _deadline(self, batch: list[Task]) -> float:
        """Hard limit for a batch: its photos' soft limits, one batch queued ahead, start-up grace."""
        if not self.timeout:
            return float("inf")
        return time.monotonic() + 2 * self.timeout * len(batch) + 30.0

    def __enter__(self) -> "LocalEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _new_pool(self) -> ProcessPoolExecutor:
        ctx = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=init_worker, initargs=(self.config, os.getpid()))

    def close(self, cancel: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=not cancel, cancel_futures=True)
            self._pool = None

    def results(self, batches: Iterable[list[Task]]) -> Iterator[dict]:
        batches = iter(batches)
        retry: list[list[Task]] = []  # after a crash: photos retried alone, one at a time
        pending: dict[Future, tuple[list[Task], bool]] = {}
        deadlines: dict[Future, float] = {}
        exhausted = False
        while True:
            if self._pool is None:
                self._pool = self._new_pool()
            while len(pending) < self.max_in_flight:
                if retry:
                    if pending:
                        break
                    batch, alone = retry.pop(), True
                elif not exhausted:
                    batch, alone = next(batches, None), False
                    if batch is None:
                        exhausted = True
                        continue
                else:
                    break
                try:
                    fut = self._pool.submit(run_tasks, batch)
                    pending[fut] = (batch, alone)
                    deadlines[fut] = self._deadline(batch)
                except BrokenProcessPool:  # a worker died while the driver was busy
                    retry.append(batch) if alone else retry.extend([t] for t in reversed(batch))
                    break
            if not pending:
                if retry:
                    self._restart()
                    continue
                return
            next_deadline = min(deadlines[f] for f in pending)
            wait_for = None if next_deadline == float("inf") else max(0.0, next_deadline - time.monotonic())
            done, _ = wait(pending, timeout=wait_for, return_when=FIRST_COMPLETED)
            if not done:  # a worker is stuck inside native code: stop the pool, retry the others alone
                now = time.monotonic()
                for p in multiprocessing.active_children():
                    p.kill()
                for fut, (batch, alone) in pending.items():
                    if alone and deadlines[fut] <= now:
                        yield stuck_result(batch[0], self.timeout)
                    else:
                        retry.extend([t] for t in reversed(batch))
                pending.clear()
                self.close(cancel=True)
                continue
            broken = False
            for fut in done:
                batch, alone = pending.pop(fut)
                try:
                    results = fut.result()
                    self._fresh_pool_failures = 0
                    yield from results
                except BrokenProcessPool:
                    broken = True
                    if alone:
                        yield crashed_result(batch[0])
                    else:
                        retry.extend([t] for t in reversed(batch))
            if broken:
                for batch, _alone in pending.values():
                    retry.extend([t] for t in reversed(batch))
                pending.clear()
                self._restart()

    def _restart(self) -> None:
        """Replace a broken pool; give up when fresh pools keep dying before finishing any task."""
        self.close(cancel=True)
        self._fresh_pool_failures += 1
        if self._fresh_pool_failures > 3:
            raise EngineError("worker processes keep dying before finishing any photo (out of memory? broken install?)")
