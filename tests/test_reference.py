"""Distribution-referenced metrics (sragu_core/reference.py): hand-computed cases, brute-force cross-checks, and
constructed distributions where the right answer is known."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score

from sragu_core import reference as R
from sragu_core.errors import ConfigError


# --------------------------------------------------------------------------------------------- margins
def test_margins_by_hand_and_batched():
    logits = torch.tensor([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0]], dtype=torch.float64)
    m = R.margins(logits, torch.tensor([0, 2]))
    assert m[0].item() == pytest.approx(2 - math.log(math.e + 1))  # 0.68674
    assert m[1].item() == pytest.approx(0 - (2 + math.log(1 + math.exp(-1))))  # -2.31326
    stacked = torch.stack([logits, -logits, 3 * logits])  # (models, n, C): labels broadcast over models
    y = torch.tensor([1, 0])
    assert R.margins(stacked, y).shape == (3, 2)
    for k in range(3):
        assert torch.allclose(R.margins(stacked, y)[k], R.margins(stacked[k], y))


def test_margins_stay_finite_for_extreme_logits():
    logits = torch.tensor([[200.0, 0.0], [0.0, 200.0], [1000.0, -1000.0]])  # float32: p_y rounds to 1
    m = R.margins(logits, torch.tensor([0, 0, 0]))
    assert torch.isfinite(m).all()
    assert m.tolist() == pytest.approx([200.0, -200.0, 2000.0])
    p = torch.softmax(logits, dim=1)[:, 0]
    assert not torch.isfinite(torch.log(p) - torch.log1p(-p)).all()  # what the probability route would give
    assert R.margins(logits.half(), torch.tensor([0, 0, 0])).dtype == torch.float32


def test_margins_equal_log_odds_where_stable():
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(64, 10, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (64,), generator=gen)
    p = torch.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(R.margins(logits, y), torch.log(p) - torch.log1p(-p), atol=1e-9)


def test_margins_bad_input():
    with pytest.raises(ConfigError):
        R.margins(torch.zeros(3, 2), torch.tensor([0, 2, 1]))  # label out of range
    with pytest.raises(ConfigError):
        R.margins(torch.zeros(3, 1), torch.tensor([0, 0, 0]))  # one class: no margin
    with pytest.raises(ConfigError):
        R.margins(torch.zeros(3, 2), torch.tensor([0, 1]))


# --------------------------------------------------------------------------------------------- KLoM
def _klom_brute(u, r, bins=20, eps=1e-5, clip=100.0):
    out = []
    for a, b in zip(np.clip(u, -clip, clip).T, np.clip(r, -clip, clip).T):
        lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
        p = np.histogram(a, edges)[0] / a.size
        q = np.histogram(b, edges)[0] / b.size
        q = np.where(p > 0, np.maximum(q, eps), q)
        out.append(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0))
    return np.array(out)


def test_klom_by_hand_direction_and_top_edge():
    # One point, 2 bins over [0, 1]: unlearned p = [3/4, 1/4], retrained q = [1/2, 1/2]. The retrained maximum
    # sits on the top edge and must be counted (np.digitize on linspace edges would drop it).
    u = np.array([[0.0], [0.0], [0.0], [1.0]])
    r = np.array([[0.0], [0.0], [1.0], [1.0]])
    kl_pq = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # 0.1308: KL(unlearned || retrained)
    kl_qp = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # 0.1438: the other direction
    assert R.klom(u, r, bins=2)[0] == pytest.approx(kl_pq)
    assert R.klom(r, u, bins=2)[0] == pytest.approx(kl_qp)


def test_klom_smoothing_clip_constant_and_nan():
    u, r = np.zeros((2, 1)), np.ones((2, 1))  # disjoint: every unlearned sample where q = 0 -> floored to eps
    assert R.klom(u, r, bins=2)[0] == pytest.approx(math.log(1e5))
    assert R.klom(u, r, bins=2, eps=1e-3)[0] == pytest.approx(math.log(1e3))
    assert R.klom(np.full((3, 1), 5.0), np.full((4, 1), 5.0))[0] == 0.0  # all equal: one bin, KL 0
    big = np.array([[1e6], [2e6]])  # both clipped to +100: identical
    assert R.klom(big, big + 1.0)[0] == 0.0
    rng = np.random.default_rng(0)
    u, r = rng.normal(size=(10, 3)), rng.normal(size=(10, 3))
    u[4, 1] = np.nan
    out = R.klom(u, r)
    assert np.isnan(out[1]) and np.isfinite(out[[0, 2]]).all()


def test_klom_matches_brute_force_histograms():
    rng = np.random.default_rng(1)
    u = rng.normal(size=(30, 200)) * rng.uniform(0.5, 3, 200) + rng.normal(size=200)
    r = rng.normal(size=(25, 200)) * rng.uniform(0.5, 3, 200)
    for bins in (5, 20):
        assert np.allclose(R.klom(u, r, bins=bins), _klom_brute(u, r, bins=bins), rtol=1e-12, atol=1e-12)


def test_klom_near_zero_for_same_distribution_and_grows_with_shift():
    rng = np.random.default_rng(2)
    n, m, p = 100, 100, 500
    same = R.klom(rng.normal(size=(n, p)), rng.normal(size=(m, p)))
    assert same.shape == (p,)
    # Finite-sample bias of the binned estimator at N = M = 100, 20 bins, eps 1e-5: ~0.36 mean (measured);
    # most of it is eps-smoothed tail bins (one unlearned sample where no retrained one fell: 0.01·log(0.01/eps)).
    assert 0.2 < same.mean() < 0.5
    means = [R.klom(rng.normal(size=(n, p)) + s, rng.normal(size=(m, p))).mean() for s in (0.0, 1.0, 3.0)]
    assert means[0] < means[1] < means[2]
    assert means[1] > 2 * means[0] and means[2] < math.log(1e5)  # 3 sd is not yet disjoint: below saturation


def test_klom_summary_and_bad_input():
    s = R.klom_summary(np.array([0.0, 1.0, 2.0, 3.0, 4.0]))
    assert s == {"mean": 2.0, "median": 2.0, "hi": pytest.approx(3.8), "percentile": 95.0, "n_points": 5}
    assert math.isnan(R.klom_summary(np.array([0.0, np.nan]))["hi"])
    with pytest.raises(ConfigError):
        R.klom(np.zeros((1, 3)), np.zeros((5, 3)))  # one model is not a distribution
    with pytest.raises(ConfigError):
        R.klom(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ConfigError):
        R.klom(np.zeros((4, 3)), np.zeros((4, 3)), bins=0)


# --------------------------------------------------------------------------------------------- U-LiRA
def _naive_auc(u, r):
    """The attack without leave-one-out: each model scored by Gaussians fitted on all models, itself included."""
    lp = stats.norm.logpdf
    mu_u, sd_u, mu_r, sd_r = u.mean(0), u.std(0), r.mean(0), r.std(0)
    pos = lp(u, mu_u, sd_u) - lp(u, mu_r, sd_r)
    neg = lp(r, mu_u, sd_u) - lp(r, mu_r, sd_r)
    return roc_auc_score(np.r_[np.ones(pos.size), np.zeros(neg.size)], np.r_[pos.ravel(), neg.ravel()])


def test_ulira_scores_by_hand_3_plus_3():
    u = np.array([[1.0], [2.0], [4.0]])
    r = np.array([[0.0], [1.0], [-1.0]])
    pos, neg = R.ulira_scores(u, r)
    # Unlearned model 0 (margin 1): unlearned fit on [2, 4] -> N(3, 1); retrained fit on all -> N(0, 2/3).
    by_hand = (-0.5 * math.log(2 * math.pi) - 0.5 * (1 - 3) ** 2) - (
        -0.5 * math.log(2 * math.pi * 2 / 3) - 0.5 * 1 ** 2 / (2 / 3))
    assert pos[0, 0] == pytest.approx(by_hand)
    lp = stats.norm.logpdf
    for i in range(3):  # brute force: delete the scored model, fit with np.std (ddof 0)
        rest = np.delete(u[:, 0], i)
        assert pos[i, 0] == pytest.approx(lp(u[i, 0], rest.mean(), rest.std()) - lp(u[i, 0], r.mean(), r.std()))
        rest = np.delete(r[:, 0], i)
        assert neg[i, 0] == pytest.approx(lp(r[i, 0], u.mean(), u.std()) - lp(r[i, 0], rest.mean(), rest.std()))


def test_ulira_fixed_variance_matches_brute_force():
    rng = np.random.default_rng(3)
    u, r = rng.normal(1, 1, size=(4, 6)), rng.normal(0, 2, size=(5, 6))
    pos, neg = R.ulira_scores(u, r, fixed_variance=True)

    def pooled(a, b):  # within-side squared deviations over every point, divided by all values
        ss = ((a - a.mean(0)) ** 2).sum() + ((b - b.mean(0)) ** 2).sum()
        return ss / (a.size + b.size)

    lp = stats.norm.logpdf
    for i in range(4):
        rest = np.delete(u, i, axis=0)
        sd = math.sqrt(pooled(rest, r))
        assert np.allclose(pos[i], lp(u[i], rest.mean(0), sd) - lp(u[i], r.mean(0), sd))
    for j in range(5):
        rest = np.delete(r, j, axis=0)
        sd = math.sqrt(pooled(u, rest))
        assert np.allclose(neg[j], lp(r[j], u.mean(0), sd) - lp(r[j], rest.mean(0), sd))


def test_ulira_detects_models_that_still_fit_the_target():
    rng = np.random.default_rng(4)
    u = rng.normal(4.0, 1.0, size=(20, 200))  # unlearned models still give the forget points a high margin
    r = rng.normal(0.0, 1.0, size=(20, 200))  # retrained models never saw them
    for fixed in (False, True):
        out = R.ulira(u, r, fixed_variance=fixed)
        assert out["auc"] > 0.95 and out["tpr_at_1pct"] > 0.7  # ideal: AUC 0.998, TPR@1% 0.95
        assert out["tpr_at_01pct"] <= out["tpr_at_1pct"]
        assert (out["n_unlearned"], out["n_retrained"], out["n_points"]) == (20, 20, 200)


def test_ulira_chance_for_identical_distributions():
    rng = np.random.default_rng(5)
    u, r = rng.normal(size=(20, 500)), rng.normal(size=(20, 500))
    out = R.ulira(u, r)
    assert abs(out["auc"] - 0.5) < 0.05
    assert out["tpr_at_1pct"] < 0.05


def test_ulira_leave_one_out_removes_the_in_sample_optimism():
    # 3 + 3 models from one distribution: fitting on the scored model too makes it look like its own side.
    rng = np.random.default_rng(6)
    u, r = rng.normal(size=(3, 3000)), rng.normal(size=(3, 3000))
    assert _naive_auc(u, r) > 0.75  # ~0.84: a false "leak"
    assert R.ulira(u, r)["auc"] < 0.5  # ~0.34: leave-one-out errs the other way at this size (documented)


def test_ulira_variance_floor_nan_and_bad_input():
    u, r = np.full((3, 4), 2.0), np.full((3, 4), 0.0)  # zero spread on both sides
    pos, neg = R.ulira_scores(u, r)
    assert np.isfinite(pos).all() and np.isfinite(neg).all()
    assert R.ulira(u, r)["auc"] == 1.0
    u2 = np.random.default_rng(7).normal(size=(3, 4))
    u2[0, 0] = np.nan
    assert math.isnan(R.ulira(u2, r)["auc"])
    with pytest.raises(ConfigError):
        R.ulira(np.zeros((1, 4)), np.zeros((3, 4)))
    with pytest.raises(ConfigError):
        R.ulira(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(ConfigError):
        R.ulira(u, r, var_floor=0.0)


# --------------------------------------------------------------------------------------------- noise floor
def test_pairwise_band_by_hand():
    calls = []

    def dist(a, b):
        calls.append((a, b))
        return abs(a - b)

    band = R.pairwise_band([0.0, 1.0, 3.0], dist)
    assert calls == [(0.0, 1.0), (0.0, 3.0), (1.0, 3.0)]  # each unordered pair once, lower index first
    # distances 1, 3, 2: mean 2, sd 1; numpy linear quantiles of [1, 2, 3]: 1 + 2·0.05 = 1.1, 1 + 2·0.95 = 2.9
    assert band == {"mean": 2.0, "sd": 1.0, "lo": pytest.approx(1.1), "hi": pytest.approx(2.9), "n_pairs": 3}


def test_pairwise_band_asymmetric_uses_both_orders():
    band = R.pairwise_band([0.0, 1.0, 3.0], lambda a, b: a - b, asymmetric=True, quantiles=(0.0, 1.0))
    # ordered pairs: -1, -3, 1, -2, 3, 2
    assert band["n_pairs"] == 6 and band["mean"] == 0.0
    assert (band["lo"], band["hi"]) == (-3.0, 3.0)
    assert band["sd"] == pytest.approx(np.std([-1, -3, 1, -2, 3, 2], ddof=1))


def test_against_members_by_hand_and_bad_input():
    calls = []

    def dist(a, b):
        calls.append((a, b))
        return abs(a - b)

    out = R.against_members(2.0, [0.0, 1.0, 3.0], dist)
    assert calls == [(2.0, 0.0), (2.0, 1.0), (2.0, 3.0)]  # distance(candidate, member)
    assert out == {"mean": pytest.approx(4 / 3), "sd": pytest.approx(math.sqrt(1 / 3)), "n_members": 3}
    assert R.against_members(2.0, [0.0], dist)["sd"] == 0.0
    with pytest.raises(ConfigError):
        R.pairwise_band([1.0], dist)
    with pytest.raises(ConfigError):
        R.pairwise_band([1.0, 2.0], dist, quantiles=(0.9, 0.1))
    with pytest.raises(ConfigError):
        R.against_members(2.0, [], dist)
