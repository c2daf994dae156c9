"""AGU's per-parameter sensitivity on the forget set (Ghannam & Mahareek, ISWA 2025, §3.2).

S_j = Σ_b (∂ CE_b / ∂θ_j)² summed over forget minibatches b (CE_b is the minibatch-mean cross-entropy,
as in the public code), taken at the original parameters θ0, then normalised by the *single global*
maximum over all parameters: Ŝ = S / max_j S_j ∈ [0, 1].  Parameters with large Ŝ carry the forget
set's information; AGU scales each coordinate's step by Ŝ.  Touches D_f only.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .data import Split
from .errors import check

__all__ = ["forget_sensitivity", "normalise_global_max"]


def forget_sensitivity(model: nn.Module, forget: Split, *, batch_size: int,
                       device: torch.device | str) -> dict[str, torch.Tensor]:
    """Raw S per named trainable parameter (same shapes), batches in index order.  Model unchanged."""
    check(len(forget) > 0, "forget_set", 0, "at least one sample")
    check(batch_size > 0, "batch_size", batch_size, "a positive integer")
    was_training = model.training
    model.eval()  # θ0's sensitivity: no dropout noise, no BatchNorm running-stat updates
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    sens = {n: torch.zeros_like(p) for n, p in params.items()}
    try:
        for start in range(0, len(forget), batch_size):
            x = forget.x[start:start + batch_size].to(device)
            y = forget.y[start:start + batch_size].to(device)
            loss = F.cross_entropy(model(x), y)
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for (n, _), g in zip(params.items(), grads):
                if g is not None:
                    sens[n].add_(g.detach() ** 2)
    finally:
        model.train(was_training)
    return sens


def normalise_global_max(sens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Ŝ = S / max over *all* parameters (one global scalar).  All-zero S stays zero."""
    top = max(float(s.max()) for s in sens.values())
    if top <= 0.0:
        return {n: torch.zeros_like(s) for n, s in sens.items()}
    return {n: s / top for n, s in sens.items()}
