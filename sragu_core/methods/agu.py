"""AGU — Adaptive Gradient Unlearning (Ghannam & Mahareek, Intelligent Systems with Applications, 2025;
public code ``esraa-alaa/AGU-machine-unlearning``).

1. Sensitivity at θ0: S_j = Σ_b (∂CE_b/∂θ_j)² over forget minibatches; Ŝ = S / max S (one global max).
2. Up to ``max_iters`` epochs over forget minibatches: θ ← θ + s·η·Ŝ⊙∇CE (plain SGD).
3. Stop on max|Δθ| ≤ δ over an epoch or the leakage criterion (see ``_ascent``).
Touches D_f (sensitivity, updates) and D_val (stopping rule only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .._loop import MethodResult
from ..data import UnlearnData
from ..sensitivity import forget_sensitivity, normalise_global_max
from ._ascent import AscentConfig, scaled_ascent
from ._registry import register

__all__ = ["AGUConfig", "agu", "agu_with_sensitivity"]


@dataclass(frozen=True)
class AGUConfig(AscentConfig):
    pass


def agu_with_sensitivity(model: nn.Module, data: UnlearnData, cfg: AscentConfig, *, seed: int,
                         s_hat: dict[str, torch.Tensor], on_epoch=None) -> MethodResult:
    """AGU's update and stopping rule with a given normalised sensitivity Ŝ (used by SRAGU and tests)."""
    trace = scaled_ascent(model, data, cfg, seed=seed, scale=s_hat, on_epoch=on_epoch)
    return MethodResult(model, trace)


@register("agu", AGUConfig)
def agu(model: nn.Module, data: UnlearnData, cfg: AGUConfig, *, seed: int, on_epoch=None) -> MethodResult:
    device = next(model.parameters()).device
    s_hat = normalise_global_max(forget_sensitivity(model, data.forget, batch_size=cfg.batch_size, device=device))
    return agu_with_sensitivity(model, data, cfg, seed=seed, s_hat=s_hat, on_epoch=on_epoch)
