"""The benchmark's steps with explicit inputs and outputs, callable without Ray (tests call them directly).

load data → train the original θ0 → select the forget set → retrain the gold → run a method → evaluate.
The pipeline chains these (in one process, or as Ray tasks); each returns plain values (tensors, models,
dicts) so it can cross process boundaries.
"""

from __future__ import annotations

import copy
import dataclasses
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sragu_core.data import DatasetSplits, UnlearnData
from sragu_core.errors import check
from sragu_core.evaluate import CellSplits, Predictions, evaluate_cell, gold_reference, predictions
from sragu_core.forget import ForgetConfig, ForgetSet, retain_indices, select_forget
from sragu_core.methods import run_method
from sragu_core.metrics import accuracy, predict
from sragu_core.models import build_model
from sragu_core.spectral import layer_alphas
from sragu_core.training import train

from .datasets import load_dataset
from .presets import BenchmarkConfig, Resolved

__all__ = ["pick_device", "load_splits", "train_original", "gold_predictions", "make_forget", "cell_inputs",
           "method_config",
           "run_unlearning", "score_cell", "CellInputs", "peak_mem_mb"]


def pick_device(spec: str) -> torch.device:
    """``auto`` → cuda when present, else cpu; an explicit ``cuda`` without a GPU is a clear error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check(not spec.startswith("cuda") or torch.cuda.is_available(), "device", spec,
          "cpu or auto (no CUDA device is visible here)")
    return torch.device(spec)


def load_splits(name: str, bench: BenchmarkConfig) -> DatasetSplits:
    d = bench.data
    ds = load_dataset(name, seed=d.split_seed, data_dir=d.data_dir, val_fraction=d.val_fraction,
                      test_fraction=d.test_fraction, download=d.download)
    if d.max_train is not None and d.max_train < len(ds.train):
        ds = dataclasses.replace(ds, train=ds.train.subset(torch.arange(d.max_train)))
    return ds


def train_original(ds: DatasetSplits, model_name: str, bench: BenchmarkConfig, *, seed: int,
                   device: torch.device) -> tuple[nn.Module, dict]:
    """θ0 for (dataset, model, seed) with the AGU recipe; returns the model and a summary that every cell
    of this original shares: training time and loss, test accuracy, and the per-layer α table."""
    model = build_model(dataclasses.replace(bench.model, name=model_name), ds.input_shape, ds.num_classes,
                        seed=seed).to(device)
    trace = train(model, ds.train.to(device), bench.train_for(model_name), seed=seed)
    test_acc = accuracy(predict(model, ds.test, device=device)[0], ds.test.y)
    alpha = {r.name: r.alpha for r in layer_alphas(model)}
    return model.cpu(), {"train_time_s": trace.wall_time_s, "train_loss": trace.epochs[-1]["train_loss"],
                         "test_acc": test_acc, "alpha": alpha}


def gold_predictions(gold: nn.Module, inputs: CellInputs, *, device: torch.device, seed: int) -> dict:
    """The gold's softmax outputs and losses on every split and its own accuracy/leakage values, stored
    with it and reused by every method of the forget set."""
    p = predictions(gold.to(device), inputs.splits, device=device)
    gold.cpu()
    return {"probs": p.probs, "losses": p.losses, "ref": gold_reference(p, inputs.splits, seed=seed)}


def make_forget(ds: DatasetSplits, cfg: ForgetConfig, *, seed: int, original: nn.Module | None,
                device: torch.device) -> ForgetSet:
    model = original.to(device) if original is not None else None
    fs = select_forget(cfg, ds.train, ds.num_classes, seed=seed, model=model, device=device)
    if original is not None:
        original.cpu()
    fs.manifest["dataset"] = ds.name
    return fs


@dataclass(frozen=True)
class CellInputs:
    data: UnlearnData  # what methods may see
    splits: CellSplits  # what evaluation sees (adds D_test)


def cell_inputs(ds: DatasetSplits, forget: ForgetSet) -> CellInputs:
    f = ds.train.subset(forget.indices)
    r = ds.train.subset(retain_indices(len(ds.train), forget.indices))
    return CellInputs(UnlearnData(f, r, ds.val, ds.num_classes), CellSplits(f, r, ds.test, ds.val))


def method_config(resolved: Resolved, method: str, model_name: str) -> Any:
    """The method's frozen config; gold retraining takes the original's recipe for ``model_name``."""
    cfg = resolved.methods[method]
    if method in ("retrain", "retrain_indep"):
        recipe = dataclasses.asdict(resolved.bench.train_for(model_name))
        cfg = dataclasses.replace(cfg, **recipe)
    return cfg


def peak_mem_mb(device: torch.device) -> float:
    """Peak memory: CUDA allocator peak on GPU, else this process's max RSS (a high-water mark)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2 ** 20 if sys.platform == "darwin" else rss / 1024


def _warm_up(model: nn.Module, inputs: CellInputs, device: torch.device) -> None:
    """One throwaway optimiser step so one-off costs of a fresh worker process are not billed to whichever
    method runs first there (RTE compares wall times): the first ``torch.optim.SGD`` lazily imports
    ``torch._dynamo`` (~1 s here), plus allocator and kernel warm-up."""
    m = copy.deepcopy(model).to(device)
    x, y = inputs.data.retain.x[:8].to(device), inputs.data.retain.y[:8].to(device)
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    torch.nn.functional.cross_entropy(m(x), y).backward()
    opt.step()


def run_unlearning(method: str, cfg: Any, original: nn.Module, inputs: CellInputs, *, seed: int,
                   device: torch.device) -> tuple[nn.Module, dict]:
    """Run one method on a copy of θ0; returns the (CPU) model and its trace summary."""
    _warm_up(original, inputs, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = run_method(method, original, inputs.data, cfg, seed=seed, device=device)
    t = result.trace
    summary = {"method_time_s": t.wall_time_s, "steps": t.steps, "epochs_run": len(t.epochs),
               "stop_reason": t.stop_reason, "spectral_time_s": t.extras.get("spectral_time_s", 0.0),
               "peak_mem_mb": peak_mem_mb(device), "epoch_trace": t.epochs,
               "alpha_omega": t.extras.get("alpha_omega")}
    return result.model.cpu(), summary


def score_cell(unlearned: nn.Module, gold: nn.Module, original: nn.Module, inputs: CellInputs, *,
               seed: int, device: torch.device, num_classes: int, gold_time_s: float,
               method_time_s: float, gold_pred: Predictions | None = None, original_alpha: dict | None = None,
               original_test_acc: float | None = None, gold_ref: dict | None = None) -> dict:
    """All SPEC §6 metrics of one cell, plus RTE = t_gold / t_method."""
    t0 = time.perf_counter()
    alpha0 = original_alpha if original_alpha is not None else {r.name: r.alpha for r in layer_alphas(original)}
    row = evaluate_cell(unlearned.to(device), gold.to(device), original.to(device), inputs.splits,
                        device=device, seed=seed, num_classes=num_classes, original_alpha=alpha0,
                        gold_pred=gold_pred, original_test_acc=original_test_acc, gold_ref=gold_ref)
    for m in (unlearned, gold, original):
        m.cpu()
    row["rte"] = gold_time_s / method_time_s if method_time_s > 0 else float("inf")
    row["eval_time_s"] = time.perf_counter() - t0
    return row

