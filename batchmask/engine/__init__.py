"""Engines run worker tasks somewhere and stream results back to the driver.

An engine is built from a `WorkerConfig` and offers `results(batches)`, an
iterator over per-photo result dicts in completion order. The local process
pool is the default; other engines (Dask) implement the same interface.
"""

from .local import EngineError, LocalEngine

__all__ = ["EngineError", "LocalEngine", "make_engine", "scheduler_address_problem"]
ENGINES = ("local", "dask")
_PROTOCOLS = ("tcp", "tls", "ws", "wss", "ucx")


def scheduler_address_problem(address: str) -> str | None:
    """Why `address` is not a Dask scheduler address like tcp://HOST:8786, or None when it is one."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError:  # an unclosed IPv6 bracket, a port out of range
        parts, port = urlsplit(""), None
    if parts.scheme not in _PROTOCOLS or not parts.hostname or port is None or parts.path not in ("", "/"):
        return f"not a Dask scheduler address: {address!r} (expected {_PROTOCOLS[0]}://HOST:PORT, e.g. tcp://10.0.0.5:8786)"
    return None


def make_engine(config, workers: int | None = None, engine: str = "local", scheduler: str | None = None):
    """The local process pool, or Dask (a scheduler address, or a LocalCluster with engine="dask")."""
    if scheduler or engine == "dask":
        try:
            from .dask import DaskEngine
        except ImportError as e:
            raise EngineError(f"the Dask engine needs the 'dask' extra (pip install 'batchmask[dask]'): {e}") from None
        return DaskEngine(config, workers, scheduler)
    return LocalEngine(config, workers)
