"""Hard deletions from the literature (sragu_core/hard_regimes.py, docs/design.md §5): each rule against data
built so that the right answer is known — planted label flips, appended twins, a planted memorised point, three
blobs inside one class — plus the contract the pipeline relies on (``prepare_train``, ``trainer``, the manifest's
``alteration``, the held-out non-member rule) and one-line errors for bad parameters.

Real learners only where they are cheap: a 1-nearest-neighbour learner and a recall-or-nearest-class-mean learner
(both fit every point they are trained on) and, once, tiny MLPs trained with θ0's recipe
(:func:`sragu_core.training.train`).  About three seconds.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from torch import nn

from sragu_core.data import Split
from sragu_core.errors import ConfigError
from sragu_core.forget import REGIMES, ForgetConfig, parse_regime, prepare_train, retain_indices, select_forget
from sragu_core.hard_regimes import memorisation_scores, penultimate_features, subset_draws
from sragu_core.metrics import size_matched
from sragu_core.models import ModelConfig, build_model
from sragu_core.training import TrainConfig, train

N, C = 200, 10


def _blobs(n: int = N, c: int = C, seed: int = 0, noise: float = 1.5, dim: int = 64) -> Split:
    """n points, n/c per class in shuffled order, class means N(0, I) in ``dim``-D, isotropic noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randperm(n, generator=g) % c
    means = torch.randn(c, dim, generator=g)
    return Split(means[y] + noise * torch.randn(n, dim, generator=g), y)


def nn_trainer(train_split: Split):
    """``trainer``: a 1-nearest-neighbour learner — trained on S it predicts the label of the nearest point of S,
    so it fits every point of S and classifies the others by proximity."""
    x = train_split.x.flatten(1)
    dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")  # exact: each point is its own nearest

    def trainer(subsets: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([train_split.y[s[dist[:, s].argmin(1)]] == train_split.y for s in subsets])
    return trainer


def _expect_config_error(field: str, value: str, fn, *args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert info.value.field == field, msg
    assert field in msg and value in msg, msg
    assert "\n" not in msg
    return info.value


def _run(cfg: ForgetConfig, data: Split, *, seed=0, model=None, trainer=None, heldout=None, num_classes=C):
    train_split, info = prepare_train(cfg, data, num_classes, seed)
    fs = select_forget(cfg, train_split, num_classes, seed=seed, model=model, trainer=trainer, heldout=heldout,
                       alteration=info)
    return train_split, info, fs


@pytest.fixture(scope="module")
def data() -> Split:
    return _blobs()


# ------------------------------------------------------------------------------------------ mislabelled
@pytest.mark.parametrize("fraction", [0.05, 0.15, 0.5])
def test_mislabelled_forgets_exactly_the_flipped_points(data, fraction):
    cfg = ForgetConfig(regime="mislabelled", fraction=fraction)
    altered, info, fs = _run(cfg, data, seed=3)
    flipped = torch.nonzero(altered.y != data.y).squeeze(1)
    k = round(fraction * N)
    assert len(flipped) == k and info == {"flipped": k}
    assert fs.indices.tolist() == flipped.tolist()  # every forget label differs, every other label is unchanged
    assert torch.equal(altered.x, data.x) and altered.y.dtype == torch.int64
    assert int(altered.y.min()) >= 0 and int(altered.y.max()) < C
    assert fs.manifest["alteration"] == {"flipped": k} and fs.manifest["size"] == k
    assert fs.manifest["class_histogram"] == torch.bincount(altered.y[flipped], minlength=C).tolist()
    # the same points random:<fraction> deletes for the seed: the two regimes differ only in the labels
    random_fs = select_forget(ForgetConfig(regime="random", fraction=fraction), data, C, seed=3)
    assert torch.equal(fs.indices, random_fs.indices)
    assert torch.equal(data.y, _blobs().y)  # the input split is left as it was


def test_mislabelled_is_deterministic_for_the_seed_and_differs_across_seeds(data):
    cfg = ForgetConfig(regime="mislabelled", fraction=0.1)
    a, b, other = (prepare_train(cfg, data, C, s)[0] for s in (0, 0, 1))
    assert torch.equal(a.y, b.y)
    assert not torch.equal(torch.nonzero(a.y != data.y), torch.nonzero(other.y != data.y))


def test_mislabelled_flips_to_a_uniform_other_class():
    y = torch.zeros(6000, dtype=torch.int64)
    split = Split(torch.zeros(6000, 1), y)
    altered, _ = prepare_train(ForgetConfig(regime="mislabelled", fraction=0.5), split, 4, 0)
    counts = torch.bincount(altered.y, minlength=4).tolist()
    assert counts[0] == 3000 and all(abs(c - 1000) < 100 for c in counts[1:])  # 1/3 each, never class 0 again


# ------------------------------------------------------------------------------------------- duplicates
@pytest.mark.parametrize("copies", [1, 2])
def test_duplicates_appends_twins_and_one_forgets_only_the_copies(data, copies):
    cfg = ForgetConfig(regime="duplicates", fraction=0.1, dup_forget="one", copies=copies)
    altered, info, fs = _run(cfg, data, seed=2)
    k = round(0.1 * N)
    chosen = select_forget(ForgetConfig(regime="random", fraction=0.1), data, C, seed=2).indices  # sorted
    assert info == {"duplicated": chosen.tolist(), "copies": copies, "appended": k * copies}
    assert fs.manifest["alteration"] == info
    assert len(altered) == N + k * copies
    assert torch.equal(altered.x[:N], data.x) and torch.equal(altered.y[:N], data.y)
    for j in range(copies):  # row N + j·k + t is copy j of chosen[t], in x and in y
        rows = slice(N + j * k, N + (j + 1) * k)
        assert torch.equal(altered.x[rows], data.x[chosen]) and torch.equal(altered.y[rows], data.y[chosen])
    assert fs.indices.tolist() == list(range(N, N + k * copies))  # the appended copies only
    retain = retain_indices(len(altered), fs.indices)
    assert bool(torch.isin(chosen, retain).all())  # every forgotten copy's twin stays in D_r


def test_duplicates_all_forgets_the_originals_and_their_copies(data):
    cfg = ForgetConfig(regime="duplicates", fraction=0.1, dup_forget="all", copies=1)
    altered, info, fs = _run(cfg, data, seed=2)
    k = round(0.1 * N)
    assert fs.indices.tolist() == info["duplicated"] + list(range(N, N + k))
    retain = altered.x[retain_indices(len(altered), fs.indices)]
    forget = altered.x[fs.indices]
    assert not bool((torch.cdist(forget, retain) == 0).any())  # no copy of a forgotten point is retained


def test_duplicates_refuses_a_split_prepare_train_did_not_make(data):
    cfg = ForgetConfig(regime="duplicates", fraction=0.1)
    _expect_config_error("train_set", str(N), select_forget, cfg, data, C, seed=0)  # the unaltered split
    altered, _ = prepare_train(cfg, data, C, 0)
    _expect_config_error("train_set", str(len(altered)), select_forget, cfg, altered, C, seed=1)  # another seed


# ------------------------------------------------------------------------------------------- memorised
def test_memorisation_estimator_by_hand():
    member = torch.tensor([[1, 0, 1, 0], [1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 1, 0]], dtype=torch.bool)
    correct = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 1], [0, 1, 1, 0], [1, 0, 0, 1]], dtype=torch.bool)
    scores = memorisation_scores(correct, member)
    # point 0: in models 0, 1 (1, 1) → 1; out 2, 3 (0, 1) → 1/2.  point 1: in 1, 2 (0, 1), out 0, 3 (1, 0): 0
    assert scores[:2].tolist() == [0.5, 0.0]
    assert torch.isnan(scores[2:]).all()  # point 2 is in every subset, point 3 in none: no estimate


def _planted_trainer(n: int, full: int, half: int, calls: list):
    """Every model is right on every point, except: ``full`` is right only when trained on (mem = 1); ``half`` is
    right when trained on and on every other model without it (mem ≈ 1/2)."""
    def trainer(subsets):
        calls.append(subsets)
        correct = torch.ones(len(subsets), n, dtype=torch.bool)
        for k, s in enumerate(subsets):
            correct[k, full] = bool((s == full).any())
            correct[k, half] = bool((s == half).any()) or k % 2 == 0
        return correct
    return trainer


def test_memorised_ranks_a_planted_memorised_point_first(data):
    calls: list = []
    trainer = _planted_trainer(N, full=17, half=123, calls=calls)
    one = _run(ForgetConfig(regime="memorised", fraction=0.005, mem_models=40), data, trainer=trainer)[2]
    assert one.indices.tolist() == [17]  # round(0.005·200) = 1
    two = _run(ForgetConfig(regime="memorised", fraction=0.01, mem_models=40), data, trainer=trainer)[2]
    assert two.indices.tolist() == [17, 123]
    subsets = calls[0]  # K subsets of round(0.7·n) sorted indices, drawn from the seed
    assert len(subsets) == 40 and all(len(s) == 140 and torch.equal(s, torch.sort(s).values) for s in subsets)
    assert all(torch.equal(a, b) for a, b in zip(subsets, subset_draws(N, 40, 140, 0)))
    assert not torch.equal(subsets[0], subset_draws(N, 40, 140, 1)[0])


def test_memorised_finds_flipped_labels_with_a_memorising_learner():
    clean = _blobs(noise=0.3)
    planted = torch.tensor([5, 60, 150])
    y = clean.y.clone()
    y[planted] = (y[planted] + 1) % C
    noisy = Split(clean.x, y)

    def trainer(subsets):  # Feldman's long tail in miniature: recall the training points, else nearest class mean
        rows = []
        for s in subsets:
            means = torch.stack([noisy.x[s][noisy.y[s] == c].mean(0) for c in range(C)])
            pred = torch.cdist(noisy.x, means).argmin(1)
            pred[s] = noisy.y[s]
            rows.append(pred == noisy.y)
        return torch.stack(rows)

    fs = _run(ForgetConfig(regime="memorised", fraction=0.015), noisy, trainer=trainer)[2]
    assert fs.indices.tolist() == planted.tolist()
    # (a 1-nearest-neighbour learner would also rank the flipped points' neighbours high: out of the subset, a
    # clean point whose nearest neighbour is a flipped one takes its wrong label)


def test_memorised_finds_a_flipped_label_with_mlps_trained_by_the_recipe():
    clean = _blobs(n=60, c=3, noise=0.3, dim=16)
    y = clean.y.clone()
    y[7] = (y[7] + 1) % 3
    noisy = Split(clean.x, y)
    recipe = TrainConfig(epochs=100, lr=0.1, batch_size=32)  # enough to fit the flipped label

    def trainer(subsets):
        rows = []
        for k, s in enumerate(subsets):  # θ0's recipe on each subset, one model after another
            model = build_model(ModelConfig("mlp", mlp_hidden=(32,)), (16,), 3, seed=k)
            train(model, noisy.subset(s), recipe, seed=k)
            with torch.no_grad():
                rows.append(model(noisy.x).argmax(1) == noisy.y)
        return torch.stack(rows)

    fs = _run(ForgetConfig(regime="memorised", fraction=0.02, mem_models=8), noisy, trainer=trainer, num_classes=3)[2]
    assert fs.indices.tolist() == [7]


def test_memorised_without_a_trainer_or_with_too_few_models_is_refused(data):
    cfg = ForgetConfig(regime="memorised", fraction=0.1)
    err = _expect_config_error("forget.regime", "memorised", select_forget, cfg, data, C, seed=0)
    assert "trainer" in str(err)
    # 2 models on half the data: about half the points are in both subsets or in neither, with no estimate
    few = ForgetConfig(regime="memorised", fraction=0.9, mem_models=2, mem_subset=0.5)
    _expect_config_error("forget.mem_models", "2", select_forget, few, data, C, seed=0, trainer=nn_trainer(data))
    with pytest.raises(ValueError, match=r"\(16, 200\)"):
        select_forget(cfg, data, C, seed=0, trainer=lambda subsets: torch.ones(3, 3, dtype=torch.bool))


# ---------------------------------------------------------------------------------------- subpopulation
BLOBS = ((30, (0.0, 0.0)), (20, (10.0, 0.0)), (10, (0.0, 10.0)))  # (size, centre) of class 0's three blobs


def _three_blobs(scale: int = 1, seed: int = 0) -> tuple[Split, list[list[int]]]:
    """Class 0: three well-separated blobs in features (a, b), BLOBS sizes × ``scale``; classes 1, 2 elsewhere.
    Input x = (a, b, d): d = ±100 at random is a distractor only the raw input shows (θ0's first layer drops it).
    Returns the split (rows shuffled) and the row indices of each blob."""
    g = torch.Generator().manual_seed(seed)
    feats, labels, blob = [], [], []
    for b, (size, centre) in enumerate(BLOBS):
        feats.append(torch.tensor(centre) + 0.5 * torch.randn(size * scale, 2, generator=g))
        labels += [0] * size * scale
        blob += [b] * size * scale
    for c in (1, 2):
        feats.append(torch.tensor([-20.0, -20.0 * c]) + torch.randn(15 * scale, 2, generator=g))
        labels += [c] * 15 * scale
        blob += [-1] * 15 * scale
    ab = torch.cat(feats)
    d = 100.0 * (torch.randint(0, 2, (len(ab), 1), generator=g) * 2 - 1)
    order = torch.randperm(len(ab), generator=g)
    x, y, blob = torch.cat([ab, d], 1)[order], torch.tensor(labels)[order], torch.tensor(blob)[order]
    return Split(x, y), [torch.nonzero(blob == b).squeeze(1).tolist() for b in range(3)]


def _feature_model() -> nn.Module:
    """Linear (a, b, d) → (a, b) · Dropout · Linear(2 → 3): the last Linear's input is (a, b), in eval mode."""
    first = nn.Linear(3, 2)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        first.bias.zero_()
    return nn.Sequential(first, nn.Dropout(0.5), nn.Linear(2, 3))


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_subpopulation_is_exactly_the_blob_of_the_size_rank(rank):
    split, blobs = _three_blobs()
    model = _feature_model().train()  # in train mode: dropout would scramble the features if they were used so
    cfg = ForgetConfig(regime="subpopulation", classes=(0,), clusters=3, cluster_rank=rank)
    fs = select_forget(cfg, split, 3, seed=0, model=model)
    assert fs.indices.tolist() == sorted(blobs[rank])
    assert fs.manifest["class_histogram"] == [BLOBS[rank][0], 0, 0]  # all of the one class
    assert model.training and all(m.training for m in model.modules())  # modes restored
    assert torch.equal(fs.indices, select_forget(cfg, split, 3, seed=0, model=model).indices)


def test_penultimate_features_are_the_last_linear_layers_input():
    split, _ = _three_blobs()
    model = _feature_model().train()
    assert torch.allclose(penultimate_features(model, split.x, "cpu"), split.x[:, :2])
    assert model.training


def test_subpopulation_nonmembers_are_the_heldout_points_nearest_the_chosen_cluster():
    split, _ = _three_blobs()
    heldout, held_blobs = _three_blobs(scale=2, seed=1)
    cfg = ForgetConfig(regime="subpopulation", classes=(0,), clusters=3, cluster_rank=1)
    fs = select_forget(cfg, split, 3, seed=0, model=_feature_model(), heldout=heldout)
    assert fs.nonmember_indices.tolist() == sorted(held_blobs[1])
    assert fs.manifest["nonmember_rule"] == "same_selection_on_test" and fs.manifest["nonmember_size"] == 40
    no_zeros = heldout.subset(torch.nonzero(heldout.y != 0).squeeze(1))
    fs = select_forget(cfg, split, 3, seed=0, model=_feature_model(), heldout=no_zeros)
    assert fs.manifest["nonmember_rule"] == "random_fallback"
    assert "no held-out point of class 0" in fs.manifest["nonmember_fallback_reason"]


def test_subpopulation_bad_parameters_are_refused():
    split, _ = _three_blobs()
    cfg = ForgetConfig(regime="subpopulation", classes=(0,), clusters=61)  # class 0 has 60 training points
    _expect_config_error("forget.clusters", "61", select_forget, cfg, split, 3, seed=0, model=_feature_model())
    cfg = ForgetConfig(regime="subpopulation", classes=(3,), clusters=3)
    _expect_config_error("forget.classes", "3", select_forget, cfg, split, 3, seed=0, model=_feature_model())
    _expect_config_error("forget.regime", "subpopulation", select_forget, cfg, split, 3, seed=0)  # no θ0


# ---------------------------------------------------------------------------- held-out non-members, manifests
@pytest.mark.parametrize("text", ["memorised:0.1", "mislabelled:0.1", "duplicates:0.1:one", "duplicates:0.1:all"])
def test_regimes_without_a_heldout_rule_fall_back_to_a_random_sample_and_say_why(data, text):
    cfg = parse_regime(text)
    heldout = _blobs(n=100, seed=1)
    trainer = nn_trainer(prepare_train(cfg, data, C, 4)[0])
    _, _, fs = _run(cfg, data, seed=4, trainer=trainer, heldout=heldout)
    m = fs.manifest
    assert m["nonmember_rule"] == "random_fallback" and m["nonmember_fallback_reason"].startswith(cfg.regime)
    assert torch.equal(fs.nonmember_indices, size_matched(len(fs.indices), len(heldout), 4))


@pytest.mark.parametrize("regime", [r for r in REGIMES if REGIMES[r].alter is None])
def test_prepare_train_is_the_identity_for_regimes_that_keep_the_data(data, regime):
    train_split, info = prepare_train(ForgetConfig(regime=regime), data, C, 0)
    assert train_split is data and info == {}


def test_without_alteration_info_the_manifest_has_none(data):
    altered, _ = prepare_train(ForgetConfig(regime="mislabelled"), data, C, 0)
    assert "alteration" not in select_forget(ForgetConfig(regime="mislabelled"), altered, C, seed=0).manifest


# ------------------------------------------------------------------------------ command line and bad input
@pytest.mark.parametrize("text, expected, label", [
    ("memorised:0.05", ForgetConfig(regime="memorised", fraction=0.05), "memorised_5pct"),
    ("memorised:0.05:32:0.5", ForgetConfig(regime="memorised", fraction=0.05, mem_models=32, mem_subset=0.5),
     "memorised_5pct_k32_s0.5"),
    ("mislabelled:0.2", ForgetConfig(regime="mislabelled", fraction=0.2), "mislabelled_20pct"),
    ("duplicates:0.1:one", ForgetConfig(regime="duplicates", fraction=0.1), "duplicates_10pct_one"),
    ("duplicates:0.1:all:3", ForgetConfig(regime="duplicates", fraction=0.1, dup_forget="all", copies=3),
     "duplicates_10pct_all_x3"),
    ("subpopulation:3:5", ForgetConfig(regime="subpopulation", classes=(3,), clusters=5), "subpopulation_3_k5"),
    ("subpopulation:3:4:1", ForgetConfig(regime="subpopulation", classes=(3,), clusters=4, cluster_rank=1),
     "subpopulation_3_k4_r1"),
])
def test_hard_regimes_parse_and_label(text, expected, label):
    cfg = parse_regime(text)
    assert cfg == expected and cfg.label() == label


@pytest.mark.parametrize("field, value, kwargs", [
    ("forget.mem_models", "1", {"regime": "memorised", "mem_models": 1}),
    ("forget.mem_subset", "1.0", {"regime": "memorised", "mem_subset": 1.0}),
    ("forget.mem_subset", "0", {"regime": "memorised", "mem_subset": 0}),
    ("forget.copies", "0", {"regime": "duplicates", "copies": 0}),
    ("forget.dup_forget", "'two'", {"regime": "duplicates", "dup_forget": "two"}),
    ("forget.clusters", "1", {"regime": "subpopulation", "clusters": 1}),
    ("forget.cluster_rank", "5", {"regime": "subpopulation", "clusters": 5, "cluster_rank": 5}),
    ("forget.cluster_rank", "-1", {"regime": "subpopulation", "cluster_rank": -1}),
])
def test_bad_hard_regime_parameters_name_the_key(field, value, kwargs):
    _expect_config_error(field, value, ForgetConfig, **kwargs)


@pytest.mark.parametrize("text, words", [
    ("duplicates:0.1:two", ["one or all"]),
    ("duplicates:0.1", ["<one|all>"]),
    ("memorised:0.1:1", ["integer >= 2"]),
    ("memorised:0.1:16:0.7:9", ["<models K>"]),
    ("subpopulation:3:5:5", ["size rank"]),
    ("subpopulation:3", ["<clusters>"]),
    ("mislabelled:1.5", ["(0, 1)"]),
])
def test_bad_hard_regime_strings_are_one_line_errors(text, words):
    err = _expect_config_error("regimes", text, parse_regime, text)
    assert all(w in str(err) for w in words), str(err)
