"""Metrics (docs/design.md §6): hand-computed cases plus cross-checks against scipy, numpy and brute force."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.distance import jensenshannon

from sragu_core import metrics as M
from sragu_core.data import Split
from sragu_core.errors import ConfigError
from sragu_core.evaluate import METRICS

# Two rows, two classes. argmax(P_U) = [0, 0], argmax(P_G) = [0, 1].
P_U = torch.tensor([[0.6, 0.4], [0.9, 0.1]])
P_G = torch.tensor([[0.8, 0.2], [0.3, 0.7]])


def _dirichlet(n, c, seed):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(c), size=n)


# --------------------------------------------------------------------------------------------- accuracy
def test_accuracy_and_per_class_by_hand():
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.1, 0.9, 0.0]])
    y = torch.tensor([0, 1, 1, 1])
    # predictions 0,1,0,1 -> correct, correct, wrong, correct
    assert M.accuracy(probs, y) == pytest.approx(0.75)
    per = M.per_class_accuracy(probs, y, 3)
    assert per[0] == pytest.approx(1.0) and per[1] == pytest.approx(2 / 3) and math.isnan(per[2])
    assert math.isnan(M.accuracy(torch.empty(0, 3), torch.empty(0, dtype=torch.long)))
    with pytest.raises(ConfigError):
        M.accuracy(probs, y[:3])


# --------------------------------------------------------------------------------------------- alignment
def test_alignment_by_hand():
    # pd: rows disagree in argmax only in row 1 -> 1/2.
    assert M.pd(P_U, P_G) == pytest.approx(0.5)
    # tv: row 0 = ½(0.2 + 0.2) = 0.2, row 1 = ½(0.6 + 0.6) = 0.6 -> mean 0.4.
    assert M.tv(P_U, P_G) == pytest.approx(0.4)
    # KL(p_g‖p_u): row 0 = 0.8 ln(0.8/0.6) + 0.2 ln(0.2/0.4) ≈ 0.230146 − 0.138629 = 0.091516
    #              row 1 = 0.3 ln(0.3/0.9) + 0.7 ln(0.7/0.1) ≈ −0.329584 + 1.362137 = 1.032553
    assert M.kl_to_gold(P_U, P_G) == pytest.approx((0.091516 + 1.032553) / 2, abs=1e-5)
    # KL is not symmetric: swapping the arguments must give a different number.
    assert abs(M.kl_to_gold(P_G, P_U) - M.kl_to_gold(P_U, P_G)) > 0.05


def test_js_by_hand():
    # Disjoint one-hots: m = (½, ½), KL(p‖m) = ln 2 for both -> JS = ln 2 (the upper bound).
    assert M.js(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])) == pytest.approx(math.log(2))
    # p = (1, 0), q = (½, ½): m = (¾, ¼); KL(p‖m) = ln(4/3); KL(q‖m) = ½ ln(2/3) + ½ ln 2 = ½ ln(4/3)
    # -> JS = ½ ln(4/3) + ¼ ln(4/3) = ¾ ln(4/3) ≈ 0.215762.
    assert M.js(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]])) == pytest.approx(0.75 * math.log(4 / 3))


def test_alignment_against_scipy_and_numpy():
    pu, pg = _dirichlet(50, 5, 0), _dirichlet(50, 5, 1)
    tu, tg = torch.from_numpy(pu).float(), torch.from_numpy(pg).float()
    kl_ref = np.mean([stats.entropy(g, u) for u, g in zip(pu, pg)])  # entropy(p, q) = KL(p‖q)
    js_ref = np.mean([jensenshannon(u, g) ** 2 for u, g in zip(pu, pg)])  # scipy returns √JS
    tv_ref = np.mean(0.5 * np.abs(pu - pg).sum(axis=1))
    pd_ref = np.mean(pu.argmax(1) != pg.argmax(1))
    assert M.kl_to_gold(tu, tg) == pytest.approx(kl_ref, rel=1e-5)
    assert M.js(tu, tg) == pytest.approx(js_ref, rel=1e-5)
    assert M.tv(tu, tg) == pytest.approx(tv_ref, rel=1e-5)
    assert M.pd(tu, tg) == pytest.approx(pd_ref)
    assert 0 < M.js(tu, tg) <= math.log(2)


def test_alignment_identical_is_zero_and_kl_clamps_zeros():
    p = torch.from_numpy(_dirichlet(20, 4, 2))
    for f in (M.pd, M.tv, M.kl_to_gold, M.js):
        assert f(p, p.clone()) == pytest.approx(0.0, abs=1e-9)
    # p_u puts zero mass where gold has mass: clamping keeps KL finite, ≈ 1·ln(1/eps).
    kl = M.kl_to_gold(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]]), eps=1e-12)
    assert math.isfinite(kl) and kl == pytest.approx(math.log(1e12), rel=1e-6)


@pytest.mark.parametrize("f", [M.pd, M.tv, M.kl_to_gold, M.js])
def test_alignment_shape_mismatch(f):
    with pytest.raises(ConfigError) as e:
        f(torch.rand(3, 4), torch.rand(3, 5))
    assert e.value.field == "p_u" and e.value.value == (3, 4) and "same shape as p_g" in e.value.allowed


# --------------------------------------------------------------------------------------------- leakage
def _brute_auc(member, non):
    # P(score_member > score_non) + ½ P(tie), with score = −loss.
    wins = sum((m < n) + 0.5 * (m == n) for m in member for n in non)
    return wins / (len(member) * len(non))


def test_mia_auc_separated_identical_and_brute_force():
    assert M.mia_auc(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([1.0, 2.0])) == pytest.approx(1.0)
    assert M.mia_auc(torch.tensor([1.0, 2.0]), torch.tensor([0.1, 0.2, 0.3])) == pytest.approx(0.0)
    g = torch.Generator().manual_seed(0)
    same = M.mia_auc(torch.rand(4000, generator=g), torch.rand(4000, generator=g))
    assert abs(same - 0.5) < 0.03
    # Rounded losses create ties, which sklearn and the brute force both count as ½.
    member = torch.round(torch.rand(40, generator=g) * 5) / 5
    non = torch.round(torch.rand(30, generator=g) * 5 + 0.5) / 5
    assert M.mia_auc(member, non) == pytest.approx(_brute_auc(member.tolist(), non.tolist()))
    assert math.isnan(M.mia_auc(torch.tensor([float("nan"), 1.0]), torch.tensor([1.0])))
    with pytest.raises(ConfigError):
        M.mia_auc(torch.tensor([]), torch.tensor([1.0]))


def test_size_matched_deterministic_distinct():
    a, b = M.size_matched(30, 100, seed=3), M.size_matched(30, 100, seed=3)
    assert torch.equal(a, b) and a.dtype == torch.int64
    assert len(set(a.tolist())) == 30 and 0 <= int(a.min()) and int(a.max()) < 100
    assert not torch.equal(a, M.size_matched(30, 100, seed=4))
    assert torch.equal(M.size_matched(500, 7, seed=0), torch.arange(7))


def _probs_with_conf(conf, seed):
    # 3 classes; the true class (random) gets `conf`, the other two split the rest unevenly.
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (len(conf),), generator=g)
    p = torch.zeros(len(conf), 3)
    rest = 1 - conf
    p[:, :] = (rest * 0.3)[:, None]
    p[torch.arange(len(conf)), (y + 1) % 3] = rest * 0.7
    p[torch.arange(len(conf)), y] = conf
    return p, y


def test_mia_efficacy_forget_like_test_vs_like_retain():
    g = torch.Generator().manual_seed(0)
    retain = _probs_with_conf(0.95 + 0.05 * torch.rand(600, generator=g), 1)  # members: confident
    test = _probs_with_conf(0.2 + 0.4 * torch.rand(200, generator=g), 2)  # non-members: unsure
    forgot = _probs_with_conf(0.2 + 0.4 * torch.rand(100, generator=g), 3)
    kept = _probs_with_conf(0.95 + 0.05 * torch.rand(100, generator=g), 4)
    high = M.mia_efficacy(*retain, *test, *forgot, seed=0)
    low = M.mia_efficacy(*retain, *test, *kept, seed=0)
    assert high > 0.9 and low < 0.1
    assert M.mia_efficacy(*retain, *test, *forgot, seed=0) == high  # deterministic for a seed
    with pytest.raises(ConfigError):
        M.mia_efficacy(*retain, *test, forgot[0][:, :2], forgot[1] % 2)


# --------------------------------------------------------------------------------------------- stability
def test_diverged():
    lin = torch.nn.Linear(3, 2)
    assert not M.diverged(lin)
    assert not M.diverged(lin, torch.tensor([0.1, 2.0]))
    assert M.diverged(lin, torch.tensor([0.1, float("inf")]))
    with torch.no_grad():
        lin.weight[0, 1] = float("nan")
    assert M.diverged(lin)
    assert M.diverged({"w": torch.tensor([1.0, float("-inf")]), "steps": torch.tensor(3)})


def test_layer_relative_shift_by_hand():
    before = {"w": torch.tensor([3.0, 4.0]), "b": torch.zeros(2), "n": torch.tensor(5)}
    after = {"w": torch.tensor([3.3, 4.4]), "b": torch.tensor([1.0, 0.0]), "n": torch.tensor(9)}
    out = M.layer_relative_shift(before, after)
    # w: ‖(0.3, 0.4)‖ / ‖(3, 4)‖ = 0.5 / 5 = 0.1; b: zero norm -> absolute shift 1.0; n: integer, skipped.
    assert out == pytest.approx({"w": 0.1, "b": 1.0})
    with pytest.raises(ConfigError):
        M.layer_relative_shift(before, {"w": after["w"], "b": after["b"]})
    with pytest.raises(ConfigError):
        M.layer_relative_shift(before, {**after, "w": torch.zeros(3)})


def test_alpha_drift():
    out = M.alpha_drift({"a": 2.0, "b": None, "c": 3.0, "d": 1.0}, {"a": 2.5, "b": 3.0, "c": float("nan")})
    assert set(out) == {"a", "b", "c"} and out["a"] == pytest.approx(0.5)
    assert math.isnan(out["b"]) and math.isnan(out["c"])


def test_avg_gap_and_rte_by_hand():
    u = {"forget_acc": 0.9, "retain_acc": 0.95, "test_acc": 0.85, "mia_efficacy": 0.2, "x": 7.0}
    g = {"forget_acc": 0.8, "retain_acc": 0.97, "test_acc": 0.86, "mia_efficacy": 0.3}
    # (0.10 + 0.02 + 0.01 + 0.10) / 4 = 0.0575
    assert M.avg_gap(u, g) == pytest.approx(0.0575)
    assert M.avg_gap(u, g, keys=("forget_acc",)) == pytest.approx(0.1)
    with pytest.raises(ConfigError):
        M.avg_gap(u, g, keys=("x",))
    assert M.rte(100.0, 4.0) == pytest.approx(25.0)
    for bad in (0.0, -1.0):
        with pytest.raises(ConfigError):
            M.rte(100.0, bad)


def test_mean_ci_against_scipy():
    v = [0.71, 0.74, 0.69, 0.80, 0.77]
    mean, std, lo, hi = M.mean_ci(v, confidence=0.9)
    ref = stats.t.interval(0.9, df=4, loc=np.mean(v), scale=stats.sem(v))
    assert mean == pytest.approx(np.mean(v)) and std == pytest.approx(np.std(v, ddof=1))
    assert (lo, hi) == pytest.approx(ref)
    one = M.mean_ci([0.3])
    assert one[:2] == (0.3, 0.0) and math.isnan(one[2]) and math.isnan(one[3])
    assert M.mean_ci([0.5, 0.5, 0.5]) == pytest.approx((0.5, 0.0, 0.5, 0.5))
    with pytest.raises(ConfigError):
        M.mean_ci([])


# --------------------------------------------------------------------------------------------- predict
@pytest.mark.parametrize("training", [True, False])
def test_predict_matches_manual_and_restores_mode(training):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.5))
    model.train(training)
    x, y = torch.randn(10, 3), torch.randint(0, 4, (10,))
    probs, losses = M.predict(model, Split(x, y), device="cpu", batch_size=3)
    assert model.training is training
    with torch.no_grad():
        logits = model[0](x)  # eval mode: dropout is the identity
    ref = torch.exp(logits) / torch.exp(logits).sum(dim=1, keepdim=True)
    assert probs.shape == (10, 4) and torch.allclose(probs, ref, atol=1e-6)
    assert torch.allclose(losses, -torch.log(ref[torch.arange(10), y]), atol=1e-5)
    probs_x, none = M.predict(model, x, device="cpu")
    assert none is None and torch.allclose(probs_x, probs)


def test_metric_registry_covers_reported_names():
    names = ["forget_acc", "retain_acc", "test_acc", "val_acc", "forget_acc_gap", "retain_acc_gap",
             "test_acc_gap", "mia_auc", "mia_gap", "mia_efficacy", "diverged", "test_acc_drop",
             "max_layer_shift", "mean_alpha_drift", "avg_gap", "rte", "method_time_s",
             "spectral_time_s", "peak_mem_mb"]
    names += [f"{k}{s}" for k in ("pd", "tv", "kl_to_gold", "js") for s in ("", "_test")]
    for n in names:
        spec = METRICS[n]
        assert spec.direction in {"lower", "higher", "closer_to_gold", "n/a"} and spec.formula
    assert "D_test" in METRICS["js_test"].formula and "D_f" in METRICS["js"].formula


def test_mia_efficacy_uses_true_class_confidence_not_max():
    # Forget points confidently predicted as a *wrong* class: p[y] = 0.02 looks like a test point, while an
    # attack on the max probability (0.98) would call them members.
    g = torch.Generator().manual_seed(1)
    retain = _probs_with_conf(0.95 + 0.05 * torch.rand(400, generator=g), 1)
    test = _probs_with_conf(0.6 * torch.rand(200, generator=g), 2)
    y = torch.randint(0, 3, (50,), generator=g)
    p = torch.zeros(50, 3)
    p[torch.arange(50), y] = 0.02
    p[torch.arange(50), (y + 1) % 3] = 0.98
    assert M.mia_efficacy(*retain, *test, p, y) > 0.9
    assert M.mia_efficacy(*retain, *test, p, (y + 1) % 3) < 0.1  # same probs, labels on the peak: members
