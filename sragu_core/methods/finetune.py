"""Fine-tuning on the retain set ("catastrophic forgetting" baseline; Golatkar et al. 2020, Warnecke 2023).

A few epochs of SGD descent on CE(D_r); the forget set is never used except to record the trace.
Touches D_r (and D_f for the per-epoch trace only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .._loop import LoopSpec, MethodResult, minibatches, run_loop, seeded
from ..data import UnlearnData
from ..training import SGDConfig
from ._registry import register
from ._shared import epoch_budget, step_size

__all__ = ["FinetuneConfig", "finetune"]


@dataclass(frozen=True)
class FinetuneConfig(SGDConfig):
    lr: float = step_size(0.01)
    momentum: float = 0.9
    epochs: int = epoch_budget(2)


@register("finetune", FinetuneConfig)
def finetune(model: nn.Module, data: UnlearnData, cfg: FinetuneConfig, *, seed: int,
             on_epoch=None) -> MethodResult:
    gen = seeded(seed)

    def loss(m: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(m(x), y)

    spec = LoopSpec(batches=lambda epoch: minibatches(data.retain, cfg.batch_size, gen), loss=loss, lr=cfg.lr,
                    max_epochs=cfg.epochs, momentum=cfg.momentum, monitor_split=data.forget, on_epoch=on_epoch)
    return MethodResult(model, run_loop(model, spec))
