"""The one update loop every method runs (docs/design.md §10), plus the types methods return.

A method is "a loss over minibatches, an optimiser, an optional per-parameter step scale and a stopping
rule".  It supplies those as a :class:`LoopSpec`; :func:`run_loop` does the rest:

    for epoch in 1..max_epochs:
        (optional) scale ← rescale(model, epoch)          # SRAGU's α recomputed every epoch
        for batch in batches(epoch):
            g ← ∇ loss(model, batch)                      # the loss is always *descended*:
            g ← scale ⊙ g                                 #   ascent methods return −CE
            θ ← SGD step(θ, g)                            # torch.optim.SGD: lr, momentum, weight decay
        record forget loss/acc; stop if max|Δθ| ≤ δ over the epoch, a non-finite loss/weight appears,
        or the method's monitor says so (leakage criterion).

All randomness (batch order, random labels) comes from ``torch.Generator`` objects seeded by the caller,
so a method is deterministic for a seed on a given device.

:func:`frozen_norm` keeps normalisation layers with running statistics (BatchNorm) in eval mode while an
unlearning method runs, although the loop calls ``model.train()`` every epoch: otherwise their running
mean/variance would be re-estimated on forget-only batches (docs/design.md §4).
"""

from __future__ import annotations

import math
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _NormBase

from .data import Split

__all__ = ["Trace", "MethodResult", "LoopSpec", "run_loop", "minibatches", "split_stats", "seeded", "frozen_norm",
           "unfreeze_norm"]


@dataclass
class Trace:
    """What a method did: per-epoch forget loss/accuracy, steps, why it stopped, how long it took."""

    epochs: list[dict] = field(default_factory=list)
    steps: int = 0
    stop_reason: str = "max_iters"
    wall_time_s: float = 0.0
    extras: dict = field(default_factory=dict)  # e.g. SRAGU's α/ω table, spectral_time_s


@dataclass
class MethodResult:
    model: nn.Module
    trace: Trace


Batch = tuple[torch.Tensor, ...]


@dataclass
class LoopSpec:
    batches: Callable[[int], Iterator[Batch]]
    loss: Callable[[nn.Module, Batch], torch.Tensor]
    lr: float
    max_epochs: int
    momentum: float = 0.0
    weight_decay: float = 0.0
    scale: dict[str, torch.Tensor] | None = None
    rescale: Callable[[nn.Module, int], dict[str, torch.Tensor]] | None = None
    delta: float | None = None  # stop when max|Δθ| over an epoch ≤ delta
    monitor_split: Split | None = None  # per-epoch loss/accuracy recorded on this split (D_f)
    monitor: Callable[[nn.Module, dict], str | None] | None = None  # returns a stop reason or None
    on_epoch: Callable[[nn.Module, dict], None] | None = None  # observer after every epoch (Tune reports)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def minibatches(split: Split, batch_size: int, gen: torch.Generator | None) -> Iterator[Batch]:
    """(x, y) minibatches of ``split``; shuffled with ``gen`` (CPU generator), in order if None."""
    n = len(split)
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    order = order.to(split.x.device)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield split.x[idx], split.y[idx]


@torch.no_grad()
def split_stats(model: nn.Module, split: Split, batch_size: int = 1024) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on ``split``, in eval mode, restoring the mode."""
    was = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(split), batch_size):
        logits = model(split.x[start:start + batch_size])
        y = split.y[start:start + batch_size]
        total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    model.train(was)
    n = max(len(split), 1)
    return total_loss / n, correct / n


_REQUESTED = "_frozen_norm_requested"  # the mode last asked of a frozen layer, restored when it is unfrozen


def _stay_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    """A frozen norm layer's ``train``: remembers the requested mode, stays in eval mode."""
    self.__dict__[_REQUESTED] = bool(mode)
    self.training = False
    return self


def _has_running_stats(m: nn.Module) -> bool:
    return isinstance(m, _NormBase) and (m.running_mean is not None or m.running_var is not None)


def _unfreeze(m: nn.Module) -> None:
    m.training = m.__dict__.pop(_REQUESTED)
    m.__dict__.pop("train", None)


def unfreeze_norm(model: nn.Module) -> nn.Module:
    """Remove :func:`frozen_norm`'s patch from every layer of ``model`` (also from a deep copy made while frozen,
    which carries the patch bound to the copy); each layer gets the mode last requested of it."""
    for m in model.modules():
        if _REQUESTED in m.__dict__:
            _unfreeze(m)
    return model


@contextmanager
def frozen_norm(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Inside the block, every norm layer of ``model`` with running statistics (``_NormBase``: BatchNorm1d/2d/3d,
    SyncBatchNorm, InstanceNorm with ``track_running_stats``) is in eval mode and stays there whatever
    ``train()`` calls reach it: it normalises with its running statistics and never updates them.  The patch
    (an instance ``train`` attribute) is removed on exit and each layer gets the mode last requested of it."""
    frozen = [m for m in model.modules() if _has_running_stats(m) and _REQUESTED not in m.__dict__] if enabled else []
    for m in frozen:
        m.__dict__[_REQUESTED] = m.training
        m.train = types.MethodType(_stay_eval, m)  # a plain attribute: nn.Module.__setattr__ stores it in __dict__
        m.training = False
    try:
        yield model
    finally:
        for m in frozen:
            _unfreeze(m)


def _finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def run_loop(model: nn.Module, spec: LoopSpec) -> Trace:
    """Run ``spec`` on ``model`` in place; return its :class:`Trace`."""
    t0 = time.perf_counter()
    trace = Trace()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.SGD(list(params.values()), lr=spec.lr, momentum=spec.momentum,
                          weight_decay=spec.weight_decay)
    scale = spec.scale
    stop = None
    for epoch in range(1, spec.max_epochs + 1):
        if spec.rescale is not None:
            scale = spec.rescale(model, epoch)
        before = {n: p.detach().clone() for n, p in params.items()} if spec.delta is not None else None
        model.train()
        losses = []
        for batch in spec.batches(epoch):
            opt.zero_grad(set_to_none=True)
            loss = spec.loss(model, batch)
            if not torch.isfinite(loss):
                stop = "diverged"
                break
            loss.backward()
            if scale is not None:
                for n, p in params.items():
                    if p.grad is not None:
                        p.grad.mul_(scale[n])
            opt.step()
            trace.steps += 1
            losses.append(float(loss.detach()))
        record = {"epoch": epoch, "train_loss": sum(losses) / len(losses) if losses else math.nan}
        if spec.monitor_split is not None:
            record["forget_loss"], record["forget_acc"] = split_stats(model, spec.monitor_split)
        if stop is None and not _finite(model):
            stop = "diverged"
        if stop is None and before is not None:
            record["max_abs_dtheta"] = max(float((p.detach() - before[n]).abs().max()) for n, p in params.items())
            if record["max_abs_dtheta"] <= spec.delta:
                stop = "param_change"
        if stop is None and spec.monitor is not None:
            stop = spec.monitor(model, record)
        trace.epochs.append(record)
        if spec.on_epoch is not None:
            spec.on_epoch(model, record)
        if stop is not None:
            break
    trace.stop_reason = stop or "max_iters"
    trace.wall_time_s = time.perf_counter() - t0
    return trace
