"""Control ``original``: do nothing — θ0 itself, scored like every method (docs/protocol.md).

The no-op row of every table.  A method that does not beat it on distance to the gold has not unlearned
anything the metric can see; a regime where θ0 already sits at the retrain noise floor has nothing to
unlearn.  Its trace records θ0's forget loss and accuracy (epoch 0) and zero steps.  Touches D_f (the
record only).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .._loop import MethodResult, Trace, split_stats
from ..data import UnlearnData
from ._registry import register

__all__ = ["OriginalConfig", "original"]


@dataclass(frozen=True)
class OriginalConfig:
    pass


@register("original", OriginalConfig, moves=False)
def original(model: nn.Module, data: UnlearnData, cfg: OriginalConfig, *, seed: int, on_epoch=None) -> MethodResult:
    loss, acc = split_stats(model, data.forget)
    return MethodResult(model, Trace(epochs=[{"epoch": 0, "forget_loss": loss, "forget_acc": acc}], steps=0,
                                     stop_reason="no_op"))
