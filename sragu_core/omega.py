"""SRAGU's α → ω maps: a bounded per-layer stability weight from the heavy-tailed exponent.

The paper (arXiv 2602.09304) states that layers judged *stable* by their spectrum should move more and
brittle or over-fit ones less; it does not publish the map.  These are our reconstructions, each a
registered function of the layers' α vector (NaN = layer without α, handled by the caller):

* ``gaussian`` (default): ω = ω_min + (ω_max − ω_min) · exp(−(α − α*)² / (2τ²)) — peaks at α* = 4,
  the middle of HTSR's well-trained band.
* ``trapezoid``: ω_max inside [α_lo, α_hi], falling linearly to ω_min over one α-unit outside it.
* ``monotone``: clip((α_hi − α) / (α_hi − α_lo), ω_min, ω_max) — decreasing in α: under-trained,
  random-like layers (large α) move least.
* ``linear_rank``: min-max of α over the model's layers, mapped to [ω_min, ω_max] *decreasing* in α
  (the same orientation as ``monotone``); all-equal α gives ω_max.

All constants are ``SRAGUConfig`` fields and are searched by Tune.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from .registry import Registry

__all__ = ["OMEGA_MAPS", "OmegaParams"]


class OmegaParams(Protocol):
    alpha_star: float
    tau: float
    omega_min: float
    omega_max: float
    alpha_lo: float
    alpha_hi: float


OmegaMap = Callable[[torch.Tensor, OmegaParams], torch.Tensor]
OMEGA_MAPS: Registry[OmegaMap] = Registry("sragu.omega_map")


def _gaussian(alpha: torch.Tensor, p: OmegaParams) -> torch.Tensor:
    return p.omega_min + (p.omega_max - p.omega_min) * torch.exp(-((alpha - p.alpha_star) ** 2) / (2 * p.tau ** 2))


def _trapezoid(alpha: torch.Tensor, p: OmegaParams) -> torch.Tensor:
    outside = torch.clamp(torch.maximum(p.alpha_lo - alpha, alpha - p.alpha_hi), min=0.0, max=1.0)
    return p.omega_max - (p.omega_max - p.omega_min) * outside


def _monotone(alpha: torch.Tensor, p: OmegaParams) -> torch.Tensor:
    return torch.clamp((p.alpha_hi - alpha) / (p.alpha_hi - p.alpha_lo), p.omega_min, p.omega_max)


def _linear_rank(alpha: torch.Tensor, p: OmegaParams) -> torch.Tensor:
    finite = alpha[torch.isfinite(alpha)]
    if finite.numel() == 0:
        return torch.full_like(alpha, p.omega_max)
    lo, hi = finite.min(), finite.max()
    if float(hi - lo) == 0.0:
        return torch.full_like(alpha, p.omega_max)
    return p.omega_max - (p.omega_max - p.omega_min) * (alpha - lo) / (hi - lo)


OMEGA_MAPS.register("gaussian", _gaussian)
OMEGA_MAPS.register("trapezoid", _trapezoid)
OMEGA_MAPS.register("monotone", _monotone)
OMEGA_MAPS.register("linear_rank", _linear_rank)
