"""Gradient ascent on the forget set (Thudi et al. 2022; Golatkar et al.'s "NegGrad").

θ ← θ + η·∇CE(θ; D_f minibatch) — AGU with Ŝ ≡ 1: same update, stopping rule and defaults, so the two
differ only in the sensitivity scaling.  Touches D_f (updates) and D_val (stopping rule).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .._loop import MethodResult
from ..data import UnlearnData
from ._ascent import AscentConfig, scaled_ascent
from ._registry import register

__all__ = ["GradAscentConfig", "grad_ascent"]


@dataclass(frozen=True)
class GradAscentConfig(AscentConfig):
    pass


@register("grad_ascent", GradAscentConfig)
def grad_ascent(model: nn.Module, data: UnlearnData, cfg: GradAscentConfig, *, seed: int,
                on_epoch=None) -> MethodResult:
    return MethodResult(model, scaled_ascent(model, data, cfg, seed=seed, scale=None, on_epoch=on_epoch))
