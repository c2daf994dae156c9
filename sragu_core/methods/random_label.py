"""Random labelling (Golatkar et al. 2020; "RL" in SalUn, Fan et al. ICLR 2024).

Descent on D_f with every forget label replaced by a uniformly drawn *wrong* class, redrawn each epoch:
y' = (y + U{1, …, C−1}) mod C.  Touches D_f only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .._loop import LoopSpec, MethodResult, minibatches, run_loop, seeded
from ..data import Split, UnlearnData
from ..training import SGDConfig
from ._registry import register
from ._shared import epoch_budget, step_size

__all__ = ["RandomLabelConfig", "random_label", "wrong_labels"]


@dataclass(frozen=True)
class RandomLabelConfig(SGDConfig):
    lr: float = step_size(0.01)
    epochs: int = epoch_budget(5)


def wrong_labels(y: torch.Tensor, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """A uniformly random label different from ``y`` for every entry."""
    shift = torch.randint(1, num_classes, (len(y),), generator=gen).to(y.device)
    return (y + shift) % num_classes


@register("random_label", RandomLabelConfig)
def random_label(model: nn.Module, data: UnlearnData, cfg: RandomLabelConfig, *, seed: int,
                 on_epoch=None) -> MethodResult:
    gen = seeded(seed)

    def batches(epoch: int):
        relabelled = Split(data.forget.x, wrong_labels(data.forget.y, data.num_classes, gen))
        return minibatches(relabelled, cfg.batch_size, gen)

    def loss(m: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(m(x), y)

    spec = LoopSpec(batches=batches, loss=loss, lr=cfg.lr, max_epochs=cfg.epochs, momentum=cfg.momentum,
                    monitor_split=data.forget, on_epoch=on_epoch)
    return MethodResult(model, run_loop(model, spec))
