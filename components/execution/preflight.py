"""Everything a run needs that can be wrong, checked before a file is written or Ray starts.

Shared by the benchmark and the sweeps: device, artifact store (local folder or S3 endpoint and bucket),
MLflow tracking store (SQLite folder or server) and the datasets.  Each failure is one ConfigError line.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ..config import Resolved
from ..io.store import Store
from ..io.tracking import Tracker, resolve_tracking_uri
from .compute import load_splits, pick_device

__all__ = ["Prepared", "preflight", "package_versions"]

_PACKAGES = ("torch", "numpy", "scikit-learn", "scipy", "ray", "mlflow", "weightwatcher", "pyarrow", "boto3")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in _PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "absent"
    return out


@dataclass
class Prepared:
    resolved: Resolved
    store: Store
    tracker: Tracker
    datasets: dict
    out: Path


def preflight(resolved: Resolved, *, store_uri: str, out: Path, experiment: str | None = None) -> Prepared:
    """Validate every input that can be wrong, writing nothing; raises ConfigError with one clear line."""
    pick_device(resolved.bench.device)
    store = Store(store_uri)
    store.check()
    tracker = Tracker(resolve_tracking_uri(out), experiment or f"sragu-{resolved.bench.name}",
                      artifact_root=out / "mlartifacts")
    tracker.check()
    datasets = {name: load_splits(name, resolved.bench) for name in resolved.bench.datasets}
    return Prepared(resolved, store, tracker, datasets, out)
