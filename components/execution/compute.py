"""The benchmark's compute steps with explicit inputs and outputs, callable without Ray (tests call them directly).

load data → train the original θ0 → select the forget set → retrain the gold → run a method → evaluate.
``tasks`` chains these with the store's cache; ``grid`` runs the tasks on Ray.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sragu_core.data import DatasetSplits, UnlearnData
from sragu_core.ensemble import Member, predict_ensemble, train_ensemble
from sragu_core.errors import check
from sragu_core.evaluate import CellSplits, GoldReference, OriginalFacts, evaluate_cell, original_facts
from sragu_core.forget import ForgetConfig, ForgetSet, prepare_train, retain_indices, select_forget
from sragu_core.methods import run_method
from sragu_core.models import build_model
from sragu_core.training import train

from ..config import BenchmarkConfig
from ..io.datasets import load_dataset

__all__ = ["pick_device", "load_splits", "prepared", "build", "train_original", "make_forget", "subset_trainer",
           "CellInputs", "cell_inputs",
           "run_unlearning", "score", "peak_mem_mb"]


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


def prepared(ds: DatasetSplits, alter: ForgetConfig | None, seed: int) -> DatasetSplits:
    """``ds`` with the training set a data-changing regime (``mislabelled``, ``duplicates``) trains θ0 on: the
    same deterministic change wherever the run needs it (θ0, forget set, golds, cells); ``ds`` when None."""
    if alter is None:
        return ds
    train, _ = prepare_train(alter, ds.train, ds.num_classes, seed)
    return dataclasses.replace(ds, train=train)


def subset_trainer(bench: BenchmarkConfig, model_name: str, ds: DatasetSplits, *, seed: int, device: torch.device):
    """``trainer(subsets) -> (K, n) bool``: models of ``model_name`` trained with θ0's recipe on each index subset
    of ``ds.train`` (together, :func:`sragu_core.ensemble.train_ensemble`; member i seeded by
    ``member_seed(seed, "memo", i)``), and whether each classifies each training point correctly.  What the
    ``memorised`` regime's leave-subset-out estimate needs."""
    from .plan import member_seed

    def trainer(subsets: list[torch.Tensor]) -> torch.Tensor:
        build_fn = lambda s: build(bench, model_name, ds, seed=s)  # noqa: E731
        members = [Member(member_seed(seed, "memo", i), member_seed(seed, "memo", i), sub)
                   for i, sub in enumerate(subsets)]
        states = train_ensemble(build_fn, ds.train.to(device), bench.train_for(model_name), members, device=device)
        logits = predict_ensemble(build_fn, states, ds.train.x, device=device)
        return (logits.argmax(-1).cpu() == ds.train.y.cpu()).cpu()
    return trainer


def build(bench: BenchmarkConfig, model_name: str, ds: DatasetSplits, state: dict | None = None,
          *, seed: int = 0) -> nn.Module:
    """A ``model_name`` network for dataset ``ds``: freshly initialised for ``seed``, or loaded from ``state``."""
    model = build_model(dataclasses.replace(bench.model, name=model_name), ds.input_shape, ds.num_classes, seed=seed)
    if state is not None:
        model.load_state_dict(state)
    return model


def train_original(ds: DatasetSplits, model_name: str, bench: BenchmarkConfig, *, seed: int,
                   device: torch.device) -> tuple[nn.Module, OriginalFacts, dict]:
    """θ0 for (dataset, model, seed) with the original's recipe; returns the model, the facts every cell of it
    shares (α table, test accuracy) and its training summary (time, last loss)."""
    model = build(bench, model_name, ds, seed=seed).to(device)
    trace = train(model, ds.train.to(device), bench.train_for(model_name), seed=seed)
    facts = original_facts(model, ds.test, device=device)
    return model.cpu(), facts, {"train_time_s": trace.wall_time_s, "train_loss": trace.epochs[-1]["train_loss"]}


def make_forget(ds: DatasetSplits, cfg: ForgetConfig, *, seed: int, original: nn.Module | None,
                device: torch.device, trainer=None) -> ForgetSet:
    """The forget set of ``cfg`` in ``ds.train``, and the membership attack's non-members: the same rule on D_test.
    ``trainer``: :func:`subset_trainer`, for regimes that train models of their own (``memorised``)."""
    model = original.to(device) if original is not None else None
    fs = select_forget(cfg, ds.train, ds.num_classes, seed=seed, model=model, device=device, heldout=ds.test,
                       trainer=trainer)
    if original is not None:
        original.cpu()
    fs.manifest["dataset"] = ds.name
    return fs


@dataclass(frozen=True)
class CellInputs:
    data: UnlearnData  # what methods may see
    splits: CellSplits  # what evaluation sees (adds D_test)


def cell_inputs(ds: DatasetSplits, forget: ForgetSet, cfg: ForgetConfig) -> CellInputs:
    f = ds.train.subset(forget.indices)
    r = ds.train.subset(retain_indices(len(ds.train), forget.indices))
    return CellInputs(UnlearnData(f, r, ds.val, ds.num_classes),
                      CellSplits(f, r, ds.test, ds.val, class_deletion=cfg.spec.by_class,
                                 mia_nonmembers=forget.nonmember_indices))


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
                   device: torch.device, freeze_norm: bool = True) -> tuple[nn.Module, dict]:
    """Run one method on a copy of θ0; returns the (CPU) model and its trace summary.  ``freeze_norm``
    (``BenchmarkConfig.freeze_norm``): norm layers keep their running statistics while the method runs."""
    _warm_up(original, inputs, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = run_method(method, original, inputs.data, cfg, seed=seed, device=device, freeze_norm=freeze_norm)
    t = result.trace
    summary = {"method_time_s": t.wall_time_s, "steps": t.steps, "epochs_run": len(t.epochs),
               "stop_reason": t.stop_reason, "spectral_time_s": t.extras.get("spectral_time_s", 0.0),
               "peak_mem_mb": peak_mem_mb(device), "epoch_trace": t.epochs,
               "alpha_omega": t.extras.get("alpha_omega"),
               # the effective per-layer step multiplier (SRAGU, its controls, agu_layerwise), as JSON text so
               # one Parquet column holds every architecture's layer names
               "layer_multipliers": json.dumps(t.extras["layer_multipliers"], sort_keys=True)
               if "layer_multipliers" in t.extras else ""}
    return result.model.cpu(), summary


def score(unlearned: nn.Module, original: nn.Module, facts: OriginalFacts, gold: GoldReference, inputs: CellInputs,
          *, seed: int, device: torch.device, gold_time_s: float, method_time_s: float) -> dict:
    """Every registered metric of one cell, plus RTE = t_gold / t_method and the evaluation's own time."""
    t0 = time.perf_counter()
    row = evaluate_cell(unlearned.to(device), original.to(device), facts, gold, inputs.splits, device=device,
                        seed=seed)
    for m in (unlearned, original):
        m.cpu()
    row["rte"] = gold_time_s / method_time_s if method_time_s > 0 else float("inf")
    row["eval_time_s"] = time.perf_counter() - t0
    return row
