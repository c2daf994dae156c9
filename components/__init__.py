"""Pipeline steps with explicit inputs and outputs; all I/O (datasets, artifact store, MLflow) lives here.

Everything here is callable without Ray: ``steps`` and ``tasks`` are plain functions, ``orchestrator``
wraps them in Ray tasks, ``driver`` runs a whole benchmark.
"""

from components.datasets import DATASETS, load_dataset, read_cifar_pickle, read_idx
from components.presets import PRESETS, BenchmarkConfig, Resolved, resolve
from components.store import Store

__all__ = ["DATASETS", "load_dataset", "read_cifar_pickle", "read_idx", "PRESETS", "BenchmarkConfig", "Resolved",
           "resolve", "Store"]
