"""Distributions of models instead of single draws (docs/reference_metrics.md): the compute behind ``gold.k``
and ``shadow.n``, callable without Ray like :mod:`.compute`.

* :func:`train_gold_ensemble`: ``gold.k`` retrains on D_r, trained together (:func:`sragu_core.ensemble.
  train_ensemble`), each with an init and batch order independent of θ0's; stored as references (predictions,
  model values, margins on the query points) plus the noise-floor band: every gold-distance metric between
  every pair of members.
* :func:`ensemble_columns`: a cell's gold-distance metrics against every member (mean, sd) and the band.
* :func:`train_shadows`: ``shadow.n - 1`` more originals beside θ0 (same data, recipe; own seeds).
* :func:`shadow_columns`: the cell's method run on each shadow original too; the n unlearned models' margins
  against the k retrained members' give KLoM on D_f, D_r and D_val query points and U-LiRA on D_f.

The margin of a model on (x, y) is z_y − logsumexp_{j≠y} z_j (= logit p_y, LiRA's scaled confidence), clipped to
±``shadow.margin_clip`` so a diverged model (non-finite logits) lands at the end of the histogram instead of
breaking it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from sragu_core.data import DatasetSplits, Split
from sragu_core.ensemble import Member, train_ensemble
from sragu_core.evaluate import (
    GOLD_DISTANCES,
    METRICS,
    GoldReference,
    gold_distances,
    gold_reference,
    model_values,
    predictions,
)
from sragu_core.reference import auto_bins, klom, klom_summary, margins, pairwise_band, ulira

from ..config import BenchmarkConfig, ShadowConfig
from .compute import CellInputs, build

__all__ = ["QUERY_SPLITS", "query_points", "train_members", "train_gold_ensemble", "ensemble_columns",
           "train_shadows", "shadow_columns", "model_margins"]

QUERY_SPLITS = ("forget", "retain", "val")
ASYMMETRIC = ("kl_to_gold", "kl_to_gold_test")  # KL(p_g || p_u): the order of the pair matters
_OPTIONAL = ("test_acc_forgotten_classes", "test_acc_other_classes")  # model metrics of class deletions only


def query_points(inputs: CellInputs, cfg: ShadowConfig, seed: int) -> dict[str, torch.Tensor]:
    """The points KLoM and U-LiRA look at: all of D_f, and ``query_points`` points of D_r and of D_val drawn
    by ``seed`` (indices into each split, sorted)."""
    out = {"forget": torch.arange(len(inputs.splits.forget))}
    for split in ("retain", "val"):
        n = len(getattr(inputs.splits, split))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        out[split] = torch.sort(order[:min(cfg.query_points, n)]).values
    return out


@torch.no_grad()
def model_margins(model: nn.Module, inputs: CellInputs, query: dict[str, torch.Tensor], *, device,
                  clip: float) -> dict[str, torch.Tensor]:
    """Margins (float32, clipped to ±clip, NaN → −clip) of ``model`` on the query points of each split."""
    was = model.training
    model.eval()
    out = {}
    for split, idx in query.items():
        s: Split = getattr(inputs.splits, split)
        logits = torch.cat([model(s.x[idx[i:i + 1024]].to(device)).float().cpu() for i in range(0, len(idx), 1024)])
        m = margins(logits, s.y[idx].cpu())
        out[split] = torch.nan_to_num(m, nan=-clip, posinf=clip, neginf=-clip).clamp(-clip, clip)
    model.train(was)
    return out


def train_members(bench: BenchmarkConfig, model_name: str, ds: DatasetSplits, data: Split, cfg: Any,
                  seeds: Sequence[int], *, device) -> list[dict[str, torch.Tensor]]:
    """Models of ``model_name`` trained with recipe ``cfg`` on ``data``, member i initialised and shuffled by
    ``seeds[i]``, all at once (vectorised where the architecture allows)."""
    return train_ensemble(lambda s: build(bench, model_name, ds, seed=s), data.to(device), cfg,
                          [Member(s, s) for s in seeds], device=device)


def train_gold_ensemble(bench: BenchmarkConfig, model_name: str, ds: DatasetSplits, inputs: CellInputs, cfg: Any,
                        seeds: Sequence[int], *, seed: int, device) -> dict:
    """The reference ensemble of one forget set: members' references and margins, and the noise-floor band.
    Returns the fields of :class:`~components.execution.artifacts.GoldEnsemble` (less key and forget key)."""
    t0 = time.perf_counter()
    states = train_members(bench, model_name, ds, inputs.data.retain, cfg, seeds, device=device)
    time_s = time.perf_counter() - t0
    query = query_points(inputs, bench.shadow, seed)
    members, per_split = [], {s: [] for s in QUERY_SPLITS}
    for state in states:
        model = build(bench, model_name, ds, state).to(device)
        members.append(gold_reference(model, inputs.splits, device=device, seed=seed))
        for split, m in model_margins(model, inputs, query, device=device, clip=bench.shadow.margin_clip).items():
            per_split[split].append(m)
    return {"members": tuple(members), "margins": {s: torch.stack(v) for s, v in per_split.items()},
            "query": query, "band": noise_band(members, inputs, seed=seed, quantiles=bench.gold.floor_quantiles),
            "time_s": time_s}


def noise_band(members: Sequence[GoldReference], inputs: CellInputs, *, seed: int,
               quantiles: tuple[float, float]) -> dict[str, dict[str, float]]:
    """Every gold-distance metric between members i and j (member i in the unlearned model's place, j in the
    gold's), summarised per metric by :func:`sragu_core.reference.pairwise_band`: each unordered pair once for a
    symmetric metric, both orders for an asymmetric one (``kl_to_gold*``: the band is then the null distribution
    of exactly the distance a cell is scored with)."""
    cache: dict[tuple[int, int], dict[str, float]] = {}

    def pair(i: int, j: int) -> dict[str, float]:
        if (i, j) not in cache:
            a, b = members[i], members[j]
            cache[(i, j)] = gold_distances(a.pred, a.values, b, inputs.splits, seed=seed)
        return cache[(i, j)]

    idx = list(range(len(members)))
    return {name: pairwise_band(idx, lambda i, j, name=name: pair(i, j)[name], quantiles=tuple(quantiles),
                                asymmetric=name in ASYMMETRIC)
            for name in GOLD_DISTANCES if name in pair(0, 1)}


def ensemble_columns(unlearned: nn.Module, row: dict, ensemble, inputs: CellInputs, *, seed: int,
                     device) -> dict[str, float]:
    """``<metric>_ens`` / ``_ens_sd``: the cell's gold-distance metrics against each member (mean, sd);
    ``<metric>_floor_lo`` / ``_mean`` / ``_hi``: the ensemble's own band."""
    pred = predictions(unlearned.to(device), inputs.splits, device=device)
    values = _values(row, pred, inputs, seed)
    per = [gold_distances(pred, values, ref, inputs.splits, seed=seed) for ref in ensemble.members]
    out: dict[str, float] = {}
    for name in GOLD_DISTANCES:
        xs = np.array([p[name] for p in per if name in p], dtype=float)
        if xs.size:
            out[f"{name}_ens"], out[f"{name}_ens_sd"] = float(xs.mean()), float(xs.std(ddof=1) if xs.size > 1 else 0)
        if name in ensemble.band:
            b = ensemble.band[name]
            out[f"{name}_floor_lo"], out[f"{name}_floor_mean"], out[f"{name}_floor_hi"] = b["lo"], b["mean"], b["hi"]
    return out


def _values(row: dict, pred, inputs: CellInputs, seed: int) -> dict[str, float]:
    """The unlearned model's model-metric values: from the cell's row, which has them (the SVC attack is the
    costly one), else computed."""
    names = [s.name for s in METRICS.values() if s.kind == "model"]
    if all(n in row for n in names if n not in _OPTIONAL):
        return {n: row[n] for n in names if n in row}
    return model_values(pred, inputs.splits, seed=seed)


def train_shadows(bench: BenchmarkConfig, model_name: str, ds: DatasetSplits, train: Split, cfg: Any,
                  seeds: Sequence[int], *, device) -> tuple[list[dict[str, torch.Tensor]], float]:
    """``shadow.n - 1`` more originals on θ0's (possibly altered) training set; (states, wall seconds)."""
    t0 = time.perf_counter()
    states = train_members(bench, model_name, ds, train, cfg, seeds, device=device)
    return states, time.perf_counter() - t0


def shadow_columns(unlearn: Callable[[nn.Module, int], nn.Module], unlearned: nn.Module,
                   shadow_states: Sequence[dict], shadow_seeds: Sequence[int], ensemble, bench: BenchmarkConfig,
                   model_name: str, ds: DatasetSplits, inputs: CellInputs, *, device) -> dict[str, float]:
    """KLoM and U-LiRA of the cell's method: θ0's unlearned model (``unlearned``) plus ``unlearn(model, seed)`` —
    the cell's method, in one request or a sequence — run on every shadow original (seeded by that shadow's
    seed), against the ensemble's retrained members."""
    cfg = bench.shadow
    query = {s: ensemble.query[s] for s in QUERY_SPLITS}
    runs = [model_margins(unlearned.to(device), inputs, query, device=device, clip=cfg.margin_clip)]
    for state, s in zip(shadow_states, shadow_seeds, strict=True):
        model = unlearn(build(bench, model_name, ds, state), s)
        runs.append(model_margins(model.to(device), inputs, query, device=device, clip=cfg.margin_clip))
    out: dict[str, float] = {}
    for split in QUERY_SPLITS:
        u = torch.stack([r[split] for r in runs]).double().numpy()
        g = ensemble.margins[split].double().numpy()
        bins = cfg.klom_bins or auto_bins(len(u), len(g))
        summary = klom_summary(klom(u, g, bins=bins, eps=cfg.klom_eps, clip=cfg.margin_clip),
                               percentile=cfg.klom_percentile)
        out[f"klom_{split}"], out[f"klom_{split}_hi"] = summary["mean"], summary["hi"]
    attack = ulira(torch.stack([r["forget"] for r in runs]).double().numpy(),
                   ensemble.margins["forget"].double().numpy(), fixed_variance=cfg.ulira_fixed_variance)
    out["ulira_auc"] = attack["auc"]
    out["ulira_tpr_1pct"], out["ulira_tpr_01pct"] = attack["tpr_at_1pct"], attack["tpr_at_01pct"]
    return out
