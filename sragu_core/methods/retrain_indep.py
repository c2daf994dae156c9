"""A second gold model with an independent seed: the noise floor of every "distance to gold" metric.

Identical to ``retrain`` except that initialisation and batch order use ``seed + seed_offset``.  A method
whose ``kl_to_gold`` is at this model's level is as close to the gold as retraining itself gets.
Touches D_r only.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .._loop import MethodResult
from ..data import UnlearnData
from ..errors import check
from ..training import TrainConfig
from ._registry import register
from .retrain import retrain_from_scratch

__all__ = ["RetrainIndepConfig", "retrain_indep"]


@dataclass(frozen=True)
class RetrainIndepConfig(TrainConfig):
    seed_offset: int = 1_000_003

    def __post_init__(self):
        super().__post_init__()
        check(self.seed_offset != 0, "seed_offset", self.seed_offset, "a non-zero integer")


@register("retrain_indep", RetrainIndepConfig)
def retrain_indep(model: nn.Module, data: UnlearnData, cfg: RetrainIndepConfig, *, seed: int,
                  on_epoch=None) -> MethodResult:
    return retrain_from_scratch(model, data, cfg, seed=seed + cfg.seed_offset, on_epoch=on_epoch)
