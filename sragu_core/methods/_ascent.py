"""What AGU, SRAGU and plain gradient ascent share: the config fields, the stopping rule, the update.

The update on forget minibatches with a per-parameter scale Ŝ (≡ 1 for ``grad_ascent``):
θ ← θ + s·η·Ŝ⊙∇CE(θ; batch), s = +1 for ``direction="ascent"`` (the default; ascent on the forget loss)
or −1 for ``"descent"`` (what AGU's public code literally does).  Plain SGD, no momentum.

Stopping (AGU §3.3; the leakage criterion is our reconstruction, a config field): after each epoch stop
when max|Δθ| ≤ δ over the epoch, after ``max_iters`` epochs, or when ``leakage_stop`` fires —
``none`` (the default): a fixed epoch budget, ``max_iters``, tuned like every method's epochs;
``forget_le_val``: forget accuracy ≤ θ0's validation accuracy (D_f is now recognised no better than unseen
data was; comparing with the *current* validation accuracy instead lets a random forget set drag both
down together); ``divergence``: mean total-variation distance between θ0's and θ's predictions on D_f > ε.
Neither rule looks at the gold model or D_test.  The first build stopped on ``forget_le_val`` by default:
measured, it ended every mlp run after one epoch whatever the method did, so the rule, not the method,
decided every comparison (docs/protocol.md).  The rules stay as options, and every ascent method (AGU,
grad_ascent, SRAGU and its controls) searches them with the same ranges in the ablation protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from .._loop import LoopSpec, Trace, minibatches, run_loop, seeded, split_stats
from ..data import UnlearnData
from ..errors import check
from ..metrics import predict, tv
from ._shared import epoch_budget, step_size

__all__ = ["AscentConfig", "scaled_ascent", "DIRECTIONS", "LEAKAGE_STOPS", "Direction", "LeakageStop"]

DIRECTIONS = ("ascent", "descent")
LEAKAGE_STOPS = ("forget_le_val", "divergence", "none")
Direction = Literal[DIRECTIONS]
LeakageStop = Literal[LEAKAGE_STOPS]


@dataclass(frozen=True)
class AscentConfig:
    eta: float = step_size(0.01)
    # the epoch budget (AGU's own code: up to 100 epochs, ended by its stopping rule); shared with every method
    max_iters: int = epoch_budget(5)
    batch_size: int = 64
    direction: Direction = "ascent"
    # the stopping rule and its thresholds: searched only in the ablation protocol, equally for every ascent method
    leakage_stop: LeakageStop = field(default="none", metadata={"search": ("choice",)})
    delta: float = field(default=1e-4, metadata={"search": ("log", 1e-6, 1e-2)})
    epsilon: float = field(default=0.2, metadata={"search": ("float", 0.05, 0.5)})

    def __post_init__(self):
        check(self.eta > 0, "eta", self.eta, "a number > 0")
        check(self.delta >= 0, "delta", self.delta, "a number >= 0")
        check(self.max_iters >= 1, "max_iters", self.max_iters, "an integer >= 1")
        check(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        check(self.direction in DIRECTIONS, "direction", self.direction, f"one of {list(DIRECTIONS)}")
        check(self.leakage_stop in LEAKAGE_STOPS, "leakage_stop", self.leakage_stop,
              f"one of {list(LEAKAGE_STOPS)}")
        check(0 < self.epsilon <= 1, "epsilon", self.epsilon, "a number in (0, 1] (a total-variation distance)")


def _leakage_monitor(model: nn.Module, data: UnlearnData, cfg: AscentConfig) -> Callable | None:
    if cfg.leakage_stop == "forget_le_val":
        _, val_acc0 = split_stats(model, data.val)

        def forget_le_val(m: nn.Module, record: dict) -> str | None:
            record["val_acc_original"] = val_acc0
            return "forget_le_val" if record["forget_acc"] <= val_acc0 else None
        return forget_le_val
    if cfg.leakage_stop == "divergence":
        device = data.forget.x.device
        p0 = predict(model, data.forget.x, device=device)[0]

        def divergence(m: nn.Module, record: dict) -> str | None:
            record["forget_tv_to_original"] = tv(predict(m, data.forget.x, device=device)[0], p0)
            return "divergence" if record["forget_tv_to_original"] > cfg.epsilon else None
        return divergence
    return None


def scaled_ascent(model: nn.Module, data: UnlearnData, cfg: AscentConfig, *, seed: int,
                  scale: dict[str, torch.Tensor] | None,
                  rescale: Callable[[nn.Module, int], dict[str, torch.Tensor]] | None = None,
                  on_epoch: Callable | None = None) -> Trace:
    """Run the Ŝ-scaled forget-set update above on ``model`` in place."""
    sign = 1.0 if cfg.direction == "ascent" else -1.0
    gen = seeded(seed)

    def loss(m: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return -sign * F.cross_entropy(m(x), y)  # descending −CE is ascending CE

    spec = LoopSpec(batches=lambda epoch: minibatches(data.forget, cfg.batch_size, gen), loss=loss,
                    lr=cfg.eta, max_epochs=cfg.max_iters, scale=scale, rescale=rescale, delta=cfg.delta,
                    monitor_split=data.forget, monitor=_leakage_monitor(model, data, cfg), on_epoch=on_epoch)
    return run_loop(model, spec)
