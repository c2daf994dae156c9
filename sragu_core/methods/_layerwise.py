"""Per-layer step multipliers: what SRAGU, its placebo controls and ``agu_layerwise`` have in common.

Each of them gives every Linear/Conv2d layer ℓ a weight w_ℓ (SRAGU: ω_ℓ from the layer's α; a placebo: the
same values shuffled, random or all 1; ``agu_layerwise``: a tuned vector) and runs AGU's update with

    S̃_j = c · w_ℓ(j) · Ŝ_j

where Ŝ is AGU's normalised sensitivity and c the renormalisation (``renorm``):

* ``sum`` (default): c = Σ_j Ŝ_j / Σ_j w_ℓ(j)·Ŝ_j, so Σ S̃ = Σ Ŝ — the reweighting moves step *between*
  layers and never changes the total, so a method is not confounded with a larger or smaller step size;
* ``max``: c = 1 / max_j w_ℓ(j)·Ŝ_j (the first build's default: when the layer holding max Ŝ — usually the
  output layer — gets a small w, every other layer is *amplified*, measured 5.5–7.8× on the mlp);
* ``mean``: c = 1 / mean_ℓ(w_ℓ);  ``none``: c = 1.

Biases and norm parameters take the weight of their layer (a norm layer belongs to the Linear/Conv2d
registered just before it); parameters before any such layer take ``missing``.  The effective per-layer
multiplier c·w_ℓ is returned so that every cell logs what it actually did.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..spectral import spectral_layers

__all__ = ["RENORMS", "Renorm", "param_layers", "scale_by_layer"]

RENORMS = ("sum", "max", "mean", "none")
Renorm = Literal[RENORMS]


def param_layers(model: nn.Module) -> dict[str, str | None]:
    """Trainable parameter name → the Linear/Conv2d layer whose weight it takes (None before any such layer)."""
    spectral = {id(m) for _, m in spectral_layers(model)}
    owner: dict[str, str | None] = {}
    current = None
    for mname, module in model.named_modules():
        if id(module) in spectral:
            current = mname
        for pname, p in module.named_parameters(recurse=False):
            if p.requires_grad:
                owner[f"{mname}.{pname}" if mname else pname] = current
    return owner


def scale_by_layer(s_hat: dict[str, torch.Tensor], owner: dict[str, str | None], weights: dict[str, float],
                   missing: float, renorm: str) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """(S̃ per parameter, effective multiplier c·w_ℓ per layer) for layer weights ``weights``."""
    w = dict(weights)
    if renorm == "mean":
        mean = sum(w.values()) / len(w) if w else 1.0
        w = {k: (v / mean if mean > 0 else 0.0) for k, v in w.items()}
        missing = missing / mean if mean > 0 else 0.0
    per_param = {n: (w[owner[n]] if owner.get(n) is not None else missing) for n in s_hat}
    out = {n: s * per_param[n] for n, s in s_hat.items()}
    c = 1.0
    if renorm == "max":
        top = max((float(s.max()) for s in out.values()), default=0.0)
        c = 1.0 / top if top > 0 else 1.0
    elif renorm == "sum":
        total = sum(float(s.sum(dtype=torch.float64)) for s in out.values())
        before = sum(float(s.sum(dtype=torch.float64)) for s in s_hat.values())
        c = before / total if total > 0 else 0.0
    if c != 1.0:
        out = {n: s * c for n, s in out.items()}
    return out, {name: c * v for name, v in w.items()}
