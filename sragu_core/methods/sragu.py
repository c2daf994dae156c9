"""SRAGU — Statistical-Roughness Adaptive Gradient Unlearning (Partohaghighi, Marcia, West, Chen;
"Statistical Roughness-Informed Machine Unlearning", arXiv 2602.09304, 2026).

AGU with a per-layer spectral stability weight:
1. α_ℓ for every Linear/Conv2d layer of θ0 (WeightWatcher-compatible fit, ``sragu_core.spectral``); a layer
   with fewer than ``min_evals`` eigenvalues gets no α;
2. ω_ℓ = map(α_ℓ) ∈ [ω_min, ω_max] (``sragu_core.omega``); a layer without α gets ``omega_missing``
   (default null: the mean ω of the assessed layers, i.e. neutral);
3. S̃_j = c·ω_ℓ(j)·Ŝ_j with the renormalisation c of ``renorm`` (``_layerwise``; default ``sum``: Σ S̃ = Σ Ŝ);
4. AGU's minibatch update and stopping rule with S̃ in place of Ŝ.
The paper publishes the skeleton only: the map and its constants, the renormalisation, the sign, the
stopping rule and the handling of layers without α are reconstructions and live here as config fields.
With ``alpha_every_epoch`` α and ω are recomputed on the current weights at the start of every epoch (Ŝ
stays θ0's).  The placebo controls (``sragu_permuted``, ``sragu_random``, ``sragu_uniform``) run this very
function with the ω vector replaced (``placebo``), so they differ from SRAGU in nothing but the α → ω link.
Touches D_f (sensitivity, updates) and D_val (only when a leakage stop rule is chosen).

Defaults changed after measurement (docs/protocol.md): ``renorm`` max → sum (max amplified hidden layers
5.5–7.8× when the output layer got a small ω), ``min_evals`` 10 → 50 (bench/alpha_variance.py: a
10-eigenvalue layer's α has a spread of several units across seeds of one recipe), ``omega_missing``
1.0 = ω_max → the assessed layers' mean (the old value moved unassessable layers most).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from .._loop import MethodResult
from ..data import UnlearnData
from ..errors import check
from ..omega import OMEGA_MAPS
from ..sensitivity import forget_sensitivity, normalise_global_max
from ..spectral import layer_alphas
from ._ascent import AscentConfig, scaled_ascent
from ._layerwise import RENORMS, Renorm, param_layers, scale_by_layer
from ._registry import register

__all__ = ["SRAGUConfig", "sragu", "run_sragu", "layer_omegas", "param_layers", "RENORMS", "Placebo"]

OmegaMap = Literal[tuple(OMEGA_MAPS.names())]  # every registered ω map, a Tune choice
# a placebo replaces the ω vector (one value per layer, in module order) given the config and the cell's seed
Placebo = Callable[[list[float], "SRAGUConfig", int], list[float]]


@dataclass(frozen=True)
class SRAGUConfig(AscentConfig):
    # SRAGU's own knobs, searched in the ablation protocol (components/execution/search_space.py reads these
    # ranges; ω_min and ω_max never cross)
    omega_map: OmegaMap = field(default="gaussian", metadata={"search": ("choice",)})
    alpha_star: float = field(default=4.0, metadata={"search": ("float", 2.0, 6.0)})
    tau: float = field(default=1.5, metadata={"search": ("float", 0.5, 3.0)})
    omega_min: float = field(default=0.1, metadata={"search": ("float", 0.0, 0.5)})
    omega_max: float = field(default=1.0, metadata={"search": ("float", 0.5, 1.0)})
    alpha_lo: float = 2.0
    alpha_hi: float = 6.0
    omega_missing: float | None = None  # ω of a layer without α; null = mean ω of the assessed layers
    renorm: Renorm = "sum"
    min_evals: int = 50
    alpha_every_epoch: bool = False

    def __post_init__(self):
        super().__post_init__()
        check(self.omega_map in OMEGA_MAPS, "omega_map", self.omega_map, f"one of {OMEGA_MAPS.names()}")
        check(self.tau > 0, "tau", self.tau, "a number > 0")
        check(0 <= self.omega_min <= self.omega_max, "omega_min", self.omega_min,
              f"a number in [0, omega_max={self.omega_max}]")
        check(self.omega_max > 0, "omega_max", self.omega_max, "a number > 0")
        check(self.alpha_lo < self.alpha_hi, "alpha_lo", self.alpha_lo, f"a number < alpha_hi={self.alpha_hi}")
        check(self.omega_missing is None or self.omega_missing >= 0, "omega_missing", self.omega_missing,
              "null (the assessed layers' mean ω) or a number >= 0")
        check(self.renorm in RENORMS, "renorm", self.renorm, f"one of {list(RENORMS)}")
        check(self.min_evals >= 2, "min_evals", self.min_evals, "an integer >= 2")


def _missing(omegas: torch.Tensor, assessed: torch.Tensor, cfg: SRAGUConfig) -> float:
    if cfg.omega_missing is not None:
        return cfg.omega_missing
    return float(omegas[assessed].mean()) if bool(assessed.any()) else cfg.omega_max


def layer_omegas(model: nn.Module, cfg: SRAGUConfig) -> list[dict]:
    """The α/ω table of ``model``: one row per Linear/Conv2d layer, with ``omega`` added (missing α filled)."""
    rows = [r.as_dict() for r in layer_alphas(model, min_evals=cfg.min_evals)]
    alpha = torch.tensor([r["alpha"] for r in rows], dtype=torch.float64)
    omega = OMEGA_MAPS[cfg.omega_map](alpha, cfg)
    assessed = torch.isfinite(alpha)
    omega = torch.where(assessed, omega, torch.full_like(omega, _missing(omega, assessed, cfg)))
    for r, w in zip(rows, omega.tolist()):
        r["omega"] = w
    return rows


def _apply(s_hat, owner, table: list[dict], cfg: SRAGUConfig, placebo: Placebo | None, seed: int):
    """S̃ for one α/ω table; fills in the table's ``omega_used`` (after any placebo) and ``multiplier``."""
    used = [r["omega"] for r in table]
    if placebo is not None:
        used = placebo(used, cfg, seed)
    weights = {r["name"]: w for r, w in zip(table, used)}
    missing = sum(used) / len(used) if used and cfg.omega_missing is None else (cfg.omega_missing or 0.0)
    scaled, multipliers = scale_by_layer(s_hat, owner, weights, missing, cfg.renorm)
    for r, w in zip(table, used):
        r["omega_used"], r["multiplier"] = w, multipliers[r["name"]]
    return scaled


def run_sragu(model: nn.Module, data: UnlearnData, cfg: SRAGUConfig, *, seed: int, on_epoch=None,
              placebo: Placebo | None = None) -> MethodResult:
    """SRAGU, or a placebo of it when ``placebo`` replaces the ω vector."""
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
        return _apply(s_hat, owner, tables[epoch], cfg, placebo, seed)

    scale = _apply(s_hat, owner, table, cfg, placebo, seed)
    trace = scaled_ascent(model, data, cfg, seed=seed, scale=scale,
                          rescale=rescale if cfg.alpha_every_epoch else None, on_epoch=on_epoch)
    trace.extras["alpha_omega"] = table
    trace.extras["layer_multipliers"] = {r["name"]: r["multiplier"] for r in table}
    trace.extras["spectral_time_s"] = spectral_time
    if cfg.alpha_every_epoch:
        trace.extras["alpha_omega_by_epoch"] = {k: v for k, v in tables.items() if k > 0}
    trace.extras["omega_mean"] = sum(r["omega_used"] for r in table) / max(len(table), 1)
    trace.extras["alpha_missing"] = sum(1 for r in table if not math.isfinite(r["alpha"]))
    return MethodResult(model, trace)


@register("sragu", SRAGUConfig)
def sragu(model: nn.Module, data: UnlearnData, cfg: SRAGUConfig, *, seed: int, on_epoch=None) -> MethodResult:
    return run_sragu(model, data, cfg, seed=seed, on_epoch=on_epoch)
