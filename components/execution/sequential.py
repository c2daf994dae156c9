"""Sequential deletions (``<regime>@<T>``, docs/reference_metrics.md §"Sequential deletions"): the forget set
arrives as T successive requests on the same model, callable without Ray like :mod:`.compute`.

Request t (1-based) removes its part C_t of the forget set (:func:`sragu_core.forget.request_chunks`); the method
runs on the model request t − 1 left (θ0 for t = 1) with D_f = C_t and D_r = D minus C_1..C_t, so a later
request never trains on a point an earlier one removed.  After each request the model is compared with a
retrain on D minus C_1..C_t (the gold's recipe and init seed, so the last one is the cell's gold up to
float32 rounding), evaluated with D_f = C_1 ∪ … ∪ C_t: how far the model is, after t requests, from one that
never saw anything removed so far.  The cell's own row scores the model after the last request against the
cell's gold, exactly as a one-request cell scores its model; the per-request figures are extra columns:

* ``seq_t<t>_<m>`` for every m in :data:`SEQ_METRICS`, t = 1..T;
* ``seq_<m>_max`` and ``seq_<m>_mean`` over the T requests for ``avg_gap`` and ``js``.

Each request runs with the cell's seed; the method's time (``method_time_s``, hence RTE) is the sum over the
requests, and its step and epoch counts are summed too; stop reason, α/ω and layer multipliers are the last
request's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from sragu_core.data import DatasetSplits, UnlearnData
from sragu_core.ensemble import Member, train_ensemble
from sragu_core.evaluate import CellSplits, GoldReference, gold_distances, gold_reference, model_values, predictions
from sragu_core.forget import ForgetConfig, ForgetSet, request_chunks, retain_indices

from ..config import BenchmarkConfig
from .compute import CellInputs, build, run_unlearning

__all__ = ["SEQ_METRICS", "SEQ_SUMMARIES", "request_inputs", "train_step_golds", "unlearn_sequence", "request_values",
           "sequence_columns"]

SEQ_METRICS = ("avg_gap", "js", "forget_acc", "forget_acc_gap", "test_acc", "mia_auc")
SEQ_SUMMARIES = ("avg_gap", "js")


def request_inputs(ds: DatasetSplits, forget: ForgetSet, chunks: Sequence[torch.Tensor], t: int,
                   cfg: ForgetConfig) -> CellInputs:
    """What request ``t`` (0-based) runs on and is evaluated on: the method sees D_f = ``chunks[t]`` and D_r = D
    minus chunks 0..t; evaluation sees D_f = chunks 0..t together, that D_r, D_test and D_val (the forget set's
    membership non-members, drawn for the whole set, stay the attack's non-members)."""
    removed = torch.sort(torch.cat(list(chunks[:t + 1]))).values
    train = ds.train
    r = train.subset(retain_indices(len(train), removed))
    return CellInputs(UnlearnData(train.subset(chunks[t]), r, ds.val, ds.num_classes),
                      CellSplits(train.subset(removed), r, ds.test, ds.val, class_deletion=cfg.spec.by_class,
                                 mia_nonmembers=forget.nonmember_indices))


def train_step_golds(bench: BenchmarkConfig, model_name: str, ds: DatasetSplits, forget: ForgetSet, cfg: ForgetConfig,
                     recipe: Any, *, gold_seed: int, steps: int, seed: int, device) -> dict:
    """The requests and, after each, a retrain on what is left (init and batch order from ``gold_seed``, the
    gold's), as references on that request's evaluation splits.  Returns the fields of
    :class:`~components.execution.artifacts.StepGolds` (less key and forget key)."""
    chunks = request_chunks(forget.indices, steps, seed)
    n = len(ds.train)
    t0 = time.perf_counter()
    members = [Member(gold_seed, gold_seed, retain_indices(n, torch.cat(chunks[:t + 1]))) for t in range(steps)]
    states = train_ensemble(lambda s: build(bench, model_name, ds, seed=s), ds.train.to(device), recipe, members,
                            device=device)
    time_s = time.perf_counter() - t0
    refs = []
    for t, state in enumerate(states):
        model = build(bench, model_name, ds, state).to(device)
        refs.append(gold_reference(model, request_inputs(ds, forget, chunks, t, cfg).splits, device=device,
                                   seed=seed))
    return {"chunks": tuple(chunks), "references": tuple(refs), "time_s": time_s}


def unlearn_sequence(method: str, method_cfg: Any, model: nn.Module, ds: DatasetSplits, forget: ForgetSet,
                     chunks: Sequence[torch.Tensor], cfg: ForgetConfig, *, seed: int, device,
                     freeze_norm: bool = True, after=None) -> tuple[nn.Module, dict]:
    """Run the method once per request, each on the model the previous one left; returns the last model (CPU)
    and a summary shaped like :func:`~components.execution.compute.run_unlearning`'s (times, steps and epochs
    summed over the requests; the rest the last request's).  ``after(t, model, inputs)``, when given, is called
    after request ``t`` (0-based)."""
    total = {"method_time_s": 0.0, "steps": 0, "epochs_run": 0, "spectral_time_s": 0.0}
    peak = 0.0
    summary: dict = {}
    for t in range(len(chunks)):
        inputs = request_inputs(ds, forget, chunks, t, cfg)
        model, summary = run_unlearning(method, method_cfg, model, inputs, seed=seed, device=device,
                                        freeze_norm=freeze_norm)
        for k in total:
            total[k] += summary[k]
        peak = max(peak, summary["peak_mem_mb"])
        if after is not None:
            after(t, model, inputs)
    return model, {**summary, **total, "peak_mem_mb": peak}


def sequence_columns(per_request: Sequence[dict[str, float]]) -> dict[str, float]:
    """``seq_t<t>_<m>`` per request (1-based t) and ``seq_<m>_max`` / ``_mean`` over the requests."""
    out: dict[str, float] = {"seq_steps": len(per_request)}
    for t, values in enumerate(per_request, start=1):
        out.update({f"seq_t{t}_{m}": values[m] for m in SEQ_METRICS if m in values})
    for m in SEQ_SUMMARIES:
        xs = np.array([v[m] for v in per_request if m in v], dtype=float)
        if xs.size:
            out[f"seq_{m}_max"], out[f"seq_{m}_mean"] = float(xs.max()), float(xs.mean())
    return out


def request_values(model: nn.Module, inputs: CellInputs, reference: GoldReference, *, seed: int,
                   device) -> dict[str, float]:
    """The model's model metrics and gold distances after one request, against that request's retrain."""
    pred = predictions(model.to(device), inputs.splits, device=device)
    values = model_values(pred, inputs.splits, seed=seed)
    out = {**values, **gold_distances(pred, values, reference, inputs.splits, seed=seed)}
    model.cpu()
    return out
