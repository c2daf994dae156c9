"""Everything a run needs that can be wrong, checked before a file is written or Ray starts.

Shared by the benchmark and the sweeps: device, Ray cluster address (``ray.address`` or RAY_ADDRESS: its
form, ``auto`` resolved to the recorded cluster, a 3 s TCP probe; ``ray.num_cpus`` only with a local instance),
artifact store (local folder or S3 endpoint and bucket), MLflow tracking store (SQLite folder or server) and
the datasets.  Each failure is one ConfigError line.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from sragu_core.errors import ConfigError, check

from ..config import Resolved
from ..io.store import Store
from ..io.tracking import Tracker, resolve_tracking_uri
from .compute import load_splits, pick_device
from .grid import ray_address

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
    ray_address(resolved)  # init_ray checks again when it starts: a cluster can go away in between
    store = Store(store_uri)
    store.check()
    tracker = Tracker(resolve_tracking_uri(out), experiment or f"sragu-{resolved.bench.name}",
                      artifact_root=out / "mlartifacts")
    tracker.check()
    datasets = {name: _data(name, resolved) for name in resolved.bench.datasets}
    return Prepared(resolved, store, tracker, datasets, out)


def _data(name: str, resolved: Resolved):
    """The dataset's splits, with the class indices of class deletions checked against it (not at run time)."""
    try:
        ds = load_splits(name, resolved.bench)
    except ConfigError as e:  # load_dataset's own argument names → the keys the user typed
        d = resolved.bench.data
        if e.field in ("val_fraction", "test_fraction"):
            raise ConfigError(f"data.{e.field}", e.value, e.allowed) from None
        if e.field == "val_fraction + test_fraction":
            raise ConfigError("data.val_fraction + data.test_fraction", f"{d.val_fraction} + {d.test_fraction}",
                              e.allowed) from None
        if e.field == "seed":
            raise ConfigError("data.split_seed", e.value, e.allowed) from None
        if e.field == "data_dir":
            key = "data.data_dir" if d.data_dir else "SRAGU_DATA_DIR" if os.environ.get("SRAGU_DATA_DIR") else \
                "data.data_dir (default ~/.cache/sragu/data; or SRAGU_DATA_DIR)"
            raise ConfigError(key, e.value, e.allowed) from None
        raise
    for f, text in zip(resolved.forget, resolved.bench.regimes):
        for c in f.classes:  # regimes without a class keep the default (0,), valid for every dataset
            check(0 <= c < ds.num_classes, "regimes", text, f"class indices in [0, {ds.num_classes - 1}] for {name}")
    return ds
