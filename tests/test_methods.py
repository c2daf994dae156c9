"""Registry-driven contract tests for every unlearning method, plus the two equivalences of docs/design.md §4."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import copy
import dataclasses

import pytest
import torch

from sragu_core.data import Split, UnlearnData
from sragu_core.errors import ConfigError
from sragu_core.methods import METHODS, run_method
from sragu_core.methods.agu import AGUConfig, agu_with_sensitivity
from sragu_core.methods.grad_ascent import GradAscentConfig
from sragu_core.methods.sragu import SRAGUConfig, layer_omegas, param_layers
from sragu_core.models import ModelConfig, build_model
from sragu_core.training import TrainConfig, train

# small configs so every method finishes in well under a second on the tiny model
FAST = {
    "retrain": {"epochs": 2}, "retrain_indep": {"epochs": 2}, "finetune": {"epochs": 1},
    "neggrad_plus": {"epochs": 2}, "random_label": {"epochs": 2},
    "agu": {"max_iters": 3, "leakage_stop": "none", "batch_size": 8},
    "grad_ascent": {"max_iters": 3, "leakage_stop": "none", "batch_size": 8},
    # the tiny model's layers have 32, 16 and 4 eigenvalues: min_evals=10 assesses two and leaves one missing
    "sragu": {"max_iters": 3, "leakage_stop": "none", "batch_size": 8, "min_evals": 10},
    # SRAGU's controls (issue 10): placebos of the α → ω link, a free per-layer step vector, the no-op
    "sragu_permuted": {"max_iters": 3, "batch_size": 8, "min_evals": 10},
    "sragu_random": {"max_iters": 3, "batch_size": 8, "min_evals": 10},
    "sragu_uniform": {"max_iters": 3, "batch_size": 8, "min_evals": 10},
    "agu_layerwise": {"max_iters": 3, "batch_size": 8, "layer_steps": (0.2, 1.0, 0.5)},
    # the competitors of issue 9, one line each
    "salun": {"epochs": 2, "batch_size": 32},
    "l1_sparse": {"epochs": 2, "batch_size": 32},
    "scrub": {"epochs": 2, "batch_size": 32, "forget_batch_size": 8},
    "ssd": {"batch_size": 8},
}


def _fast_cfg(name):
    return dataclasses.replace(METHODS[name].config(), **FAST.get(name, {}))


@pytest.fixture(scope="module")
def tiny():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(160, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) * 40).long() % 4  # a learnable labelling
    model = build_model(ModelConfig("mlp", mlp_hidden=(32, 16)), (1, 8, 8), 4, seed=0)
    train(model, Split(x[:120], y[:120]), TrainConfig(epochs=3, lr=0.1), seed=0)
    data = UnlearnData(Split(x[:20], y[:20]), Split(x[20:120], y[20:120]), Split(x[120:], y[120:]), 4)
    return model, data


def _state(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_registry_has_every_spec_method():
    assert set(METHODS.names()) >= {"retrain", "retrain_indep", "agu", "sragu", "finetune", "grad_ascent",
                                    "neggrad_plus", "random_label", "salun", "scrub", "ssd", "l1_sparse",
                                    "original", "sragu_permuted", "sragu_random", "sragu_uniform", "agu_layerwise"}
    assert [n for n in METHODS.names() if not METHODS[n].moves] == ["original"]
    with pytest.raises(ConfigError, match="method='nope'.*one of"):
        METHODS["nope"]
    with pytest.raises(ValueError, match="already registered"):
        METHODS.register("agu", METHODS["agu"])


@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract(name, tiny):
    model, data = tiny
    before = _state(model)
    cfg = _fast_cfg(name)
    r1 = run_method(name, model, data, cfg, seed=3)
    r2 = run_method(name, model, data, cfg, seed=3)
    # the input model is untouched, and the result is a different object
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert r1.model is not model
    # finite, deterministic for a seed
    s1, s2 = _state(r1.model), _state(r2.model)
    assert all(torch.isfinite(v).all() for v in s1.values())
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    t = r1.trace
    assert t.wall_time_s > 0 and t.stop_reason
    assert len(t.epochs) >= 1 and {"forget_loss", "forget_acc"} <= set(t.epochs[0])
    if not METHODS[name].moves:  # the no-op control returns θ0 bit for bit, having taken no step
        assert all(torch.equal(s1[k], before[k]) for k in s1) and t.steps == 0
        return
    # it moved, and the trace says what it did
    assert any(not torch.equal(s1[k], before[k]) for k in s1)
    assert t.steps > 0
    # a different seed changes the outcome for every method that shuffles or re-initialises
    r3 = run_method(name, model, data, cfg, seed=4)
    assert any(not torch.equal(s1[k], v) for k, v in _state(r3.model).items())


def test_sragu_with_flat_map_equals_agu(tiny):
    model, data = tiny
    common = {"max_iters": 4, "leakage_stop": "none", "delta": 0.0, "batch_size": 8}
    agu = run_method("agu", model, data, AGUConfig(**common), seed=1)
    flat = SRAGUConfig(**common, omega_map="gaussian", omega_min=1.0, omega_max=1.0, renorm="max", min_evals=10)
    sr = run_method("sragu", model, data, flat, seed=1)
    assert all(r["omega"] == 1.0 for r in sr.trace.extras["alpha_omega"])
    assert agu.trace.steps == sr.trace.steps > 0
    for k, v in _state(agu.model).items():
        assert torch.equal(v, _state(sr.model)[k]), k
    # and a non-flat map really does change the update
    shaped = run_method("sragu", model, data, SRAGUConfig(**common, omega_min=0.0, min_evals=10), seed=1)
    assert any(not torch.equal(v, _state(shaped.model)[k]) for k, v in _state(agu.model).items())


def test_agu_with_unit_sensitivity_equals_grad_ascent(tiny):
    model, data = tiny
    common = {"max_iters": 4, "leakage_stop": "none", "delta": 0.0, "batch_size": 8}
    ga = run_method("grad_ascent", model, data, GradAscentConfig(**common), seed=2)
    ones = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    agu1 = agu_with_sensitivity(copy.deepcopy(model), data, AGUConfig(**common), seed=2, s_hat=ones)
    for k, v in _state(ga.model).items():
        assert torch.equal(v, _state(agu1.model)[k]), k
    # real AGU (Ŝ < 1 almost everywhere) moves less than plain ascent
    agu = run_method("agu", model, data, AGUConfig(**common), seed=2)
    shift = lambda m: sum(float((p - q).detach().norm()) for p, q in zip(m.parameters(), model.parameters()))
    assert shift(agu.model) < shift(ga.model)


def test_direction_descent_flips_the_sign(tiny):
    model, data = tiny
    common = {"max_iters": 1, "leakage_stop": "none", "delta": 0.0, "batch_size": 1000}  # one full-batch step
    up = run_method("grad_ascent", model, data, GradAscentConfig(**common), seed=0).model
    down = run_method("grad_ascent", model, data, GradAscentConfig(**common, direction="descent"), seed=0).model
    for p0, pu, pd in zip(model.parameters(), up.parameters(), down.parameters()):
        torch.testing.assert_close(pu - p0, -(pd - p0), rtol=1e-5, atol=1e-7)


def test_param_change_stop_rule(tiny):
    model, data = tiny
    r = run_method("agu", model, data, AGUConfig(max_iters=50, leakage_stop="none", delta=1e9), seed=0)
    assert r.trace.stop_reason == "param_change" and len(r.trace.epochs) == 1
    r = run_method("agu", model, data, AGUConfig(max_iters=3, leakage_stop="none", delta=0.0), seed=0)
    assert r.trace.stop_reason == "max_iters" and len(r.trace.epochs) == 3


def test_divergence_stop_rule(tiny):
    model, data = tiny
    cfg = GradAscentConfig(max_iters=200, leakage_stop="divergence", epsilon=0.05, eta=0.5)
    r = run_method("grad_ascent", model, data, cfg, seed=0)
    assert r.trace.stop_reason == "divergence"
    assert r.trace.epochs[-1]["forget_tv_to_original"] > 0.05
    assert all(e["forget_tv_to_original"] <= 0.05 for e in r.trace.epochs[:-1])


def test_sragu_omega_table_and_param_mapping(tiny):
    model, _ = tiny
    cfg = SRAGUConfig(min_evals=10)
    table = layer_omegas(model, cfg)
    assert [r["name"] for r in table] == ["1", "3", "5"]
    for r in table:
        assert cfg.omega_min <= r["omega"] <= cfg.omega_max
    # the 4-eigenvalue output layer has no α and takes the assessed layers' mean ω (neutral), not ω_max
    assert r["status"] == "too_few_evals" and r["omega"] == pytest.approx((table[0]["omega"] + table[1]["omega"]) / 2)
    owner = param_layers(model)
    assert owner == {"1.weight": "1", "1.bias": "1", "3.weight": "3", "3.bias": "3", "5.weight": "5", "5.bias": "5"}


def test_norm_parameters_take_their_layers_omega():
    m = build_model(ModelConfig("resnet18", resnet_width=4), (3, 8, 8), 10, seed=0)
    owner = param_layers(m)
    assert owner["bn1.weight"] == "conv1"
    assert owner["layer2.0.bn2.bias"] == "layer2.0.conv2"
    assert owner["layer2.0.shortcut.1.weight"] == "layer2.0.shortcut.0"
    assert owner["fc.bias"] == "fc"


def test_sragu_renorm_and_missing_alpha(tiny):
    model, data = tiny
    # min_evals above every layer's eigenvalue count: no layer has α, so every ω is omega_missing
    r = run_method("sragu", model, data, SRAGUConfig(max_iters=1, min_evals=10_000, omega_missing=0.3), seed=0)
    assert all(row["omega"] == 0.3 for row in r.trace.extras["alpha_omega"])
    assert r.trace.extras["alpha_missing"] == 3
    # every layer equally weighted: the step-preserving renormalisation makes the multipliers exactly 1
    assert all(m == pytest.approx(1.0) for m in r.trace.extras["layer_multipliers"].values())


def test_bad_inputs_are_clear_errors(tiny):
    model, data = tiny
    with pytest.raises(ConfigError, match="method='nope'"):
        run_method("nope", model, data, seed=0)
    with pytest.raises(ConfigError, match="eta=-1"):
        AGUConfig(eta=-1)
    with pytest.raises(ConfigError, match="omega_map='cubic'"):
        SRAGUConfig(omega_map="cubic")
    with pytest.raises(ConfigError, match="omega_min=0.9"):
        SRAGUConfig(omega_min=0.9, omega_max=0.5)
    empty = UnlearnData(data.forget.subset(torch.tensor([], dtype=torch.long)), data.retain, data.val, 4)
    with pytest.raises(ConfigError, match="forget_set.size=0"):
        run_method("agu", model, empty, seed=0)
    everything = UnlearnData(data.retain, data.retain.subset(torch.tensor([], dtype=torch.long)), data.val, 4)
    with pytest.raises(ConfigError, match="retain set would be empty"):
        run_method("agu", model, everything, seed=0)
    broken = copy.deepcopy(model)
    with torch.no_grad():
        next(broken.parameters())[0, 0] = float("nan")
    with pytest.raises(ConfigError, match="model.weights"):
        run_method("agu", broken, data, seed=0)
    with pytest.raises(ConfigError, match="agu.config"):
        run_method("agu", model, data, SRAGUConfig(), seed=0)


# ------------------------------------------------------------- BatchNorm statistics frozen during unlearning
# (docs/design.md §4): run_method(freeze_norm=True) keeps norm layers with running statistics in eval mode, so
# their statistics stay θ0's; a gold retrain trains from scratch and re-estimates them.
from torch import nn  # noqa: E402

from sragu_core._loop import frozen_norm, unfreeze_norm  # noqa: E402


@pytest.fixture(scope="module")
def bn_tiny(tiny):
    _, data = tiny
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))
    train(model, data.retain, TrainConfig(epochs=3, lr=0.1), seed=0)  # BN statistics now θ0's own
    model.eval()
    return model, data


def _bn_buffers(m):
    return {k: v.detach().clone() for k, v in m.named_buffers()}


def _unpatched(m):
    return not any("train" in mod.__dict__ for mod in m.modules())


@pytest.mark.parametrize("name", [n for n in METHODS.names() if not METHODS[n].retrains])
def test_freeze_norm_keeps_running_statistics_bit_identical(name, bn_tiny):
    model, data = bn_tiny
    before = _bn_buffers(model)
    assert int(before["2.num_batches_tracked"]) > 0  # θ0's own statistics, not the 0/1 init
    r = run_method(name, model, data, _fast_cfg(name), seed=0)  # freeze_norm defaults to True
    after = _bn_buffers(r.model)
    assert all(torch.equal(before[k], after[k]) for k in before), name
    assert _unpatched(r.model)  # the returned model carries no patch: its BN trains again when asked
    r.model.train()
    assert r.model[2].training
    r.model.eval()
    assert not r.model[2].training


def test_without_freeze_norm_agu_re_estimates_the_statistics(bn_tiny):
    model, data = bn_tiny
    before = _bn_buffers(model)
    r = run_method("agu", model, data, _fast_cfg("agu"), seed=0, freeze_norm=False)
    after = _bn_buffers(r.model)
    for k in ("2.running_mean", "2.running_var", "2.num_batches_tracked"):
        assert not torch.equal(before[k], after[k]), k
    # and freezing changes the update itself (batch statistics vs running statistics in the forward pass)
    frozen = run_method("agu", model, data, _fast_cfg("agu"), seed=0)
    assert not torch.equal(frozen.model[1].weight, r.model[1].weight)


@pytest.mark.parametrize("name", [n for n in METHODS.names() if METHODS[n].retrains])
def test_gold_retrain_still_updates_the_statistics(name, bn_tiny):
    model, data = bn_tiny
    before = _bn_buffers(model)
    cfg = _fast_cfg(name)
    r = run_method(name, model, data, cfg, seed=0)  # freeze_norm=True is ignored for a retrain
    after = _bn_buffers(r.model)
    assert not torch.equal(before["2.running_mean"], after["2.running_mean"])
    assert int(after["2.num_batches_tracked"]) > 0 and _unpatched(r.model)
    unfrozen = run_method(name, model, data, cfg, seed=0, freeze_norm=False)
    assert all(torch.equal(v, _bn_buffers(unfrozen.model)[k]) for k, v in after.items())


def test_frozen_norm_context_restores_the_requested_mode_and_strips_copies():
    m = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.InstanceNorm1d(4), nn.Linear(4, 2))
    m.train()
    with frozen_norm(m):
        assert not m[1].training and m[0].training  # frozen at once, before any train() call
        m.train()
        assert not m[1].training and m[0].training and m[2].training  # InstanceNorm has no running stats
        copy_inside = copy.deepcopy(m)  # e.g. SCRUB's teacher: carries the patch, bound to the copy
        m.eval()
    assert _unpatched(m) and not m[1].training  # the mode last requested (eval)
    copy_inside.train()
    assert not copy_inside[1].training  # still frozen until stripped
    unfreeze_norm(copy_inside)
    assert _unpatched(copy_inside)
    copy_inside.train()
    assert copy_inside[1].training
    with frozen_norm(m, enabled=False):
        m.train()
        assert m[1].training
