"""Placebo control ``sragu_random``: SRAGU with ω_ℓ drawn uniformly from [ω_min, ω_max] (docs/protocol.md).

Same sensitivity, renormalisation and update as SRAGU; every layer's weight is a seeded random draw from
SRAGU's own ω range instead of a function of its α.  It answers "does *any* per-layer reweighting of this
spread do as well?".  Touches what SRAGU touches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .._loop import MethodResult
from ..data import UnlearnData
from ._registry import register
from .sragu import SRAGUConfig, run_sragu

__all__ = ["SRAGURandomConfig", "sragu_random", "draw"]


@dataclass(frozen=True)
class SRAGURandomConfig(SRAGUConfig):
    pass


def draw(omegas: list[float], cfg: SRAGUConfig, seed: int) -> list[float]:
    """One uniform draw in [ω_min, ω_max] per layer, from the cell's seed."""
    u = torch.rand(len(omegas), generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    return (cfg.omega_min + (cfg.omega_max - cfg.omega_min) * u).tolist()


@register("sragu_random", SRAGURandomConfig)
def sragu_random(model: nn.Module, data: UnlearnData, cfg: SRAGURandomConfig, *, seed: int,
                 on_epoch=None) -> MethodResult:
    return run_sragu(model, data, cfg, seed=seed, on_epoch=on_epoch, placebo=draw)
