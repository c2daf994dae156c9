"""What a result row becomes in MLflow, and back (docs/design.md §8): configs flattened to dotted params, values
clipped to MLflow's limits and shown to 6 significant digits, a row split into finite metrics and string tags,
and a parent's cells read back whichever way they were logged (:func:`cells_from_mlflow`).  Plain functions of
values; :mod:`components.io.tracking` does the requests."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import tempfile
from collections.abc import Mapping
from typing import Any

from mlflow.entities import Param
from mlflow.tracking import MlflowClient

__all__ = ["MAX_PARAM_VAL", "MAX_TAG_VAL", "SIG_DIGITS", "as_params", "as_tags", "cells_from_mlflow", "clip",
           "display_value", "flatten", "jsonable", "row_metrics", "split_metrics"]

MAX_PARAM_VAL, MAX_TAG_VAL = 6000, 8000  # MLflow's limits on a param's and a run tag's value (characters)
SIG_DIGITS = 6  # params and tags show floats to this many significant digits (metrics keep full precision)


def flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested dicts (and dataclasses) → one level with dotted keys: ``{"train": {"lr": 0.1}}`` → ``train.lr``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            v = dataclasses.asdict(v)
        sub = flatten(v, key + ".") if isinstance(v, Mapping) and v else {key: v}
        for sk, sv in sub.items():
            if sk in out:  # {"a.b": 1, "a": {"b": 2}} — MLflow would reject the whole batch
                raise ValueError(f"flattened key {sk!r} occurs twice; rename one of them")
            out[sk] = sv
    return out


def row_metrics(row: Mapping) -> dict:
    """A result row as a cell run's metrics: the row, with ``layer_multipliers`` (JSON) spread into one
    ``multiplier.<layer>`` metric per layer (the effective step multiplier c·ω_ℓ SRAGU applied)."""
    metrics = dict(row)
    if isinstance(row.get("layer_multipliers"), str) and row["layer_multipliers"]:
        metrics.update({f"multiplier.{k}": v for k, v in json.loads(metrics.pop("layer_multipliers")).items()})
    return metrics


def cells_from_mlflow(client: MlflowClient, experiment_id: str, parent_id: str) -> list[dict]:
    """The cells a parent run holds, read back from MLflow whichever way they were logged: ``{"cell_key": ...,
    <metric>: value}`` with every finite number of the cell (its run's metrics, or :func:`row_metrics` of its row
    in a group run's ``cells.parquet``; bools as 0/1), sorted by cell key.  What a per-cell and a per-group log of
    one grid must agree on."""
    import pyarrow.parquet as pq

    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=1000,
                                  page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    out: dict[str, dict] = {}
    for r in runs:
        role = r.data.tags.get("sragu.role")
        if role == "cell":
            key = r.data.tags["sragu.cell_key"]
            out[key] = {"cell_key": key, **r.data.metrics}
        elif role == "group":
            with tempfile.TemporaryDirectory() as tmp:
                path = client.download_artifacts(r.info.run_id, "cells.parquet", tmp)
                for row in pq.read_table(path).to_pylist():
                    out[row["cell_key"]] = {"cell_key": row["cell_key"], **split_metrics(row_metrics(row))[0]}
    return [out[k] for k in sorted(out)]


def scalar(v: Any) -> Any:
    """numpy scalars and 0-d tensors → Python scalars."""
    return v.item() if hasattr(v, "item") and getattr(v, "ndim", None) == 0 else v


def split_metrics(metrics: Mapping) -> tuple[dict[str, float], dict[str, str], list[str]]:
    """(finite numbers, strings → tags, skipped keys); bools count as 0/1."""
    nums: dict[str, float] = {}
    strings: dict[str, str] = {}
    skipped: list[str] = []
    for k, v in flatten(metrics).items():
        v = scalar(v)
        if isinstance(v, numbers.Real) and math.isfinite(float(v)):
            nums[k] = float(v)
        elif v is None or isinstance(v, numbers.Real):
            skipped.append(k)
        else:
            strings[k] = clip(param_str(v), MAX_TAG_VAL)
    return nums, strings, skipped


def as_params(params: Mapping) -> list[Param]:
    return [Param(k, clip(param_str(v), MAX_PARAM_VAL)) for k, v in flatten(params).items()]


def param_str(v: Any) -> str:
    v = scalar(v)
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple, set, frozenset, Mapping)):
        return json.dumps(rounded(jsonable(v)), default=str)
    return display_value(v)


def display_value(v: Any) -> str:
    """A param's or tag's text: a float to 6 significant digits (``0.06499999999`` → ``0.065``, ``2.0`` stays
    ``2.0``, ``1e-05`` stays), anything else ``str``.  Metrics keep full precision; this is what a table shows."""
    v = scalar(v)
    if isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral):
        return repr(float(f"{float(v):.{SIG_DIGITS}g}"))
    return str(v)


def rounded(x: Any) -> Any:
    if isinstance(x, float):
        return float(f"{x:.{SIG_DIGITS}g}")
    if isinstance(x, list):
        return [rounded(v) for v in x]
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    return x


def as_tags(tags: Mapping) -> dict[str, str]:
    return {str(k): clip(param_str(v), MAX_TAG_VAL) for k, v in tags.items()}


def clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def jsonable(x: Any) -> Any:
    """Strict-JSON version of configs and tables: NaN/inf → null, tuples/sets → lists, paths → str."""
    x = scalar(x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        x = dataclasses.asdict(x)
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (set, frozenset)):
        return sorted((jsonable(v) for v in x), key=str)
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, (str, int, bool)):
        return x
    return str(x)
