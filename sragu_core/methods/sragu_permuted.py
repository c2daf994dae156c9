"""Placebo control ``sragu_permuted``: SRAGU with its ω vector permuted across layers (docs/protocol.md).

Same sensitivity, same ω *values*, same renormalisation and update as SRAGU — only the link between a
layer's α and its weight is broken: layer ℓ gets the ω of another layer, by a permutation drawn from the
cell's seed (never the identity when the layers' ω differ).  If SRAGU beats AGU but not this control, the
gain comes from reweighting layers at all, not from the spectral diagnostic.  Touches what SRAGU touches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .._loop import MethodResult
from ..data import UnlearnData
from ._registry import register
from .sragu import SRAGUConfig, run_sragu

__all__ = ["SRAGUPermutedConfig", "sragu_permuted", "permute"]


@dataclass(frozen=True)
class SRAGUPermutedConfig(SRAGUConfig):
    pass


def permute(omegas: list[float], cfg: SRAGUConfig, seed: int) -> list[float]:
    """A seeded permutation of ``omegas`` that changes the vector whenever any permutation can."""
    if len(set(omegas)) < 2:
        return list(omegas)
    gen = torch.Generator().manual_seed(int(seed))
    while True:  # terminates: a non-identity permutation changes a vector with two distinct values w.p. > 0
        order = torch.randperm(len(omegas), generator=gen).tolist()
        out = [omegas[i] for i in order]
        if out != list(omegas):
            return out


@register("sragu_permuted", SRAGUPermutedConfig)
def sragu_permuted(model: nn.Module, data: UnlearnData, cfg: SRAGUPermutedConfig, *, seed: int,
                   on_epoch=None) -> MethodResult:
    return run_sragu(model, data, cfg, seed=seed, on_epoch=on_epoch, placebo=permute)
