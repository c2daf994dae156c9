"""The benchmark's unit tasks, cache-aware: each first looks for its artifact in the store.

These are plain functions (the Ray runner wraps them with ``ray.remote``; tests call them directly).
They exchange small plain values — state dicts, index tensors, dicts — so they cross process and
machine boundaries, and each writes its own artifact under its content key, so a rerun, a retried
task or another invocation reuses it instead of recomputing.
"""

from __future__ import annotations

import dataclasses
import os
import time

import torch

from sragu_core.data import DatasetSplits
from sragu_core.evaluate import Predictions
from sragu_core.forget import ForgetSet
from sragu_core.models import build_model

from .plan import Artifact, Cell
from .presets import BenchmarkConfig
from .steps import cell_inputs, gold_predictions, make_forget, pick_device, run_unlearning, score_cell, train_original
from .store import Store

__all__ = ["original_task", "forget_task", "gold_task", "cell_task", "cell_path", "model_from_state",
           "forget_set_of"]


def cell_path(key: str) -> str:
    return f"cells/{key}.parquet"


def _threads() -> None:
    # SPEC §9: one BLAS/torch thread per task; Ray gives each task its own CPU(s)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


def model_from_state(bench: BenchmarkConfig, model_name: str, ds: DatasetSplits,
                     state: dict) -> torch.nn.Module:
    """Rebuild a stored model (original or gold) of ``model_name`` for dataset ``ds``."""
    cfg = dataclasses.replace(bench.model, name=model_name)
    m = build_model(cfg, ds.input_shape, ds.num_classes, seed=0)
    m.load_state_dict(state)
    return m


def original_task(store: Store, art: Artifact, ds: DatasetSplits, bench: BenchmarkConfig, model_name: str,
                  seed: int) -> dict:
    """θ0 for (dataset, model, seed): ``{"state": state_dict, "meta": {...}}``."""
    _threads()
    path = f"artifacts/originals/{art.key}.pt"
    if store.exists(path):
        return store.get_torch(path)
    model, meta = train_original(ds, model_name, bench, seed=seed, device=pick_device(bench.device))
    out = {"state": model.state_dict(), "meta": {**meta, "key": art.key, "inputs": art.inputs}}
    store.put_torch(path, out)
    return out


def forget_task(store: Store, art: Artifact, ds: DatasetSplits, bench: BenchmarkConfig, cell: Cell,
                original: dict | None) -> dict:
    """The forget set's indices and manifest: ``{"indices": [...], "manifest": {...}}``."""
    _threads()
    path = f"artifacts/forget/{art.key}.json"
    if store.exists(path):
        return store.get_json(path)
    model = model_from_state(bench, cell.model, ds, original["state"]) if original is not None else None
    fs = make_forget(ds, cell.forget, seed=cell.seed, original=model, device=pick_device(bench.device))
    out = {"indices": fs.indices.tolist(), "manifest": {**fs.manifest, "key": art.key}}
    store.put_json(path, out)
    return out


def forget_set_of(forget: dict) -> ForgetSet:
    """A :class:`ForgetSet` from the stored JSON form."""
    return ForgetSet(torch.tensor(forget["indices"], dtype=torch.int64), forget["manifest"])


def gold_task(store: Store, art: Artifact, ds: DatasetSplits, bench: BenchmarkConfig, cell: Cell,
              original: dict, forget: dict, retrain_cfg) -> dict:
    """The gold model (retrained on D_r with θ0's recipe): ``{"state", "meta": {"method_time_s", ...}}``."""
    _threads()
    path = f"artifacts/gold/{art.key}.pt"
    if store.exists(path):
        return store.get_torch(path)
    inputs = cell_inputs(ds, forget_set_of(forget))
    model, summary = run_unlearning("retrain", retrain_cfg, model_from_state(bench, cell.model, ds, original["state"]),
                                    inputs, seed=cell.seed, device=pick_device(bench.device))
    out = {"state": model.state_dict(), "pred": gold_predictions(model, inputs, device=pick_device(bench.device),
                                                                   seed=cell.seed),
           "meta": {"method_time_s": summary["method_time_s"], "key": art.key, "forget_key": forget["manifest"]["key"]}}
    store.put_torch(path, out)
    return out


def cell_task(store: Store, cell: Cell, ds: DatasetSplits, bench: BenchmarkConfig, original: dict,
              forget: dict, gold: dict, extra: dict) -> dict:
    """Run one method and score it against the gold; writes ``cells/<key>.parquet`` (one row).

    Returns ``{"row": {...}, "alpha_omega": [...] | None, "epoch_trace": [...]}``.  ``extra`` holds columns
    the driver wants in the row (code version, tuning marks).
    """
    _threads()
    t0 = time.perf_counter()
    device = pick_device(bench.device)
    fs = forget_set_of(forget)
    inputs = cell_inputs(ds, fs)
    original_model = model_from_state(bench, cell.model, ds, original["state"])
    unlearned, summary = run_unlearning(cell.method, cell.method_cfg, original_model, inputs, seed=cell.seed,
                                        device=device)
    metrics = score_cell(unlearned, model_from_state(bench, cell.model, ds, gold["state"]), original_model, inputs,
                         seed=cell.seed, device=device, num_classes=ds.num_classes,
                         gold_time_s=gold["meta"]["method_time_s"], method_time_s=summary["method_time_s"],
                         gold_pred=Predictions(gold["pred"]["probs"], gold["pred"]["losses"]),
                         original_alpha=original["meta"]["alpha"], original_test_acc=original["meta"]["test_acc"],
                         gold_ref=gold["pred"]["ref"])
    manifest = fs.manifest
    row = {**cell.coords(), "status": "ok", "forget_fraction": _fraction(cell, manifest),
           "forget_size": manifest["size"], "train_size": manifest["train_size"],
           "forget_key": forget["manifest"]["key"], "original_key": original["meta"]["key"],
           "gold_key": gold["meta"]["key"], "gold_time_s": gold["meta"]["method_time_s"], **extra,
           **{k: v for k, v in summary.items() if k not in ("epoch_trace", "alpha_omega")}, **metrics,
           "task_time_s": time.perf_counter() - t0}
    store.write_rows(cell_path(cell.key), [row])
    return {"row": row, "alpha_omega": summary["alpha_omega"], "epoch_trace": summary["epoch_trace"]}


def _fraction(cell: Cell, manifest: dict) -> float:
    if cell.forget.regime in ("class", "class_concentrated"):
        return manifest["size"] / manifest["train_size"]
    return cell.forget.fraction
