"""SRAGU's α → ω maps on hand-computed points."""

import math

import pytest
import torch

from sragu_core.methods.sragu import SRAGUConfig
from sragu_core.omega import OMEGA_MAPS


def _w(name, alphas, **kw):
    cfg = SRAGUConfig(omega_map=name, **kw)
    return OMEGA_MAPS[name](torch.tensor(alphas, dtype=torch.float64), cfg).tolist()


def test_gaussian():
    # ω = 0.1 + 0.9·exp(−(α−4)²/(2·1.5²)): 1 at α*, 0.1 + 0.9·e^(−1/2) one τ away
    w = _w("gaussian", [4.0, 5.5, 2.5, 40.0])
    assert w[0] == pytest.approx(1.0)
    assert w[1] == pytest.approx(0.1 + 0.9 * math.exp(-0.5)) and w[2] == pytest.approx(w[1])
    assert w[3] == pytest.approx(0.1, abs=1e-12)


def test_trapezoid():
    # 1 on [2, 6], linear to ω_min = 0.1 over one unit outside, flat after that
    assert _w("trapezoid", [2.0, 4.0, 6.0, 6.5, 1.5, 7.0, 9.0, 0.0]) == pytest.approx(
        [1.0, 1.0, 1.0, 0.55, 0.55, 0.1, 0.1, 0.1])


def test_monotone():
    # clip((6 − α)/4, 0.1, 1)
    assert _w("monotone", [1.0, 2.0, 4.0, 5.8, 8.0]) == pytest.approx([1.0, 1.0, 0.5, 0.1, 0.1])


def test_linear_rank():
    # min-max over the layers, decreasing in α: smallest α → ω_max, largest → ω_min
    assert _w("linear_rank", [2.0, 3.0, 6.0]) == pytest.approx([1.0, 1.0 - 0.9 * 0.25, 0.1])
    assert _w("linear_rank", [3.0, 3.0]) == pytest.approx([1.0, 1.0])
    w = _w("linear_rank", [2.0, float("nan"), 4.0])
    assert w[0] == pytest.approx(1.0) and w[2] == pytest.approx(0.1)


@pytest.mark.parametrize("name", OMEGA_MAPS.names())
def test_every_map_is_bounded(name):
    alphas = torch.linspace(0.5, 30, 200, dtype=torch.float64)
    cfg = SRAGUConfig(omega_map=name, omega_min=0.2, omega_max=0.8)
    w = OMEGA_MAPS[name](alphas, cfg)
    assert float(w.min()) >= 0.2 - 1e-12 and float(w.max()) <= 0.8 + 1e-12
