"""The benchmark's unit tasks, cache-aware: each first looks for its artifact in the store.

Plain functions (``grid`` wraps them with ``ray.remote``; tests call them directly).  Each takes the spec
of what it builds and the typed artifacts it depends on, writes its own artifact under its content key
and returns it, so a rerun, a retried task or another invocation reuses it instead of recomputing.
"""

from __future__ import annotations

import os
import time

import torch

from sragu_core.data import DatasetSplits
from sragu_core.evaluate import gold_reference

from ..config import GOLD, BenchmarkConfig
from ..io.store import Store
from .artifacts import ForgetArtifact, GoldModel, OriginalModel
from .compute import build, cell_inputs, make_forget, pick_device, run_unlearning, score, train_original
from .plan import Cell, ForgetSpec, GoldSpec, OriginalSpec

__all__ = ["original_task", "forget_task", "gold_task", "cell_task", "cell_path"]


def cell_path(key: str) -> str:
    return f"cells/{key}.parquet"


def _threads() -> None:
    # one BLAS/torch thread per task (docs/design.md §9); Ray gives each task its own CPU(s)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


def original_task(store: Store, spec: OriginalSpec, ds: DatasetSplits, bench: BenchmarkConfig) -> OriginalModel:
    """θ0 for (dataset, model, seed)."""
    _threads()
    path = f"artifacts/originals/{spec.key}.pt"
    if store.exists(path):
        return OriginalModel.from_store(store.get_torch(path))
    model, facts, summary = train_original(ds, spec.model, bench, seed=spec.seed, device=pick_device(bench.device))
    out = OriginalModel(spec.key, model.state_dict(), facts, summary["train_time_s"], summary["train_loss"],
                        spec.inputs)
    store.put_torch(path, out.to_store())
    return out


def forget_task(store: Store, spec: ForgetSpec, ds: DatasetSplits, bench: BenchmarkConfig,
                original: OriginalModel | None) -> ForgetArtifact:
    """The forget set's indices and manifest; ``original`` is θ0 for regimes that score points with it."""
    _threads()
    path = f"artifacts/forget/{spec.key}.json"
    if store.exists(path):
        return ForgetArtifact.from_store(store.get_json(path))
    model = build(bench, spec.original.model, ds, original.state) if spec.original is not None else None
    fs = make_forget(ds, spec.config, seed=spec.seed, original=model, device=pick_device(bench.device))
    out = ForgetArtifact(spec.key, fs)
    store.put_json(path, out.to_store())
    return out


def gold_task(store: Store, spec: GoldSpec, ds: DatasetSplits, bench: BenchmarkConfig, original: OriginalModel,
              forget: ForgetArtifact) -> GoldModel:
    """The gold (retrained on D_r with θ0's recipe), its predictions and its own metric values."""
    _threads()
    path = f"artifacts/gold/{spec.key}.pt"
    if store.exists(path):
        return GoldModel.from_store(store.get_torch(path))
    device = pick_device(bench.device)
    inputs = cell_inputs(ds, forget.forget, spec.forget.config)
    model, summary = run_unlearning(GOLD, spec.config, build(bench, spec.original.model, ds, original.state),
                                    inputs, seed=spec.original.seed, device=device)
    reference = gold_reference(model.to(device), inputs.splits, device=device, seed=spec.original.seed)
    out = GoldModel(spec.key, forget.key, model.cpu().state_dict(), reference, summary["method_time_s"])
    store.put_torch(path, out.to_store())
    return out


def cell_task(store: Store, cell: Cell, ds: DatasetSplits, bench: BenchmarkConfig, original: OriginalModel,
              forget: ForgetArtifact, gold: GoldModel, extra: dict) -> dict:
    """Run one method and score it against the gold; writes ``cells/<key>.parquet`` (one row).

    Returns ``{"row": {...}, "alpha_omega": [...] | None, "epoch_trace": [...]}``.  ``extra`` holds columns
    the driver wants in the row (code version, tuning marks).
    """
    _threads()
    t0 = time.perf_counter()
    device = pick_device(bench.device)
    inputs = cell_inputs(ds, forget.forget, cell.forget)
    original_model = build(bench, cell.model, ds, original.state)
    unlearned, summary = run_unlearning(cell.method, cell.method_cfg, original_model, inputs, seed=cell.seed,
                                        device=device)
    metrics = score(unlearned, original_model, original.facts, gold.reference, inputs, seed=cell.seed,
                    device=device, gold_time_s=gold.time_s, method_time_s=summary["method_time_s"])
    manifest = forget.manifest
    fraction = manifest["size"] / manifest["train_size"] if cell.forget.spec.by_class else cell.forget.fraction
    row = {**cell.coords(), "status": "ok", "forget_fraction": fraction,
           "forget_size": manifest["size"], "train_size": manifest["train_size"],
           "forget_key": forget.key, "original_key": original.key,
           "gold_key": gold.key, "gold_time_s": gold.time_s, **extra,
           **{k: v for k, v in summary.items() if k not in ("epoch_trace", "alpha_omega")}, **metrics,
           "task_time_s": time.perf_counter() - t0}
    store.write_rows(cell_path(cell.key), [row])
    return {"row": row, "alpha_omega": summary["alpha_omega"], "epoch_trace": summary["epoch_trace"]}
