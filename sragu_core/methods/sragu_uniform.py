"""Control ``sragu_uniform``: SRAGU with ω ≡ 1 on every layer (docs/protocol.md).

With the step-preserving renormalisation (``renorm=sum``, or ``max``) this is AGU exactly: the row checks
that SRAGU's plumbing (α table, renormalisation, per-parameter mapping) adds nothing by itself, and it
is what any SRAGU gain must be measured from.  With ``renorm=none`` it still equals AGU; only the first
build's ``mean`` renorm of a partly missing table could differ.  Touches what SRAGU touches.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .._loop import MethodResult
from ..data import UnlearnData
from ._registry import register
from .sragu import SRAGUConfig, run_sragu

__all__ = ["SRAGUUniformConfig", "sragu_uniform", "ones"]


@dataclass(frozen=True)
class SRAGUUniformConfig(SRAGUConfig):
    pass


def ones(omegas: list[float], cfg: SRAGUConfig, seed: int) -> list[float]:
    return [1.0] * len(omegas)


@register("sragu_uniform", SRAGUUniformConfig)
def sragu_uniform(model: nn.Module, data: UnlearnData, cfg: SRAGUUniformConfig, *, seed: int,
                  on_epoch=None) -> MethodResult:
    return run_sragu(model, data, cfg, seed=seed, on_epoch=on_epoch, placebo=ones)
