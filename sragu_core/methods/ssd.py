"""SSD: Selective Synaptic Dampening (Foster, Schoepf & Brintrup, "Fast Machine Unlearning Without Retraining
Through Selective Synaptic Dampening", AAAI 2024).

No gradient steps.  At θ0, in eval mode, the diagonal of the Fisher information ("importance") of every
parameter entry is estimated on the forget set and on the full training set D = D_r ∪ D_f:

    I_S = (1/|B_S|) Σ_{b ∈ B_S} (∂ CE_b / ∂θ)²        CE_b the mean cross-entropy of minibatch b of S,

i.e. the mean over minibatches of the squared minibatch gradient.  Then every entry whose forget importance
exceeds α times its full importance is dampened, all others are left bit-identical:

    θ_i ← β_i · θ_i   where I_Df,i > α · I_D,i,   β_i = min(λ · I_D,i / I_Df,i, 1)

(α: "selection weighting", λ: "dampening constant").  Both importances are computed before any entry is
changed, so the dampening of one layer never affects the importances of another.  Touches D_f and D_r (as D).

Choices taken from the authors' code (github.com/if-loops/selective-synaptic-dampening):
- The formula of ``ParameterPerturber.modify_weight``: ``locations = fimp > oimp * selection_weighting``,
  ``weight = (oimp * dampening_constant / fimp) ** exponent`` clipped at ``lower_bound``, with exponent 1 and
  lower bound 1 (``ssd_tuning``): the full-data importance is in the numerator, β ≤ 1 never grows a weight.
- ``calc_importance``: per minibatch, ``CrossEntropyLoss()`` (batch mean), backward, add ``grad ** 2``; divide
  by the number of minibatches.  The model is put in eval mode first (``model = model.eval()``), so BatchNorm
  uses its running statistics and no statistic changes.  Every trainable parameter is eligible
  (``min_layer = max_layer = -1``).
- The full set is D = D_r ∪ D_f (``full_train_dl = ConcatDataset((retain, forget))`` in
  ``forget_random_main.py``), forget importances first, then full.  Batch 128 for both loaders (``-b``
  default 128; ``forget_train_dl`` batch 128).  Defaults α = 10, λ = 1: the values ``forget_random_main.py``
  passes (``selection_weighting = 10 * model_size_scaler`` with scaler 1, ``dampening_constant = 1``), the
  paper's choice for all ResNet18 CIFAR tasks.
- Deviation: the authors' loaders are not shuffled.  Here both minibatch orders are drawn from
  ``seeded(seed)`` (forget set first, then D in the order retain-then-forget before shuffling), as the other
  methods draw theirs: the batching changes the mean of per-batch squared gradients, so the seed matters.
  ``batch_size >= |S|`` gives one full-batch gradient per set, which no seed changes.

The trace has one record (after dampening: forget loss/accuracy and how many entries were dampened);
``steps`` counts the Fisher minibatches (gradient evaluations, forget + full), SSD's whole cost; the stop
reason is ``one_shot``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from .._loop import MethodResult, Trace, minibatches, seeded, split_stats
from ..data import Split, UnlearnData
from ..errors import check
from ._registry import register

__all__ = ["SSDConfig", "ssd", "importances", "dampen"]


@dataclass(frozen=True)
class SSDConfig:
    # α, the selection weighting: dampen entries with forget importance > α × full importance.  Default 10
    # (authors' code and paper for ResNet18 CIFAR); range: the paper's own TPE search, α ∈ [0.1, 100].
    alpha: float = field(default=10.0, metadata={"search": ("log", 0.1, 100.0)})
    # λ, the dampening constant: β = min(λ × full importance / forget importance, 1).  Default 1 (authors'
    # code and paper); range: the paper's TPE search, λ ∈ [0.1, 5].
    lam: float = field(default=1.0, metadata={"search": ("log", 0.1, 5.0)})
    # minibatch size of both importance estimates (authors' loaders: 128)
    batch_size: int = 128

    def __post_init__(self):
        check(self.alpha > 0, "alpha", self.alpha, "a number > 0 (the selection weighting)")
        check(self.lam > 0, "lam", self.lam, "a number > 0 (the dampening constant)")
        check(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")


def importances(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
                ) -> tuple[dict[str, torch.Tensor], int]:
    """(Mean over minibatches of the squared gradient of the batch-mean CE, per trainable parameter entry;
    the number of minibatches).  The caller sets the model's mode."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    imp = {n: torch.zeros_like(p) for n, p in params.items()}
    count = 0
    for x, y in batches:
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(params.values()), allow_unused=True)
        for n, g in zip(params, grads):
            if g is not None:
                imp[n] += g.detach() ** 2
        count += 1
    for v in imp.values():
        v /= max(count, 1)
    return imp, count


@torch.no_grad()
def dampen(model: nn.Module, forget_imp: dict[str, torch.Tensor], full_imp: dict[str, torch.Tensor],
           alpha: float, lam: float) -> int:
    """θ_i ← min(λ·full_i / forget_i, 1)·θ_i where forget_i > α·full_i; returns how many entries were selected."""
    selected = 0
    for n, p in model.named_parameters():
        if n not in forget_imp:
            continue
        fimp, oimp = forget_imp[n], full_imp[n]
        where = fimp > alpha * oimp  # fimp > 0 wherever this holds, so the ratio below is finite there
        beta = (lam * oimp[where] / fimp[where]).clamp(max=1.0)
        p[where] = p[where] * beta
        selected += int(where.sum())
    return selected


@register("ssd", SSDConfig)
def ssd(model: nn.Module, data: UnlearnData, cfg: SSDConfig, *, seed: int, on_epoch=None) -> MethodResult:
    t0 = time.perf_counter()
    gen = seeded(seed)
    full = Split(torch.cat([data.retain.x, data.forget.x]), torch.cat([data.retain.y, data.forget.y]))
    was = model.training
    model.eval()
    forget_imp, n_forget = importances(model, minibatches(data.forget, cfg.batch_size, gen))
    full_imp, n_full = importances(model, minibatches(full, cfg.batch_size, gen))
    selected = dampen(model, forget_imp, full_imp, cfg.alpha, cfg.lam)
    total = sum(v.numel() for v in forget_imp.values())

    record = {"epoch": 1, "dampened": selected, "dampened_frac": selected / max(total, 1)}
    record["forget_loss"], record["forget_acc"] = split_stats(model, data.forget)
    finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    trace = Trace(epochs=[record], steps=n_forget + n_full, stop_reason="one_shot" if finite else "diverged")
    model.train(was)
    if on_epoch is not None:
        on_epoch(model, record)
    trace.wall_time_s = time.perf_counter() - t0
    return MethodResult(model, trace)
