"""The method registry: name → (frozen config class, function).  One entry per module (docs/design.md §10).

Every method has the signature ``fn(model, data: UnlearnData, cfg, *, seed, on_epoch=None) -> MethodResult``
(``on_epoch(model, record)`` observes every epoch of the shared loop) and works on its own copy:
:func:`run_method` deep-copies the input model and moves model and data to ``device``.  By default
(``freeze_norm``) it keeps BatchNorm-style layers in eval mode while an unlearning method runs, so their
running statistics are not re-estimated on forget-only batches (``_loop.frozen_norm``); a gold retrain
(``MethodSpec.retrains``) trains from scratch and is never frozen.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._loop import MethodResult, frozen_norm, unfreeze_norm
from ..data import UnlearnData
from ..errors import ConfigError, check
from ..registry import Registry
from ..training import TrainConfig

__all__ = ["MethodSpec", "METHODS", "register", "run_method"]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    config: type
    fn: Callable[..., MethodResult]
    moves: bool = True  # False for the no-op control (``original``): it returns θ0 unchanged by design

    @property
    def retrains(self) -> bool:
        """A gold retrain (the reference or the noise floor): its config *is* a training recipe, so it
        trains from scratch on D_r and the pipeline hands it the original's recipe."""
        return issubclass(self.config, TrainConfig)


METHODS: Registry[MethodSpec] = Registry("method")


def register(name: str, config: type, *, moves: bool = True) -> Callable:
    """Decorator: ``@register("agu", AGUConfig)`` on the method function."""
    def wrap(fn: Callable[..., MethodResult]) -> Callable[..., MethodResult]:
        METHODS.register(name, MethodSpec(name, config, fn, moves))
        return fn
    return wrap


def _check_data(data: UnlearnData) -> None:
    check(len(data.forget) > 0, "forget_set.size", 0, "at least one sample")
    check(len(data.retain) > 0, "forget_set.size", len(data.forget),
          "fewer samples than the whole training set (the retain set would be empty)")


def run_method(name: str, model: nn.Module, data: UnlearnData, cfg: Any = None, *, seed: int,
               device: torch.device | str = "cpu", on_epoch: Callable | None = None,
               freeze_norm: bool = True) -> MethodResult:
    """Run method ``name`` on a copy of ``model``; the input model is left untouched.

    ``freeze_norm``: norm layers with running statistics stay in eval mode throughout (their statistics are
    θ0's, bit for bit, in the result); ignored for a gold retrain, which re-estimates them from scratch."""
    spec = METHODS[name]
    cfg = spec.config() if cfg is None else cfg
    if not isinstance(cfg, spec.config):
        raise ConfigError(f"{name}.config", type(cfg).__name__, spec.config.__name__)
    _check_data(data)
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise ConfigError("model.weights", "non-finite", "finite weights (the input model has NaN or inf)")
    work = copy.deepcopy(model).to(device)
    t0 = time.perf_counter()
    with frozen_norm(work, enabled=freeze_norm and not spec.retrains):
        result = spec.fn(work, data.to(device), cfg, seed=seed, on_epoch=on_epoch)
    result.trace.wall_time_s = time.perf_counter() - t0
    unfreeze_norm(result.model)  # in case the method returned a copy made while frozen
    return result
