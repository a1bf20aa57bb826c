"""The Dask distributed engine: the same tasks (batches of photo paths) on a Dask cluster.

Each Dask worker loads the models once, through a worker plugin registered by
the driver, and keeps them for every later task of the same configuration.
Results stream back to the driver, which alone writes OUTPUT, so resume, exit
codes and the output contract are those of a local run. Inputs and models must
be reachable by every worker under the same paths (a shared mount, the same
image). A worker that dies mid-batch has its tasks rerun elsewhere by the
scheduler; a batch that keeps killing workers is split and its photos retried
alone, and a photo that still kills workers becomes an error row.

Needs the `dask` extra (dask[distributed]).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import pickle
import signal
import threading
from collections.abc import Iterable, Iterator

from distributed.diagnostics.plugin import WorkerPlugin

from ..worker import Worker, WorkerConfig
from .local import EngineError, crashed_result, default_workers

Task = tuple[str, str]


def _probe(address: str, timeout: float) -> None:
    """Ask the scheduler who it is, with one deadline for connecting and answering. A refused
    connection or an unknown host fails at once (Dask's own connect retries until its timeout)."""
    import asyncio
    import socket
    from urllib.parse import urlsplit

    from distributed.core import rpc

    parts = urlsplit(address)
    if parts.scheme == "tcp":
        try:
            socket.create_connection((parts.hostname, parts.port), timeout=timeout).close()
        except (ConnectionRefusedError, socket.gaierror) as e:
            raise EngineError(f"cannot reach the Dask scheduler at {address} ({e.strerror or e})") from None
        except OSError:
            pass  # a timeout or a route problem: the Dask handshake below reports it

    async def identity():
        async with rpc(address) as scheduler:
            return await scheduler.identity()

    async def within():
        return await asyncio.wait_for(identity(), timeout)

    try:
        asyncio.run(within())
    except (OSError, asyncio.TimeoutError, TimeoutError) as e:
        why = f" ({type(e).__name__}: {e})" if str(e) else ""
        raise EngineError(f"cannot reach the Dask scheduler at {address} within {timeout:g} s{why}") from None
    except Exception as e:  # a server that answers, but not as a Dask scheduler
        raise EngineError(f"{address} did not answer as a Dask scheduler ({type(e).__name__}: {e})") from None


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT and SIGTERM while a LocalCluster starts, then deliver them.

    Interrupted inside its start, a LocalCluster is left half made, and distributed's own
    exit hook fails on it with a traceback; started, it closes cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if caught:
            signal.raise_signal(caught[0])


class _NoCloseTracebacks(logging.Filter):
    """Drops the tracebacks distributed logs while a client shuts down after losing its scheduler
    (CancelledError, a closed comm): the run then says in one line what happened and how to resume."""

    def filter(self, record: logging.LogRecord) -> bool:
        from distributed.comm.core import CommClosedError

        if record.exc_info and isinstance(record.exc_info[1], (asyncio.CancelledError, CommClosedError)):
            if not record.getMessage().strip():
                return False
            record.exc_info, record.exc_text = None, None  # the line stays, its traceback goes
        return True


def _log_handlers() -> list[logging.Handler]:
    """The handlers distributed prints its log with (on its own loggers, which do not propagate)."""
    found: list[logging.Handler] = []
    for name in ("distributed", "distributed.client"):
        found += [h for h in logging.getLogger(name).handlers if h not in found]
    return found


def _plugin_name(config: WorkerConfig) -> str:
    return "batchmask-" + hashlib.sha1(pickle.dumps(config)).hexdigest()[:12]


class ModelsPlugin(WorkerPlugin):
    """Loads batchmask's models into a Dask worker once (a distributed WorkerPlugin)."""

    idempotent = True

    def __init__(self, config: WorkerConfig):
        self.config = config
        self.worker: Worker | None = None

    def setup(self, worker) -> None:
        self.worker = Worker(self.config)

    def teardown(self, worker) -> None:
        self.worker = None


def run_on_dask_worker(plugin: str, tasks: list[Task]) -> list[dict]:
    from distributed import get_worker

    dask_worker = get_worker()
    loaded = dask_worker.plugins[plugin]
    if loaded.worker is None:
        loaded.setup(dask_worker)
    results = loaded.worker.handle(tasks)
    for r in results:
        r["worker"] = dask_worker.address
    return results


class DaskEngine:
    def __init__(self, config: WorkerConfig, workers: int | None = None, scheduler: str | None = None,
                 connect_timeout: float = 10.0, in_flight_per_worker: int = 2):
        from distributed import Client, LocalCluster

        self.config = config
        self.cluster = self.client = None
        self.plugin = None
        self._quiet, self._handlers = _NoCloseTracebacks(), _log_handlers()
        for handler in self._handlers:
            handler.addFilter(self._quiet)
        scheduler = scheduler.rstrip("/") if scheduler else scheduler  # tcp://host:8786/ names the same scheduler
        try:
            if scheduler:
                _probe(scheduler, connect_timeout)  # Client alone can hang for a minute on a port that is not Dask
                self.client = Client(scheduler, timeout=connect_timeout, set_as_default=False)
            else:
                with _signals_held():
                    self.cluster = LocalCluster(n_workers=workers or default_workers(), threads_per_worker=1, processes=True, dashboard_address=":0")
                self.client = Client(self.cluster, set_as_default=False)
        except (OSError, TimeoutError) as e:
            self.close()
            raise EngineError(f"cannot reach the Dask scheduler at {scheduler} within {connect_timeout:g} s ({e})") from None
        except BaseException:
            self.close()
            raise
        self.dashboard = self.client.dashboard_link
        n = len(self.client.scheduler_info()["workers"])
        if n == 0:
            try:
                self.client.wait_for_workers(1, timeout=connect_timeout * 3)
            except TimeoutError:
                self.close()
                raise EngineError(f"no Dask worker joined the scheduler at {scheduler} within {connect_timeout * 3:g} s "
                                  "(start workers with: dask worker ADDRESS --nthreads 1)") from None
            n = len(self.client.scheduler_info()["workers"])
        self.workers = n
        self.max_in_flight = max(2, n * in_flight_per_worker)
        self.plugin = _plugin_name(config)
        self.client.register_plugin(ModelsPlugin(config), name=self.plugin)

    def __enter__(self) -> "DaskEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self, cancel: bool = False) -> None:
        if self.client is not None:
            if self.plugin is not None and self.cluster is None:
                # a long-lived cluster serves many runs, each its own configuration: free this one's models
                try:
                    self.client.unregister_worker_plugin(self.plugin)
                except Exception:  # the scheduler may be gone: its workers' copies went with it
                    pass
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
        for handler in self._handlers:
            handler.removeFilter(self._quiet)

    def results(self, batches: Iterable[list[Task]]) -> Iterator[dict]:
        from concurrent.futures import CancelledError

        from distributed import as_completed
        from distributed.client import ClosedClientError
        from distributed.scheduler import KilledWorker

        batches = iter(batches)
        retry: list[list[Task]] = []
        futures: dict = {}
        done_queue = as_completed(loop=self.client.loop)

        def submit(batch: list[Task]) -> None:
            # pure=False: a resubmitted batch is a new task, not the failed one's cached result
            try:
                fut = self.client.submit(run_on_dask_worker, self.plugin, batch, pure=False)
            except ClosedClientError:  # the scheduler went away (a watch may notice only at its next photo)
                raise EngineError("lost the Dask scheduler (the client closed after failing to reconnect); "
                                  "start it again and rerun the command to resume") from None
            futures[fut] = batch
            done_queue.add(fut)

        def fill() -> None:
            while len(futures) < self.max_in_flight:
                batch = retry.pop() if retry else next(batches, None)
                if batch is None:
                    return
                submit(batch)

        fill()
        while futures:
            fut = next(done_queue)
            batch = futures.pop(fut)
            try:
                yield from fut.result()
            except CancelledError:  # the client lost the scheduler: stop, rows so far are committed
                raise EngineError("lost the Dask scheduler mid-run; the rows written so far are kept: "
                                  "start it again and rerun the same command to resume") from None
            except KilledWorker:
                if len(batch) == 1:
                    yield crashed_result(batch[0])
                else:
                    retry.extend([t] for t in reversed(batch))
            except Exception as e:  # a worker-side failure the worker did not turn into rows
                for task in batch:
                    yield {"image": task[1], "status": "error", "error": f"internal error on a Dask worker: {type(e).__name__}: {e}", "ms": 0.0}
            finally:
                fut.release()
            fill()
