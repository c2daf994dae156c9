"""SRAGU — Statistical-Roughness Adaptive Gradient Unlearning (Partohaghighi, Marcia, West, Chen;
"Statistical Roughness-Informed Machine Unlearning", arXiv 2602.09304, 2026).

AGU with a per-layer spectral stability weight:
1. α_ℓ for every Linear/Conv2d layer of θ0 (WeightWatcher-compatible fit, ``sragu_core.spectral``);
2. ω_ℓ = map(α_ℓ) ∈ [ω_min, ω_max] (``sragu_core.omega``); a layer without α gets ``omega_missing``;
   biases and norm parameters take the ω of their layer (a norm layer belongs to the Linear/Conv2d
   registered just before it);
3. S̃_j = ω_ℓ(j)·Ŝ_j, renormalised by ``renorm``: ``max`` divides S̃ by its global max (default),
   ``mean`` uses ω / mean_ℓ(ω) instead of ω, ``none`` leaves S̃ as is;
4. AGU's minibatch update and stopping rule with S̃ in place of Ŝ.
The paper publishes the skeleton only: the map and its constants, the renormalisation, the sign and the
stopping rule are reconstructions and live here as config fields.  With ``alpha_every_epoch`` α and ω
are recomputed on the current weights at the start of every epoch (Ŝ stays θ0's).
Touches D_f (sensitivity, updates) and D_val (stopping rule only).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from .._loop import MethodResult
from ..data import UnlearnData
from ..errors import check
from ..omega import OMEGA_MAPS
from ..sensitivity import forget_sensitivity, normalise_global_max
from ..spectral import layer_alphas, spectral_layers
from ._ascent import AscentConfig, LeakageStop, scaled_ascent
from ._registry import register

__all__ = ["SRAGUConfig", "sragu", "layer_omegas", "param_layers", "RENORMS"]

OmegaMap = Literal[tuple(OMEGA_MAPS.names())]  # every registered ω map, searched by Tune as a choice
RENORMS = ("max", "mean", "none")
Renorm = Literal[RENORMS]


@dataclass(frozen=True)
class SRAGUConfig(AscentConfig):
    # searched by Tune (components/execution/search_space.py reads these ranges; ω_min and ω_max never cross)
    omega_map: OmegaMap = field(
        default="gaussian", metadata={"search": ("choice",)})
    alpha_star: float = field(default=4.0, metadata={"search": ("float", 2.0, 6.0)})
    tau: float = field(default=1.5, metadata={"search": ("float", 0.5, 3.0)})
    omega_min: float = field(default=0.1, metadata={"search": ("float", 0.0, 0.5)})
    omega_max: float = field(default=1.0, metadata={"search": ("float", 0.5, 1.0)})
    alpha_lo: float = 2.0
    alpha_hi: float = 6.0
    omega_missing: float = 1.0
    renorm: Renorm = field(default="max", metadata={"search": ("choice",)})
    # the stop-rule thresholds are searched for SRAGU (AscentConfig fields, redeclared with a range)
    delta: float = field(default=1e-4, metadata={"search": ("log", 1e-6, 1e-2)})
    epsilon: float = field(default=0.2, metadata={"search": ("float", 0.05, 0.5)})
    leakage_stop: LeakageStop = field(
        default="forget_le_val", metadata={"search": ("choice",)})
    min_evals: int = 10
    alpha_every_epoch: bool = False

    def __post_init__(self):
        super().__post_init__()
        check(self.omega_map in OMEGA_MAPS, "omega_map", self.omega_map, f"one of {OMEGA_MAPS.names()}")
        check(self.tau > 0, "tau", self.tau, "a number > 0")
        check(0 <= self.omega_min <= self.omega_max, "omega_min", self.omega_min,
              f"a number in [0, omega_max={self.omega_max}]")
        check(self.omega_max > 0, "omega_max", self.omega_max, "a number > 0")
        check(self.alpha_lo < self.alpha_hi, "alpha_lo", self.alpha_lo, f"a number < alpha_hi={self.alpha_hi}")
        check(self.omega_missing >= 0, "omega_missing", self.omega_missing, "a number >= 0")
        check(self.renorm in RENORMS, "renorm", self.renorm, f"one of {list(RENORMS)}")
        check(self.min_evals >= 2, "min_evals", self.min_evals, "an integer >= 2")


def param_layers(model: nn.Module) -> dict[str, str | None]:
    """Trainable parameter name → the Linear/Conv2d layer whose ω it takes (None before any such layer)."""
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


def layer_omegas(model: nn.Module, cfg: SRAGUConfig) -> list[dict]:
    """The α/ω table of ``model``: one row per Linear/Conv2d layer, with ``omega`` added."""
    rows = [r.as_dict() for r in layer_alphas(model, min_evals=cfg.min_evals)]
    alpha = torch.tensor([r["alpha"] for r in rows], dtype=torch.float64)
    omega = OMEGA_MAPS[cfg.omega_map](alpha, cfg)
    omega = torch.where(torch.isfinite(alpha), omega, torch.full_like(omega, cfg.omega_missing))
    for r, w in zip(rows, omega.tolist()):
        r["omega"] = w
    return rows


def _reweight(s_hat: dict[str, torch.Tensor], owner: dict[str, str | None], table: list[dict],
              cfg: SRAGUConfig) -> dict[str, torch.Tensor]:
    omega = {r["name"]: r["omega"] for r in table}
    if cfg.renorm == "mean":
        mean = sum(omega.values()) / len(omega)
        omega = {k: (v / mean if mean > 0 else 0.0) for k, v in omega.items()}
    out = {n: s * (omega[owner[n]] if owner.get(n) is not None else cfg.omega_missing) for n, s in s_hat.items()}
    if cfg.renorm == "max":
        top = max(float(s.max()) for s in out.values())
        if top > 0:
            out = {n: s / top for n, s in out.items()}
    return out


@register("sragu", SRAGUConfig)
def sragu(model: nn.Module, data: UnlearnData, cfg: SRAGUConfig, *, seed: int, on_epoch=None) -> MethodResult:
    device = next(model.parameters()).device
    s_hat = normalise_global_max(forget_sensitivity(model, data.forget, batch_size=cfg.batch_size, device=device))
    owner = param_layers(model)
    t0 = time.perf_counter()
    table = layer_omegas(model, cfg)
    spectral_time = time.perf_counter() - t0
    tables = {0: table}

    def rescale(m: nn.Module, epoch: int) -> dict[str, torch.Tensor]:
        nonlocal spectral_time
        t = time.perf_counter()
        tables[epoch] = layer_omegas(m, cfg)
        spectral_time += time.perf_counter() - t
        return _reweight(s_hat, owner, tables[epoch], cfg)

    scale = _reweight(s_hat, owner, table, cfg)
    trace = scaled_ascent(model, data, cfg, seed=seed, scale=scale,
                          rescale=rescale if cfg.alpha_every_epoch else None, on_epoch=on_epoch)
    trace.extras["alpha_omega"] = table
    trace.extras["spectral_time_s"] = spectral_time
    if cfg.alpha_every_epoch:
        trace.extras["alpha_omega_by_epoch"] = {k: v for k, v in tables.items() if k > 0}
    trace.extras["omega_mean"] = sum(r["omega"] for r in table) / max(len(table), 1)
    trace.extras["alpha_missing"] = sum(1 for r in table if not math.isfinite(r["alpha"]))
    return MethodResult(model, trace)
