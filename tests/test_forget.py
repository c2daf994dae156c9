"""Forget-set selection (docs/design.md §5): every regime against an independent re-computation in the test.

θ0 is a tiny MLP trained for three epochs on 200 Gaussian-blob points (10 classes × 20, inputs 1×8×8),
so every regime selects something non-trivial and the whole module runs in about a second.  The registry-wide
tests run each regime as the pipeline does (:func:`_run`): on :func:`prepare_train`'s split when the regime
alters the data, with a subset-model trainer (a 1-nearest-neighbour learner) when it needs one.  The hard
regimes' own rules are tested in tests/test_hard_regimes.py.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sragu_core.data import Split
from sragu_core.errors import ConfigError
from sragu_core.forget import (
    REGIMES,
    ForgetConfig,
    ForgetSet,
    parse_regime,
    per_sample_scores,
    prepare_train,
    retain_indices,
    select_forget,
)
from sragu_core.metrics import size_matched
from sragu_core.models import ModelConfig, build_model
from sragu_core.training import TrainConfig, train

N, C = 200, 10
ADVERSARIAL = tuple(r for r in REGIMES if REGIMES[r].needs_model)  # the regimes that score points with θ0


def _blobs(n: int = N, c: int = C, seed: int = 0, noise: float = 1.5) -> Split:
    """n points, n/c per class in shuffled order, class means N(0, I) in 64-D, isotropic noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randperm(n, generator=g) % c
    means = torch.randn(c, 64, generator=g)
    x = (means[y] + noise * torch.randn(n, 64, generator=g)).reshape(n, 1, 8, 8)
    return Split(x, y)


@pytest.fixture(scope="module")
def data() -> Split:
    return _blobs()


@pytest.fixture(scope="module")
def theta0(data):
    model = build_model(ModelConfig("mlp", mlp_hidden=(16,)), (1, 8, 8), C, seed=0)
    train(model, data, TrainConfig(epochs=3, lr=0.1), seed=0)
    model.eval()
    return model


def nn_trainer(train: Split):
    """``trainer`` for regimes that need one: a 1-nearest-neighbour learner, which fits every point it is trained
    on (maximal memorisation) and classifies the others by their nearest neighbour in the subset."""
    x = train.x.flatten(1)
    dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")  # exact: a point is its own nearest

    def trainer(subsets: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([train.y[s[dist[:, s].argmin(1)]] == train.y for s in subsets])
    return trainer


def _run(cfg: ForgetConfig, data: Split, model, *, seed=0, num_classes=C, heldout=None) -> tuple[Split, ForgetSet]:
    """What the pipeline does: the regime's training split (altered or not), a trainer if it needs one, the set."""
    train, info = prepare_train(cfg, data, num_classes, seed)
    trainer = nn_trainer(train) if cfg.spec.needs_trainer else None
    return train, select_forget(cfg, train, num_classes, seed=seed, model=model, heldout=heldout, trainer=trainer,
                                alteration=info)


def _select(data, model, regime, *, seed=0, fraction=0.1, classes=(3,), neighbor_fraction=0.5, num_classes=C):
    cfg = ForgetConfig(regime=regime, fraction=fraction, classes=classes, neighbor_fraction=neighbor_fraction)
    return _run(cfg, data, model, seed=seed, num_classes=num_classes)[1]


def _expect_config_error(field: str, value: str, fn, *args, **kwargs) -> ConfigError:
    """``fn`` raises ConfigError for ``field`` whose one-line message names the field and the value."""
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert info.value.field == field, msg
    assert field in msg and value in msg, msg
    assert "\n" not in msg
    return info.value


def _top_k(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the k largest scores, by a plain Python sort (independent of the code under test)."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    return sorted(order[:k])


# ------------------------------------------------------------------------------------ every regime
@pytest.mark.parametrize("regime", REGIMES)
def test_every_regime_is_deterministic_sorted_and_in_range(data, theta0, regime):
    cfg = ForgetConfig(regime=regime, classes=(3,))
    train, a = _run(cfg, data, theta0, seed=5)
    train_b, b = _run(cfg, data, theta0, seed=5)
    assert torch.equal(train.x, train_b.x) and torch.equal(train.y, train_b.y)
    assert torch.equal(a.indices, b.indices)
    assert a.manifest == b.manifest
    idx = a.indices
    assert idx.dtype == torch.int64 and idx.ndim == 1
    assert torch.equal(idx, torch.sort(idx).values)
    assert len(torch.unique(idx)) == len(idx)
    n = len(train)  # N, or more where the regime appends data
    assert 0 < len(idx) < n and int(idx.min()) >= 0 and int(idx.max()) < n


@pytest.mark.parametrize("fraction", [0.1, 0.33, 0.5])
def test_random_has_round_fraction_n_points_and_depends_on_seed(data, fraction):
    s0 = _select(data, None, "random", seed=0, fraction=fraction)
    s1 = _select(data, None, "random", seed=1, fraction=fraction)
    assert len(s0.indices) == len(s1.indices) == round(fraction * N)
    assert not torch.equal(s0.indices, s1.indices)
    assert s0.manifest["content_hash"] != s1.manifest["content_hash"]
    assert (s0.manifest["seed"], s1.manifest["seed"]) == (0, 1)


@pytest.mark.parametrize("classes", [(3,), (3, 5), (0, 9)])
def test_class_selects_exactly_every_point_of_the_classes(data, classes):
    fs = _select(data, None, "class", classes=classes)
    expected = [i for i in range(N) if int(data.y[i]) in classes]
    assert fs.indices.tolist() == expected
    hist = fs.manifest["class_histogram"]
    assert [hist[c] for c in classes] == [20] * len(classes)
    assert sum(hist) == 20 * len(classes)


def test_high_loss_is_the_top_k_per_sample_cross_entropy(data, theta0):
    with torch.no_grad():
        losses = F.cross_entropy(theta0(data.x), data.y, reduction="none")
    fs = _select(data, theta0, "high_loss", fraction=0.1)
    assert fs.indices.tolist() == _top_k(losses, 20)
    outside = torch.ones(N, dtype=torch.bool)
    outside[fs.indices] = False
    assert losses[fs.indices].min() > losses[outside].max()
    assert torch.allclose(per_sample_scores(theta0, data, "high_loss", device="cpu"), losses, atol=1e-6)


def test_low_margin_is_the_k_smallest_logit_margins(data, theta0):
    with torch.no_grad():
        logits = theta0(data.x)
    margins = []
    for z, y in zip(logits, data.y.tolist()):
        others = [float(z[k]) for k in range(C) if k != y]
        margins.append(float(z[y]) - max(others))
    margins = torch.tensor(margins)
    fs = _select(data, theta0, "low_margin", fraction=0.15)
    assert fs.indices.tolist() == _top_k(-margins, 30)
    assert torch.allclose(per_sample_scores(theta0, data, "low_margin", device="cpu"), -margins, atol=1e-5)


def test_top_sensitivity_matches_a_per_sample_autograd_loop(data, theta0):
    params = [p for p in theta0.parameters()]
    norms = []
    for i in range(N):
        loss = F.cross_entropy(theta0(data.x[i:i + 1]), data.y[i:i + 1])
        grads = torch.autograd.grad(loss, params)
        norms.append(float(torch.sqrt(sum((g ** 2).sum() for g in grads))))
    norms = torch.tensor(norms)
    scores = per_sample_scores(theta0, data, "top_sensitivity", device="cpu")
    assert torch.allclose(scores, norms, rtol=1e-4, atol=1e-6)
    fs = _select(data, theta0, "top_sensitivity", fraction=0.1)
    assert fs.indices.tolist() == _top_k(norms, 20)


@pytest.mark.parametrize("neighbor_fraction, n_neighbour", [(0.5, 10), (0.25, 5), (1.0, 20)])
def test_class_concentrated_is_a_whole_class_plus_its_nearest_neighbours(data, theta0, neighbor_fraction,
                                                                       n_neighbour):
    c = 3
    with torch.no_grad():
        probs = F.softmax(theta0(data.x), 1)
    mean_conf = probs[data.y == c].mean(0).tolist()
    neighbour = max((k for k in range(C) if k != c), key=lambda k: mean_conf[k])
    nb_points = [i for i in range(N) if int(data.y[i]) == neighbour]
    nb_chosen = sorted(sorted(nb_points, key=lambda i: -float(probs[i, c]))[:n_neighbour])

    fs = _select(data, theta0, "class_concentrated", classes=(c,), neighbor_fraction=neighbor_fraction)
    labels = data.y[fs.indices].tolist()
    assert set(labels) == {c, neighbour}  # exactly one other class
    assert labels.count(c) == 20 and labels.count(neighbour) == n_neighbour
    whole_class = [i for i in range(N) if int(data.y[i]) == c]
    assert fs.indices.tolist() == sorted(whole_class + nb_chosen)
    expected_hist = [0] * C
    expected_hist[c], expected_hist[neighbour] = 20, n_neighbour
    assert fs.manifest["class_histogram"] == expected_hist


# ----------------------------------------------------------------------------------------- manifest
@pytest.mark.parametrize("regime", REGIMES)
def test_manifest_describes_the_indices(data, theta0, regime):
    cfg = ForgetConfig(regime=regime, fraction=0.2, classes=(3,))
    train, fs = _run(cfg, data, theta0, seed=4)
    m = fs.manifest
    assert m["regime"] == regime and m["seed"] == 4
    assert m["size"] == len(fs.indices) and m["train_size"] == len(train)
    hist = m["class_histogram"]
    assert len(hist) == C and sum(hist) == m["size"]
    assert hist == torch.bincount(train.y[fs.indices], minlength=C).tolist()  # the labels θ0 was trained on
    assert isinstance(m["content_hash"], str) and m["content_hash"]
    assert m["alteration"] == prepare_train(cfg, data, C, 4)[1]  # {} where the regime leaves the data as it is


def test_content_hash_follows_the_indices_only(data):
    a = _select(data, None, "class", seed=0, classes=(3,))
    b = _select(data, None, "class", seed=7, classes=(3,))  # seed is irrelevant to a class deletion
    c = _select(data, None, "class", seed=0, classes=(4,))
    assert torch.equal(a.indices, b.indices)
    assert a.manifest["content_hash"] == b.manifest["content_hash"]
    assert a.manifest["seed"] == 0 and b.manifest["seed"] == 7
    assert a.manifest["content_hash"] != c.manifest["content_hash"]


def test_retain_is_the_exact_sorted_complement(data):
    assert retain_indices(6, torch.tensor([1, 4])).tolist() == [0, 2, 3, 5]
    forget = _select(data, None, "random", seed=3, fraction=0.3).indices
    retain = retain_indices(N, forget)
    assert torch.equal(retain, torch.sort(retain).values)
    assert len(retain) + len(forget) == N
    assert set(retain.tolist()).isdisjoint(forget.tolist())
    assert sorted(retain.tolist() + forget.tolist()) == list(range(N))


@pytest.mark.parametrize("training", [True, False])
def test_scoring_leaves_the_model_untouched(data, theta0, training):
    before = {k: v.clone() for k, v in theta0.state_dict().items()}
    theta0.train(training)
    try:
        for regime in ADVERSARIAL:
            _select(data, theta0, regime)
        assert theta0.training is training
    finally:
        theta0.eval()
    assert all(torch.equal(before[k], v) for k, v in theta0.state_dict().items())


# ---------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("fraction", [0, 0.0, 1, 1.0, 1.5, -0.1])
def test_fraction_outside_open_unit_interval_is_refused(fraction):
    _expect_config_error("forget.fraction", repr(fraction), ForgetConfig, regime="random", fraction=fraction)


def test_bad_regime_and_neighbour_fraction_are_refused():
    _expect_config_error("forget.regime", "bogus", ForgetConfig, regime="bogus")
    _expect_config_error("forget.neighbor_fraction", "0", ForgetConfig, regime="class_concentrated",
                         neighbor_fraction=0)


@pytest.mark.parametrize("regime", ["class", "class_concentrated"])
@pytest.mark.parametrize("cls", [10, -1])
def test_class_out_of_range_is_refused(data, theta0, regime, cls):
    _expect_config_error("forget.classes", str(cls), _select, data, theta0, regime, classes=(cls,))


@pytest.mark.parametrize("regime", ADVERSARIAL)
def test_adversarial_regime_without_original_model_is_refused(data, regime):
    _expect_config_error("forget.regime", regime, _select, data, None, regime)


def test_empty_forget_set_is_refused(data):
    keep = data.y != 3
    without_3 = Split(data.x[keep], data.y[keep])
    _expect_config_error("forget_set.size", "0", _select, without_3, None, "class", classes=(3,))
    # round(0.001 * 200) == 0 points
    _expect_config_error("forget_set.size", "0", _select, data, None, "random", fraction=0.001)


def test_class_concentrated_on_an_absent_class_is_refused(data, theta0):
    keep = data.y != 3
    without_3 = Split(data.x[keep], data.y[keep])
    with pytest.raises(ConfigError):
        _select(without_3, theta0, "class_concentrated", classes=(3,))


def test_forget_set_equal_to_the_whole_training_set_is_refused():
    g = torch.Generator().manual_seed(0)
    only_zeros = Split(torch.randn(N, 1, 8, 8, generator=g), torch.zeros(N, dtype=torch.int64))
    _expect_config_error("forget_set.size", str(N), _select, only_zeros, None, "class", classes=(0,),
                         num_classes=2)


# ------------------------------------------------------------------------------------ the registry's flags
def test_the_adversarial_regimes_are_the_ones_flagged():
    assert set(ADVERSARIAL) == {"top_sensitivity", "high_loss", "low_margin", "class_concentrated",
                                "top_sensitivity_fitted", "high_loss_fitted", "low_margin_fitted", "subpopulation"}
    assert {r for r in REGIMES if REGIMES[r].needs_trainer} == {"memorised"}
    assert {r for r in REGIMES if REGIMES[r].alter is not None} == {"mislabelled", "duplicates"}


@pytest.mark.parametrize("regime", REGIMES)
def test_every_regime_parses_its_example(regime):
    spec = REGIMES[regime]
    cfg = parse_regime(spec.example)
    assert cfg.regime == regime and cfg.label().startswith(regime)
    assert spec.syntax.startswith(f"{regime}:")
    with pytest.raises(ConfigError) as info:
        parse_regime(f"{regime}:1:2:3:4")
    assert info.value.field == "regimes" and spec.syntax in str(info.value)


@pytest.mark.parametrize("regime", REGIMES)
def test_regime_flags_tell_the_truth(data, theta0, regime):
    spec = REGIMES[regime]
    cfg = parse_regime(spec.example)
    train, info = prepare_train(cfg, data, C, 0)
    if spec.alter is not None:  # flagged: θ0 trains on changed data, the same for the same seed
        assert len(train) != N or not torch.equal(train.y, data.y)
        again = prepare_train(cfg, data, C, 0)
        assert torch.equal(again[0].x, train.x) and torch.equal(again[0].y, train.y) and again[1] == info
    else:  # not flagged: the very split
        assert train is data and info == {}
    trainer = nn_trainer(train) if spec.needs_trainer else None
    with_model = select_forget(cfg, train, C, seed=0, model=theta0, trainer=trainer)
    if spec.needs_model:  # flagged: refused without θ0
        _expect_config_error("forget.regime", regime, select_forget, cfg, train, C, seed=0, model=None,
                             trainer=trainer)
    else:  # not flagged: θ0 plays no part
        without = select_forget(cfg, train, C, seed=0, model=None, trainer=trainer)
        assert torch.equal(without.indices, with_model.indices)
    if spec.needs_trainer:  # flagged: refused without a trainer
        _expect_config_error("forget.regime", regime, select_forget, cfg, train, C, seed=0, model=theta0)
    whole = torch.nonzero(train.y == cfg.classes[0]).squeeze(1)
    if spec.by_class:  # a class deletion forgets every point of its (first) class
        assert bool(torch.isin(whole, with_model.indices).all())
    elif "fraction" in spec.parse(spec.example.split(":")[1:]):  # takes its fraction of the n points it was given
        assert len(with_model.indices) == round(cfg.fraction * len(data))  # (before any copies were appended)
    # (subpopulation is sized by its clustering: tests/test_hard_regimes.py)


# ------------------------------------------------------------------------------- fitted variants
FITTED = ("high_loss", "low_margin", "top_sensitivity")


def _correct(model, split: Split) -> torch.Tensor:
    with torch.no_grad():
        return model(split.x).argmax(1) == split.y


@pytest.mark.parametrize("base", FITTED)
def test_fitted_variant_takes_the_top_scoring_points_theta0_classifies_correctly(data, theta0, base):
    correct = _correct(theta0, data)
    assert 0 < int((~correct).sum()) < 20  # θ0 (97% here) misses a few points: the restriction bites
    scores = per_sample_scores(theta0, data, base, device="cpu")  # checked against references above
    fs = _select(data, theta0, f"{base}_fitted", fraction=0.15)
    k = round(0.15 * N)  # round(fraction·n), n = the whole training set
    assert len(fs.indices) == k
    assert bool(correct[fs.indices].all())  # every chosen point is fitted by θ0
    fitted = [i for i in range(N) if bool(correct[i])]
    expected = sorted(fitted[j] for j in _top_k(scores[fitted], k))  # the top-k among the fitted points
    assert fs.indices.tolist() == expected
    unchosen = torch.tensor([i for i in fitted if i not in set(expected)])
    assert scores[fs.indices].min() >= scores[unchosen].max()
    # deterministic, and not the plain rule (which takes θ0's misclassified points first)
    assert torch.equal(fs.indices, _select(data, theta0, f"{base}_fitted", fraction=0.15).indices)
    plain = _select(data, theta0, base, fraction=0.15).indices
    if base != "top_sensitivity":  # loss and margin rank every misclassified point above every fitted one
        assert not bool(correct[plain].all())
    assert fs.manifest["regime"] == f"{base}_fitted" and parse_regime(f"{base}_fitted:0.15") == ForgetConfig(
        regime=f"{base}_fitted", fraction=0.15)


@pytest.mark.parametrize("base", FITTED)
def test_fitted_variant_on_an_underfit_theta0_is_a_clear_error(data, base):
    untrained = build_model(ModelConfig("mlp", mlp_hidden=(16,)), (1, 8, 8), C, seed=0)  # ~14% correct
    n_fit = int(_correct(untrained, data).sum())
    err = _expect_config_error("forget.fraction", "0.5", _select, data, untrained, f"{base}_fitted", fraction=0.5)
    assert f"{n_fit}/{N}" in str(err) and "100" in str(err)


# ------------------------------------------------------------------ selection and the train/eval state
class _BNNet(nn.Module):
    """Linear · BatchNorm1d · ReLU · Linear on flattened 1×8×8 inputs."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, C))

    def forward(self, x):
        return self.body(x)


@pytest.fixture(scope="module")
def bn_theta0(data):
    torch.manual_seed(0)
    model = _BNNet()
    train(model, data, TrainConfig(epochs=3, lr=0.1), seed=0)  # running stats now θ0's own, not 0/1
    model.eval()
    return model


def _modes(model: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.named_buffers()}


@pytest.mark.parametrize("regime", ADVERSARIAL)
def test_selection_neither_depends_on_nor_changes_the_train_eval_state(data, bn_theta0, regime):
    heldout = _heldout()
    buffers = _buffers(bn_theta0)
    assert {"body.2.running_mean", "body.2.running_var", "body.2.num_batches_tracked"} <= set(buffers)
    assert int(buffers["body.2.num_batches_tracked"]) > 0
    picks = []
    try:
        for state in ("eval", "train", "mixed"):
            bn_theta0.train(state != "eval")
            if state == "mixed":  # a state only a per-module restore keeps
                bn_theta0.body[2].eval()
            before = _modes(bn_theta0)
            fs = _select_with_heldout(data, bn_theta0, regime, heldout)
            assert _modes(bn_theta0) == before, state
            after = _buffers(bn_theta0)
            assert all(torch.equal(buffers[k], after[k]) for k in buffers), state
            picks.append((fs.indices, fs.nonmember_indices))
    finally:
        bn_theta0.eval()
    for idx, nonmembers in picks[1:]:
        assert torch.equal(idx, picks[0][0]) and torch.equal(nonmembers, picks[0][1])


# --------------------------------------------------------------- non-members: the same rule on held-out data
def _heldout(n: int = 100, seed: int = 1) -> Split:
    """Unseen points from the training blobs' distribution (the class means of ``_blobs()``)."""
    g0 = torch.Generator().manual_seed(0)
    torch.randperm(N, generator=g0)  # advance as _blobs() does, to draw the same class means
    means = torch.randn(C, 64, generator=g0)
    g = torch.Generator().manual_seed(seed)
    y = torch.randperm(n, generator=g) % C
    return Split((means[y] + 1.5 * torch.randn(n, 64, generator=g)).reshape(n, 1, 8, 8), y)


def _select_with_heldout(data, model, regime, heldout, *, fraction=0.1, classes=(3,), seed=0):
    cfg = ForgetConfig(regime=regime, fraction=fraction, classes=classes)
    return select_forget(cfg, data, C, seed=seed, model=model, heldout=heldout)


@pytest.mark.parametrize("classes", [(3,), (0, 9)])
def test_class_nonmembers_are_exactly_the_heldout_points_of_the_classes(data, classes):
    heldout = _heldout()
    fs = _select_with_heldout(data, None, "class", heldout, classes=classes)
    assert fs.nonmember_indices.tolist() == [i for i in range(len(heldout)) if int(heldout.y[i]) in classes]
    m = fs.manifest
    assert m["nonmember_rule"] == "same_selection_on_test" and m["nonmember_size"] == 10 * len(classes)
    # the forget set itself is what it is without held-out data
    assert torch.equal(fs.indices, _select(data, None, "class", classes=classes).indices)


def test_random_nonmembers_are_a_random_fraction_of_the_heldout_data(data):
    heldout = _heldout()
    fs = _select_with_heldout(data, None, "random", heldout, fraction=0.3, seed=2)
    idx = fs.nonmember_indices
    assert len(idx) == round(0.3 * len(heldout)) and len(torch.unique(idx)) == len(idx)
    assert torch.equal(idx, torch.sort(idx).values) and int(idx.max()) < len(heldout)
    assert not torch.equal(idx, _select_with_heldout(data, None, "random", heldout, fraction=0.3, seed=3)
                           .nonmember_indices)


@pytest.mark.parametrize("regime", ["high_loss", "low_margin", "top_sensitivity", "high_loss_fitted"])
def test_scored_nonmembers_are_theta0s_top_fraction_of_the_heldout_data(data, theta0, regime):
    heldout = _heldout(n=300, seed=1)
    base = regime.removesuffix("_fitted")
    scores = per_sample_scores(theta0, heldout, base, device="cpu")
    k = round(0.1 * len(heldout))
    pool = list(range(len(heldout)))
    if regime.endswith("_fitted"):
        pool = [i for i in pool if bool(_correct(theta0, heldout)[i])]
    expected = sorted(pool[j] for j in _top_k(scores[pool], k))
    fs = _select_with_heldout(data, theta0, regime, heldout)
    assert fs.nonmember_indices.tolist() == expected
    assert fs.manifest["nonmember_rule"] == "same_selection_on_test" and fs.manifest["nonmember_size"] == k


def test_nonmembers_fall_back_to_a_size_matched_random_sample(data, theta0):
    heldout = _heldout()
    keep = heldout.y != 3
    without_3 = Split(heldout.x[keep], heldout.y[keep])
    fs = _select_with_heldout(data, None, "class", without_3, seed=4)  # no held-out point of class 3
    assert fs.manifest["nonmember_rule"] == "random_fallback" and "nonmember_fallback_reason" in fs.manifest
    assert torch.equal(fs.nonmember_indices, size_matched(len(fs.indices), len(without_3), 4))
    assert fs.manifest["nonmember_size"] == len(fs.indices) == 20
    # a fitted variant θ0 cannot fill on held-out data (θ0 fits ~11% of unrelated blobs) falls back too
    unrelated = _blobs(n=100, seed=1)
    fs = _select_with_heldout(data, theta0, "high_loss_fitted", unrelated, fraction=0.5)
    assert fs.manifest["nonmember_rule"] == "random_fallback"
    assert "forget.fraction" in fs.manifest["nonmember_fallback_reason"]
    assert len(fs.nonmember_indices) == len(fs.indices) == 100 > len(unrelated) // 2


def test_without_heldout_data_there_are_no_nonmembers(data):
    fs = _select(data, None, "random")
    assert fs.nonmember_indices is None and "nonmember_rule" not in fs.manifest
