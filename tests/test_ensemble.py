"""sragu_core.ensemble: the vmapped trainer reproduces K sequential ``train`` runs, member by member.

Small and fast: 256 sklearn digits (8x8), an mlp with one hidden layer of 32, a few epochs.  The tolerance
TOL is the module docstring's: on this CPU the vmapped members come out bit-identical to the sequential
ones here (measured max |Δθ| = 0), but batched and plain matmuls may sum in another order on other
hardware, so the assertion allows float32 drift while staying ~1000x below what a different batch order
gives after the same training (test_other_batch_order_is_far_above_the_tolerance).
"""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from sragu_core import ensemble
from sragu_core.data import Split
from sragu_core.ensemble import Member, predict_ensemble, train_ensemble
from sragu_core.errors import ConfigError
from sragu_core.models import ModelConfig, build_model
from sragu_core.training import TrainConfig, train

TOL = 1e-5  # max |Δθ| allowed between a vmapped member and its sequential reference
CFG = TrainConfig(lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=3, batch_size=32)  # momentum and wd both on
SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def digits() -> Split:
    d = load_digits()
    x = torch.tensor(d.data[:256] / 16.0, dtype=torch.float32).reshape(-1, *SHAPE)
    return Split(x, torch.tensor(d.target[:256], dtype=torch.int64))


def builder(model_cfg: ModelConfig):
    return lambda seed: build_model(model_cfg, SHAPE, 10, seed=seed)


MLP = builder(ModelConfig(name="mlp", mlp_hidden=(32,)))


def sequential(build, data: Split, cfg: TrainConfig, m: Member) -> dict[str, torch.Tensor]:
    """The reference the brief names: build, train on the member's data with its order seed."""
    model = build(m.init_seed)
    train(model, data if m.subset is None else data.subset(m.subset), cfg, seed=m.order_seed)
    return model.state_dict()


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def subsets(n: int, sizes: list[int], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=g)[:s] for s in sizes]


def test_members_match_sequential_training(digits):
    members = [Member(init_seed=i, order_seed=100 + i) for i in range(3)]
    states = train_ensemble(MLP, digits, CFG, members)
    assert len(states) == 3
    diffs = [max_diff(s, sequential(MLP, digits, CFG, m)) for s, m in zip(states, members)]
    assert max(diffs) <= TOL, diffs
    # and the members really are different models (no shared init, order or gradient)
    assert max_diff(states[0], states[1]) > 1e-2


def test_equal_size_subsets_match_sequential_training(digits):
    members = [Member(10 + i, 200 + i, s) for i, s in enumerate(subsets(len(digits), [160, 160, 160]))]
    states = train_ensemble(MLP, digits, CFG, members)
    diffs = [max_diff(s, sequential(MLP, digits, CFG, m)) for s, m in zip(states, members)]
    assert max(diffs) <= TOL, diffs


def test_other_batch_order_is_far_above_the_tolerance(digits):
    """The comparison can fail: the same init with another order seed (a shared or wrong batch order) lands
    > 1000 x TOL away, as does plain SGD without momentum (a wrong update rule)."""
    ref = sequential(MLP, digits, CFG, Member(0, 100))
    other_order = train_ensemble(MLP, digits, CFG, [Member(0, 101)])[0]
    no_momentum = train_ensemble(MLP, digits, TrainConfig(lr=0.05, momentum=0.0, weight_decay=5e-4, epochs=3,
                                                          batch_size=32), [Member(0, 100)])[0]
    assert max_diff(other_order, ref) > 1000 * TOL
    assert max_diff(no_momentum, ref) > 1000 * TOL


def test_unequal_sizes_are_grouped_and_chunked_in_order(digits):
    sizes = [100, 160, 100, 160, 100]
    members = [Member(i, 300 + i, s) for i, s in enumerate(subsets(len(digits), sizes, seed=1))]
    members.append(Member(7, 307))  # all of D: a third group
    cfg = TrainConfig(lr=0.05, momentum=0.9, epochs=2, batch_size=32)
    states = train_ensemble(MLP, digits, cfg, members, chunk=2)
    diffs = [max_diff(s, sequential(MLP, digits, cfg, m)) for s, m in zip(states, members)]
    assert max(diffs) <= TOL, diffs


def test_held_parameters_stay_bit_identical_to_init(digits):
    build = builder(ModelConfig(name="mlp_planted", deep_width=24, deep_layers=2, planted_layer=1))
    held = build(0).held_at_init
    members = [Member(i, 50 + i) for i in range(2)]
    states = train_ensemble(build, digits, CFG, members)
    for s, m in zip(states, members):
        init = build(m.init_seed).state_dict()
        for name in held:
            assert torch.equal(s[name], init[name]), name
        assert max(float((s[k] - init[k]).abs().max()) for k in s if k not in held) > 1e-2  # the rest trained
        assert max_diff(s, sequential(build, digits, CFG, m)) <= TOL


def test_batchnorm_model_falls_back_to_the_sequential_trainer(digits):
    """resnet18 (BatchNorm running statistics) is trained by ``train`` itself: identical states, buffers too."""
    build = builder(ModelConfig(name="resnet18", resnet_width=4))
    data = digits.subset(torch.arange(64))
    cfg = TrainConfig(lr=0.05, momentum=0.9, epochs=1, batch_size=32)
    members = [Member(0, 1), Member(1, 2, torch.arange(40))]
    states = train_ensemble(build, data, cfg, members)
    for s, m in zip(states, members):
        ref = sequential(build, data, cfg, m)
        assert list(s) == list(ref) and any("running_mean" in k for k in s)
        assert all(torch.equal(s[k], ref[k]) for k in s)
    assert int(states[0]["bn1.num_batches_tracked"]) == 2
    logits = predict_ensemble(build, states, data.x[:10])
    for k, s in enumerate(states):
        model = build(0)
        model.load_state_dict(s)
        assert torch.equal(logits[k], model.eval()(data.x[:10]).detach())


def test_predict_ensemble_equals_per_model_forward(digits):
    states = train_ensemble(MLP, digits, CFG, [Member(i, i) for i in range(3)])
    logits = predict_ensemble(MLP, states, digits.x, batch_size=100)  # 3 batches, the last one short
    assert logits.shape == (3, len(digits), 10) and logits.device.type == "cpu"
    for k, s in enumerate(states):
        model = MLP(0)
        model.load_state_dict(s)
        with torch.no_grad():
            ref = model.eval()(digits.x)
        torch.testing.assert_close(logits[k], ref, rtol=0, atol=1e-5)
    assert float((logits[0] - logits[1]).abs().max()) > 1e-2


def test_diverged_members_match_the_reference_stopping_rule(digits, monkeypatch):
    """A non-finite loss: ``train`` stops at once, keeping the last finite weights (after 2 and 4 steps for
    these two members); the vmapped loop, which cannot stop one member alone, hands them to ``train``."""
    cfg = TrainConfig(lr=1e10, momentum=0.9, epochs=2, batch_size=32)
    members = [Member(0, 0), Member(1, 1)]
    refs = []
    for m in members:
        model = MLP(m.init_seed)
        assert train(model, digits, cfg, seed=m.order_seed).stop_reason == "diverged"  # the case is real
        refs.append(model.state_dict())
    reruns = []
    real = ensemble._train_one
    monkeypatch.setattr(ensemble, "_train_one", lambda *a: reruns.append(a[3]) or real(*a))
    states = train_ensemble(MLP, digits, cfg, members)
    assert reruns == members
    for s, ref in zip(states, refs):
        assert all(torch.equal(s[k], v) for k, v in ref.items())


@pytest.mark.parametrize("kwargs, field", [
    ({"members": []}, "members"),
    ({"chunk": 0}, "chunk"),
    ({"members": [Member(0, 0, torch.tensor([0, 256]))]}, "members[0].subset"),
])
def test_bad_input_is_one_clear_error(digits, kwargs, field):
    args = {"members": [Member(0, 0)], **kwargs}
    with pytest.raises(ConfigError) as err:
        train_ensemble(MLP, digits, CFG, args.pop("members"), **args)
    assert err.value.field == field


def test_member_rejects_a_non_index_subset():
    with pytest.raises(ConfigError):
        Member(0, 0, torch.tensor([0.5, 1.0]))
    with pytest.raises(ConfigError):
        Member(0, 0, torch.zeros(0, dtype=torch.int64))
