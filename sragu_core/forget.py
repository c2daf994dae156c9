"""Forget-set selection (SPEC §5): which training points a deletion request names.

Regimes, each deterministic for (training labels, regime, parameters, seed[, θ0]):

* ``random``: ``fraction`` of the training set, uniformly (1%, 10%, 30%, 50% = "large deletions").
* ``class``: every training point of ``classes``.
* adversarial "hard deletions", scored with the original model θ0 and the top ``fraction`` taken:
  ``top_sensitivity`` (largest per-sample gradient norm ‖∇_θ CE(x, y)‖₂ — the points AGU's sensitivity
  is most driven by), ``high_loss`` (largest per-sample CE — memorised / atypical points),
  ``low_margin`` (smallest logit margin z_y − max_{k≠y} z_k — boundary points),
  ``class_concentrated`` (all of ``classes[0]`` plus ``neighbor_fraction`` of the class θ0 confuses it
  with most, taking the neighbour points θ0 rates most like ``classes[0]``).

Returns sorted indices into the training split and a manifest (regime, parameters, seed, size, class
histogram, content hash of the indices) that the pipeline stores next to them.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from .data import Split
from .errors import ConfigError, check

__all__ = ["ForgetConfig", "ForgetSet", "select_forget", "retain_indices", "REGIMES", "per_sample_scores"]

Regime = Literal["random", "class", "top_sensitivity", "high_loss", "low_margin", "class_concentrated"]
REGIMES = ("random", "class", "top_sensitivity", "high_loss", "low_margin", "class_concentrated")
_NEEDS_MODEL = {"top_sensitivity", "high_loss", "low_margin", "class_concentrated"}


@dataclass(frozen=True)
class ForgetConfig:
    regime: Regime = "random"
    fraction: float = 0.1
    classes: tuple[int, ...] = (0,)
    neighbor_fraction: float = 0.5

    def __post_init__(self):
        check(self.regime in REGIMES, "forget.regime", self.regime, f"one of {list(REGIMES)}")
        check(0 < self.fraction < 1, "forget.fraction", self.fraction, "a number in (0, 1)")
        check(len(self.classes) >= 1, "forget.classes", self.classes, "one or more class indices")
        check(0 < self.neighbor_fraction <= 1, "forget.neighbor_fraction", self.neighbor_fraction,
              "a number in (0, 1]")

    def label(self) -> str:
        """A short human name, e.g. ``random_10pct``, ``class_3``, ``high_loss_10pct``."""
        if self.regime == "class":
            return "class_" + "-".join(map(str, self.classes))
        if self.regime == "class_concentrated":
            return f"class_concentrated_{self.classes[0]}"
        return f"{self.regime}_{round(self.fraction * 100, 2):g}pct"


@dataclass(frozen=True)
class ForgetSet:
    indices: torch.Tensor  # sorted int64 indices into the training split
    manifest: dict


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, device, batch_size: int = 1024) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


def _grad_norms(model: nn.Module, train: Split, device, batch_size: int = 256) -> torch.Tensor:
    """Per-sample ‖∇_θ CE‖₂ with torch.func (vmap over a functional gradient)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss(p, x, y):
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(out, y.unsqueeze(0))

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
    norms = []
    for i in range(0, len(train), batch_size):
        g = per_sample(params, train.x[i:i + batch_size].to(device), train.y[i:i + batch_size].to(device))
        norms.append(torch.sqrt(sum((t.flatten(1) ** 2).sum(1) for t in g.values())).cpu())
    return torch.cat(norms)


def per_sample_scores(model: nn.Module, train: Split, regime: str, *, device) -> torch.Tensor:
    """Adversarial score per training point; the *largest* scores are forgotten."""
    was = model.training
    model.eval()
    try:
        if regime == "top_sensitivity":
            return _grad_norms(model, train, device)
        logits = _logits(model, train.x, device)
        if regime == "high_loss":
            return F.cross_entropy(logits, train.y.cpu(), reduction="none")
        if regime == "low_margin":
            true = logits.gather(1, train.y.cpu().unsqueeze(1)).squeeze(1)
            other = logits.scatter(1, train.y.cpu().unsqueeze(1), float("-inf")).max(1).values
            return -(true - other)
        raise ConfigError("forget.regime", regime, "an adversarial regime")
    finally:
        model.train(was)


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    # stable sort on −score: ties resolved by index, so selection is deterministic
    return torch.sort(-scores, stable=True).indices[:k]


def _class_concentrated(model: nn.Module, train: Split, cfg: ForgetConfig, num_classes: int, device) -> torch.Tensor:
    c = cfg.classes[0]
    y = train.y.cpu()
    check(bool((y == c).any()), "forget.classes", c, "a class with training points (none of this class here)")
    probs = F.softmax(_logits(model, train.x, device), 1)
    confusion = probs[y == c].mean(0)
    confusion[c] = -1.0
    neighbour = int(confusion.argmax())
    nb_idx = torch.nonzero(y == neighbour).squeeze(1)
    k = max(1, round(cfg.neighbor_fraction * len(nb_idx)))
    chosen_nb = nb_idx[_top(probs[nb_idx, c], k)]
    return torch.cat([torch.nonzero(y == c).squeeze(1), chosen_nb])


def select_forget(cfg: ForgetConfig, train: Split, num_classes: int, *, seed: int,
                  model: nn.Module | None = None, device: torch.device | str = "cpu") -> ForgetSet:
    """Pick the forget set for ``cfg`` from ``train``; adversarial regimes need θ0 as ``model``."""
    n = len(train)
    y = train.y.cpu()
    if cfg.regime in ("class", "class_concentrated"):
        for c in cfg.classes:
            check(0 <= c < num_classes, "forget.classes", c, f"class indices in [0, {num_classes - 1}]")
    if cfg.regime in _NEEDS_MODEL and model is None:
        raise ConfigError("forget.regime", cfg.regime, "random or class when no original model is given")
    k = round(cfg.fraction * n)
    if cfg.regime == "random":
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k]
    elif cfg.regime == "class":
        idx = torch.nonzero(torch.isin(y, torch.tensor(cfg.classes))).squeeze(1)
    elif cfg.regime == "class_concentrated":
        idx = _class_concentrated(model, train, cfg, num_classes, device)
    else:
        idx = _top(per_sample_scores(model, train, cfg.regime, device=device), k)
    idx = torch.sort(idx.to(torch.int64)).values
    check(len(idx) > 0, "forget_set.size", 0, f"at least one sample (regime {cfg.regime} selected none)")
    check(len(idx) < n, "forget_set.size", len(idx),
          f"fewer than the whole training set ({n}); the retain set would be empty")
    hist = torch.bincount(y[idx], minlength=num_classes).tolist()
    digest = hashlib.sha256(idx.numpy().tobytes()).hexdigest()[:16]
    manifest = {"regime": cfg.regime, "label": cfg.label(), "params": asdict(cfg), "seed": seed,
                "size": len(idx), "train_size": n, "class_histogram": hist, "content_hash": digest}
    return ForgetSet(idx, manifest)


def retain_indices(n: int, forget_idx: torch.Tensor) -> torch.Tensor:
    """The complement of ``forget_idx`` in range(n), sorted."""
    mask = torch.ones(n, dtype=torch.bool)
    mask[forget_idx] = False
    return torch.nonzero(mask).squeeze(1)

