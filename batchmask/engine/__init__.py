"""Engines run worker tasks somewhere and stream results back to the driver.

An engine is built from a `WorkerConfig` and offers `results(batches)`, an
iterator over per-photo result dicts in completion order. The local process
pool is the default; other engines (Dask) implement the same interface.
"""

from .local import EngineError, LocalEngine

__all__ = ["EngineError", "LocalEngine"]
