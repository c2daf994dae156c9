"""Forget-set selection (docs/design.md §5): every regime against an independent re-computation in the test.

θ0 is a tiny MLP trained for three epochs on 200 Gaussian-blob points (10 classes × 20, inputs 1×8×8),
so every regime selects something non-trivial and the whole module runs in about a second.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from torch.nn import functional as F

from sragu_core.data import Split
from sragu_core.errors import ConfigError
from sragu_core.forget import REGIMES, ForgetConfig, parse_regime, per_sample_scores, retain_indices, select_forget
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


def _select(data, model, regime, *, seed=0, fraction=0.1, classes=(3,), neighbor_fraction=0.5, num_classes=C):
    cfg = ForgetConfig(regime=regime, fraction=fraction, classes=classes, neighbor_fraction=neighbor_fraction)
    return select_forget(cfg, data, num_classes, seed=seed, model=model)


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
    a = _select(data, theta0, regime, seed=5)
    b = _select(data, theta0, regime, seed=5)
    assert torch.equal(a.indices, b.indices)
    assert a.manifest == b.manifest
    idx = a.indices
    assert idx.dtype == torch.int64 and idx.ndim == 1
    assert torch.equal(idx, torch.sort(idx).values)
    assert len(torch.unique(idx)) == len(idx)
    assert 0 < len(idx) < N and int(idx.min()) >= 0 and int(idx.max()) < N


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
    fs = _select(data, theta0, regime, seed=4, fraction=0.2)
    m = fs.manifest
    assert m["regime"] == regime and m["seed"] == 4
    assert m["size"] == len(fs.indices)
    hist = m["class_histogram"]
    assert len(hist) == C and sum(hist) == m["size"]
    assert hist == torch.bincount(data.y[fs.indices], minlength=C).tolist()
    assert isinstance(m["content_hash"], str) and m["content_hash"]


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
    assert set(ADVERSARIAL) == {"top_sensitivity", "high_loss", "low_margin", "class_concentrated"}


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
    with_model = select_forget(cfg, data, C, seed=0, model=theta0)
    if spec.needs_model:  # flagged: refused without θ0
        _expect_config_error("forget.regime", regime, select_forget, cfg, data, C, seed=0, model=None)
    else:  # not flagged: θ0 plays no part
        assert torch.equal(select_forget(cfg, data, C, seed=0, model=None).indices, with_model.indices)
    whole = torch.nonzero(data.y == cfg.classes[0]).squeeze(1)
    if spec.by_class:  # a class deletion forgets every point of its (first) class
        assert bool(torch.isin(whole, with_model.indices).all())
    else:  # a fraction regime takes its fraction, whatever the classes
        assert len(with_model.indices) == round(cfg.fraction * len(data))
