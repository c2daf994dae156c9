"""One benchmark cell's evaluation: an unlearned model against its gold, its original and the splits.

Every SPEC §6 metric of one (original, forget set, method) cell in one flat dict; each metric ``m`` of
the unlearned model is reported beside the gold model's own ``gold_m`` where that is meaningful.  The
formulas and directions are in :mod:`sragu_core.metrics` (``METRIC_INFO``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from . import metrics as M
from .data import Split
from .spectral import layer_alphas

__all__ = ["CellSplits", "Predictions", "predictions", "gold_reference", "evaluate_cell"]


@dataclass(frozen=True)
class CellSplits:
    forget: Split
    retain: Split
    test: Split
    val: Split


@dataclass(frozen=True)
class Predictions:
    """Softmax outputs and per-sample losses of one model on each split (CPU tensors)."""

    probs: dict[str, torch.Tensor]
    losses: dict[str, torch.Tensor]


def predictions(model: nn.Module, splits: CellSplits, *, device) -> Predictions:
    probs, losses = {}, {}
    for name in ("forget", "retain", "test", "val"):
        probs[name], losses[name] = M.predict(model, getattr(splits, name), device=device)
    return Predictions(probs, losses)


def _accuracies(p: Predictions, splits: CellSplits) -> dict[str, float]:
    return {f"{s}_acc": M.accuracy(p.probs[s], getattr(splits, s).y.cpu()) for s in ("forget", "retain", "test", "val")}


def _leakage(p: Predictions, splits: CellSplits, member_idx: torch.Tensor, seed: int) -> dict[str, float]:
    return {
        "mia_auc": M.mia_auc(p.losses["forget"], p.losses["test"][member_idx]),
        "mia_efficacy": M.mia_efficacy(p.probs["retain"], splits.retain.y.cpu(), p.probs["test"],
                                       splits.test.y.cpu(), p.probs["forget"], splits.forget.y.cpu(), seed=seed),
    }


def gold_reference(gold_pred: Predictions, splits: CellSplits, *, seed: int) -> dict[str, float]:
    """The gold model's own accuracies and leakage values — shared by every method of a forget set, so the
    pipeline computes them once (the SVC attack is the costly part) and stores them with the gold."""
    idx = M.size_matched(len(splits.forget), len(splits.test), seed)
    return {**_accuracies(gold_pred, splits), **_leakage(gold_pred, splits, idx, seed)}


def evaluate_cell(unlearned: nn.Module, gold: nn.Module, original: nn.Module, splits: CellSplits, *,
                  device, seed: int, num_classes: int, gold_pred: Predictions | None = None,
                  original_alpha: dict[str, float] | None = None,
                  original_test_acc: float | None = None, gold_ref: dict | None = None) -> dict[str, float]:
    """All metrics of ``unlearned``.  ``gold_pred``, ``original_alpha`` and ``original_test_acc`` let callers
    compute what every method of a forget set shares once (the pipeline stores them with the gold and θ0)."""
    pu = predictions(unlearned, splits, device=device)
    pg = gold_pred or predictions(gold, splits, device=device)
    idx = M.size_matched(len(splits.forget), len(splits.test), seed)
    row: dict[str, float] = {}
    ref = gold_ref if gold_ref is not None else gold_reference(pg, splits, seed=seed)
    acc_u, leak_u = _accuracies(pu, splits), _leakage(pu, splits, idx, seed)
    acc_g = {k: ref[k] for k in acc_u}
    leak_g = {k: ref[k] for k in leak_u}
    for k in acc_u:
        row[k], row[f"gold_{k}"] = acc_u[k], acc_g[k]
        row[f"{k}_gap"] = abs(acc_u[k] - acc_g[k])
    for q, suffix in (("forget", ""), ("test", "_test")):
        for name, fn in (("pd", M.pd), ("tv", M.tv), ("kl_to_gold", M.kl_to_gold), ("js", M.js)):
            row[name + suffix] = fn(pu.probs[q], pg.probs[q])
    row.update(leak_u)
    row["gold_mia_auc"], row["gold_mia_efficacy"] = leak_g["mia_auc"], leak_g["mia_efficacy"]
    row["mia_gap"] = abs(leak_u["mia_auc"] - leak_g["mia_auc"])
    row["avg_gap"] = M.avg_gap({**acc_u, **leak_u}, {**acc_g, **leak_g})
    # stability
    all_losses = torch.cat([pu.losses[s] for s in ("forget", "retain", "test")])
    row["diverged"] = float(M.diverged(unlearned, all_losses))
    test_acc_0 = original_test_acc
    if test_acc_0 is None:
        test_acc_0 = M.accuracy(M.predict(original, splits.test, device=device)[0], splits.test.y.cpu())
    row["original_test_acc"] = test_acc_0
    row["test_acc_drop"] = test_acc_0 - acc_u["test_acc"]
    shifts = M.layer_relative_shift(_state(original), _state(unlearned))
    row["max_layer_shift"] = max(shifts.values()) if shifts else 0.0
    row["mean_layer_shift"] = sum(shifts.values()) / len(shifts) if shifts else 0.0
    if original_alpha is not None:
        after = {r.name: r.alpha for r in layer_alphas(unlearned)} if not row["diverged"] else {}
        drift = [abs(v) for v in M.alpha_drift(original_alpha, after).values() if math.isfinite(v)]
        row["mean_alpha_drift"] = sum(drift) / len(drift) if drift else math.nan
    forgotten = sorted(set(splits.forget.y.tolist()))
    if len(forgotten) <= 2:  # a class(-concentrated) deletion: how the forgotten classes fare on unseen data
        in_f = torch.isin(splits.test.y.cpu(), torch.tensor(forgotten))
        for tag, mask in (("forgotten_classes", in_f), ("other_classes", ~in_f)):
            for who, p in (("", pu), ("gold_", pg)):
                row[f"{who}test_acc_{tag}"] = M.accuracy(p.probs["test"][mask], splits.test.y.cpu()[mask])
    return row


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.named_parameters()}
