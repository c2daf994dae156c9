"""The original-model training recipe (AGU's public code): SGD, lr 0.01, momentum 0.9, batch 64, CE.

5 epochs for the MNIST MLP, 10 for the small CIFAR CNN (the benchmark presets set ``epochs``).  Gold
retraining (``retrain``, ``retrain_indep``) runs this very recipe on D_r, so "retrained without the data"
differs from the original only in its data.  Runs through the shared update loop.

A model may name parameters to keep at their initialisation (``model.held_at_init``, set by the
``mlp_planted`` builder in :mod:`sragu_core.models`): ``train`` turns their ``requires_grad`` off for the
run (the loop's optimiser then never sees them: no step, no weight decay) and restores it afterwards, so
θ0 and the gold keep the layer at its init while unlearning methods, which do not call ``train``, may
move it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ._loop import LoopSpec, Trace, minibatches, run_loop, seeded
from .data import Split
from .errors import check

__all__ = ["SGDConfig", "TrainConfig", "train"]


@dataclass(frozen=True)
class SGDConfig:
    """Minibatch SGD: the knobs the original's recipe and the descent baselines (finetune, random_label,
    neggrad_plus) share.  Subclasses redeclare a field to change its default or give it a search range."""

    lr: float = 0.01
    momentum: float = 0.0
    epochs: int = 5
    batch_size: int = 64

    def __post_init__(self):
        check(self.lr > 0, "lr", self.lr, "a number > 0")
        check(0 <= self.momentum < 1, "momentum", self.momentum, "a number in [0, 1)")
        check(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        check(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")


@dataclass(frozen=True)
class TrainConfig(SGDConfig):
    """The original model's recipe (AGU's public code): SGD with momentum 0.9, lr 0.01, batch 64."""

    momentum: float = 0.9
    weight_decay: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0")


@contextmanager
def _held_at_init(model: nn.Module) -> Iterator[None]:
    """Freeze the parameters ``model.held_at_init`` names for the block; their ``requires_grad`` is restored."""
    names = tuple(getattr(model, "held_at_init", ()))
    params = dict(model.named_parameters())
    unknown = [n for n in names if n not in params]
    check(not unknown, "model.held_at_init", unknown, f"parameter names of the model, e.g. {list(params)[:4]}")
    before = {n: params[n].requires_grad for n in names}
    try:
        for n in names:
            params[n].requires_grad_(False)
        yield
    finally:
        for n, flag in before.items():
            params[n].requires_grad_(flag)


def train(model: nn.Module, data: Split, cfg: TrainConfig, *, seed: int,
          monitor_split: Split | None = None, on_epoch=None) -> Trace:
    """Train ``model`` in place on ``data`` (already on the model's device) with the recipe above; parameters
    named in ``model.held_at_init`` (if any) stay at their current values."""
    check(len(data) > 0, "train_set", 0, "at least one sample")
    gen = seeded(seed)

    def loss(m: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(m(x), y)

    spec = LoopSpec(batches=lambda epoch: minibatches(data, cfg.batch_size, gen), loss=loss, lr=cfg.lr,
                    max_epochs=cfg.epochs, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                    monitor_split=monitor_split, on_epoch=on_epoch)
    with _held_at_init(model):
        return run_loop(model, spec)
