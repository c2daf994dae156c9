"""Control ``agu_layerwise``: AGU with a free per-layer step vector (docs/protocol.md).

S̃_j = c · v_ℓ(j) · Ŝ_j with the vector v = ``layer_steps`` (layer ℓ of the Linear/Conv2d layers in
module order takes ``layer_steps[min(ℓ, len − 1)]``; an empty vector is all ones, i.e. AGU) and the same
renormalisation c as SRAGU (``_layerwise``).  Tuned with the same budget SRAGU's ω knobs get, it is the
strongest control for "per-layer weights help": SRAGU's α-derived ω is one point of this family, so SRAGU
can only matter if its α picks a good point without the search.  Touches D_f (sensitivity, updates).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .._loop import MethodResult
from ..data import UnlearnData
from ..errors import check
from ..sensitivity import forget_sensitivity, normalise_global_max
from ..spectral import spectral_layers
from ._ascent import AscentConfig, scaled_ascent
from ._layerwise import RENORMS, Renorm, param_layers, scale_by_layer
from ._registry import register

__all__ = ["AGULayerwiseConfig", "agu_layerwise", "MAX_LAYERS"]

MAX_LAYERS = 8  # entries Tune searches; deeper models reuse the last entry for the remaining layers


@dataclass(frozen=True)
class AGULayerwiseConfig(AscentConfig):
    # ("vector", low, high, length): Tune searches `length` independent uniform entries in [low, high] (SRAGU's ω
    # range), so this control gets a budget over as many per-layer weights as SRAGU's map can produce
    layer_steps: tuple[float, ...] = field(default=(), metadata={"search": ("vector", 0.1, 1.0, MAX_LAYERS)})
    renorm: Renorm = "sum"

    def __post_init__(self):
        super().__post_init__()
        check(all(v >= 0 for v in self.layer_steps), "layer_steps", self.layer_steps, "numbers >= 0")
        check(self.renorm in RENORMS, "renorm", self.renorm, f"one of {list(RENORMS)}")


@register("agu_layerwise", AGULayerwiseConfig)
def agu_layerwise(model: nn.Module, data: UnlearnData, cfg: AGULayerwiseConfig, *, seed: int,
                  on_epoch=None) -> MethodResult:
    device = next(model.parameters()).device
    s_hat = normalise_global_max(forget_sensitivity(model, data.forget, batch_size=cfg.batch_size, device=device))
    layers = spectral_layers(model)
    names = [n for n, _ in layers]
    steps = cfg.layer_steps or (1.0,)
    weights = {n: float(steps[min(i, len(steps) - 1)]) for i, n in enumerate(names)}
    scale, multipliers = scale_by_layer(s_hat, param_layers(model), weights, steps[0], cfg.renorm)
    trace = scaled_ascent(model, data, cfg, seed=seed, scale=scale, on_epoch=on_epoch)
    trace.extras["layer_multipliers"] = multipliers
    # named and shaped like SRAGU's α table, so the report labels the same layers the same way (no α here)
    trace.extras["alpha_omega"] = [{"name": n, "kind": "conv2d" if m.weight.ndim == 4 else "linear",
                                    "shape": list(m.weight.shape), "omega_used": weights[n],
                                    "multiplier": multipliers[n]} for n, m in layers]
    return MethodResult(model, trace)
