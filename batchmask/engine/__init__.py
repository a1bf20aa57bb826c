"""Engines run worker tasks somewhere and stream results back to the driver.

An engine is built from a `WorkerConfig` and offers `results(batches)`, an
iterator over per-photo result dicts in completion order. The local process
pool is the default; other engines (Dask) implement the same interface.
"""

from .local import EngineError, LocalEngine

__all__ = ["EngineError", "LocalEngine", "make_engine"]
ENGINES = ("local", "dask")


def make_engine(config, workers: int | None = None, engine: str = "local", scheduler: str | None = None):
    """The local process pool, or Dask (a scheduler address, or a LocalCluster with engine="dask")."""
    if scheduler or engine == "dask":
        try:
            from .dask import DaskEngine
        except ImportError as e:
            raise EngineError(f"the Dask engine needs the 'dask' extra (pip install 'batchmask[dask]'): {e}") from None
        return DaskEngine(config, workers, scheduler)
    return LocalEngine(config, workers)
