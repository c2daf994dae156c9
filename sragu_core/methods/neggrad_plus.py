"""NegGrad+ (Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023, §4 baselines).

Each step pairs a forget minibatch with the next retain minibatch (retain batches cycle) and descends
L = β·CE(D_r batch) − (1 − β)·CE(D_f batch): ascent on the forget set held in check by descent on the
retain set.  An epoch is one pass over D_f.  Touches D_f and D_r.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .._loop import LoopSpec, MethodResult, minibatches, run_loop, seeded
from ..data import UnlearnData
from ..errors import check
from ..training import SGDConfig
from ._registry import register
from ._shared import epoch_budget, step_size

__all__ = ["NegGradPlusConfig", "neggrad_plus"]


@dataclass(frozen=True)
class NegGradPlusConfig(SGDConfig):
    lr: float = step_size(0.01)
    epochs: int = epoch_budget(5)
    beta: float = 0.9

    def __post_init__(self):
        super().__post_init__()
        check(0 <= self.beta <= 1, "beta", self.beta, "a number in [0, 1]")


@register("neggrad_plus", NegGradPlusConfig)
def neggrad_plus(model: nn.Module, data: UnlearnData, cfg: NegGradPlusConfig, *, seed: int,
                 on_epoch=None) -> MethodResult:
    gen = seeded(seed)
    retain_iter = iter(())

    def batches(epoch: int):
        nonlocal retain_iter
        for xf, yf in minibatches(data.forget, cfg.batch_size, gen):
            nxt = next(retain_iter, None)
            if nxt is None:
                retain_iter = minibatches(data.retain, cfg.batch_size, gen)
                nxt = next(retain_iter)
            yield xf, yf, nxt[0], nxt[1]

    def loss(m: nn.Module, batch) -> torch.Tensor:
        xf, yf, xr, yr = batch
        return cfg.beta * F.cross_entropy(m(xr), yr) - (1 - cfg.beta) * F.cross_entropy(m(xf), yf)

    spec = LoopSpec(batches=batches, loss=loss, lr=cfg.lr, max_epochs=cfg.epochs, momentum=cfg.momentum,
                    monitor_split=data.forget, on_epoch=on_epoch)
    return MethodResult(model, run_loop(model, spec))
