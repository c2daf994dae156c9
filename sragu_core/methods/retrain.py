"""Gold standard: retrain from scratch on D_r with the original model's recipe (exact unlearning).

Every alignment metric is a distance to this model.  The architecture is the input model's, freshly
re-initialised for ``seed`` (the same seed as the original, so gold and original share their init and
differ only in the data); the recipe (``TrainConfig``) must be the one the original was trained with —
the pipeline passes it.  Touches D_r only.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .._loop import MethodResult
from ..data import UnlearnData
from ..models import reinit_
from ..training import TrainConfig, train
from ._registry import register

__all__ = ["RetrainConfig", "retrain", "retrain_from_scratch"]


@dataclass(frozen=True)
class RetrainConfig(TrainConfig):
    pass


def retrain_from_scratch(model: nn.Module, data: UnlearnData, cfg: TrainConfig, *, seed: int,
                         on_epoch=None) -> MethodResult:
    reinit_(model, seed)
    trace = train(model, data.retain, cfg, seed=seed, monitor_split=data.forget, on_epoch=on_epoch)
    return MethodResult(model, trace)


@register("retrain", RetrainConfig)
def retrain(model: nn.Module, data: UnlearnData, cfg: RetrainConfig, *, seed: int, on_epoch=None) -> MethodResult:
    return retrain_from_scratch(model, data, cfg, seed=seed, on_epoch=on_epoch)
