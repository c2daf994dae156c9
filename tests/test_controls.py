"""SRAGU's controls (issue 10): the step-preserving renormalisation, the placebos, agu_layerwise and the no-op.

Each test pins what makes the control a control: the renormalisation keeps Σ S̃ = Σ Ŝ; a placebo differs from
SRAGU in the ω vector only; ω ≡ 1 is AGU bit for bit; the no-op row scores exactly like θ0.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import dataclasses

import pytest
import torch

from sragu_core.data import Split, UnlearnData
from sragu_core.errors import ConfigError
from sragu_core.evaluate import CellSplits, gold_reference, original_facts
from sragu_core.methods import METHODS, run_method
from sragu_core.methods._layerwise import param_layers, scale_by_layer
from sragu_core.methods.agu import AGUConfig
from sragu_core.methods.agu_layerwise import AGULayerwiseConfig
from sragu_core.methods.sragu import SRAGUConfig, layer_omegas
from sragu_core.models import ModelConfig, build_model
from sragu_core.sensitivity import forget_sensitivity, normalise_global_max
from sragu_core.training import TrainConfig, train

COMMON = {"max_iters": 3, "leakage_stop": "none", "delta": 0.0, "batch_size": 8}


@pytest.fixture(scope="module")
def tiny():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) * 40).long() % 4
    model = build_model(ModelConfig("mlp", mlp_hidden=(32, 24)), (1, 8, 8), 4, seed=0)
    train(model, Split(x[:120], y[:120]), TrainConfig(epochs=3, lr=0.1), seed=0)
    data = UnlearnData(Split(x[:20], y[:20]), Split(x[20:120], y[20:120]), Split(x[120:160], y[120:160]), 4)
    return model, data, Split(x[160:], y[160:])


def _s_hat(model, data):
    return normalise_global_max(forget_sensitivity(model, data.forget, batch_size=8, device="cpu"))


def _total(d):
    return sum(float(t.sum(dtype=torch.float64)) for t in d.values())


@pytest.mark.parametrize("weights", [{"1": 0.1, "3": 1.0, "5": 0.3}, {"1": 1.0, "3": 1.0, "5": 1.0},
                                     {"1": 0.0, "3": 0.0, "5": 2.0}])
def test_step_preserving_renorm_keeps_the_total(tiny, weights):
    model, data, _ = tiny
    s_hat = _s_hat(model, data)
    out, mult = scale_by_layer(s_hat, param_layers(model), weights, 1.0, "sum")
    assert _total(out) == pytest.approx(_total(s_hat), rel=1e-6)  # float32 tensors
    # the multiplier is c·w_ℓ for each layer, and it is what each layer's parameters were scaled by
    for name, s in s_hat.items():
        layer = name.rsplit(".", 1)[0]
        torch.testing.assert_close(out[name], s * mult[layer])
    ratios = {k: mult[k] / weights[k] for k in weights if weights[k] > 0}
    assert max(ratios.values()) == pytest.approx(min(ratios.values()))  # one common factor c


def test_max_renorm_changes_the_total_and_sum_does_not(tiny):
    """The confound the first build had: with ``max`` a small ω on the layer holding max Ŝ amplifies the rest."""
    model, data, _ = tiny
    s_hat = _s_hat(model, data)
    owner = param_layers(model)
    top_layer = owner[max(s_hat, key=lambda n: float(s_hat[n].max()))]
    weights = {k: (0.1 if k == top_layer else 1.0) for k in ("1", "3", "5")}
    by_max, _ = scale_by_layer(s_hat, owner, weights, 1.0, "max")
    by_sum, _ = scale_by_layer(s_hat, owner, weights, 1.0, "sum")
    assert _total(by_max) > 1.5 * _total(s_hat)
    assert _total(by_sum) == pytest.approx(_total(s_hat))


def test_sragu_run_preserves_total_sensitivity_and_logs_multipliers(tiny):
    model, data, _ = tiny
    cfg = SRAGUConfig(**COMMON, min_evals=10, omega_min=0.0)
    r = run_method("sragu", model, data, cfg, seed=0)
    table = r.trace.extras["alpha_omega"]
    mult = r.trace.extras["layer_multipliers"]
    s_hat = _s_hat(model, data)
    owner = param_layers(model)
    scaled = {n: s * mult[owner[n]] for n, s in s_hat.items()}
    assert _total(scaled) == pytest.approx(_total(s_hat), rel=1e-6)  # float32 tensors
    assert [row["multiplier"] for row in table] == [mult[row["name"]] for row in table]
    assert len(set(round(m, 9) for m in mult.values())) > 1  # a shaped map really reweights


def test_sragu_uniform_is_agu_bit_for_bit(tiny):
    model, data, _ = tiny
    agu = run_method("agu", model, data, AGUConfig(**COMMON), seed=5)
    for renorm in ("sum", "max", "none"):
        uni = run_method("sragu_uniform", model, data,
                         METHODS["sragu_uniform"].config(**COMMON, min_evals=10, renorm=renorm), seed=5)
        for (k, a), b in zip(agu.model.state_dict().items(), uni.model.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=f"{renorm} {k}")
        assert all(row["omega_used"] == 1.0 for row in uni.trace.extras["alpha_omega"])


def test_permuted_placebo_uses_sragus_values_in_another_order(tiny):
    model, data, _ = tiny
    cfg = dict(COMMON, min_evals=10, omega_min=0.0)
    sr = run_method("sragu", model, data, SRAGUConfig(**cfg), seed=1)
    tables = [run_method("sragu_permuted", model, data, METHODS["sragu_permuted"].config(**cfg), seed=s)
              .trace.extras["alpha_omega"] for s in (1, 1, 2)]
    omega = [row["omega"] for row in sr.trace.extras["alpha_omega"]]
    used = [[row["omega_used"] for row in t] for t in tables]
    assert [row["omega"] for row in tables[0]] == omega  # the same α → ω table
    assert sorted(used[0]) == sorted(omega) and used[0] != omega  # its values, permuted (never the identity)
    assert used[0] == used[1]  # seeded
    # and the motion differs from SRAGU's
    perm = run_method("sragu_permuted", model, data, METHODS["sragu_permuted"].config(**cfg), seed=1)
    assert any(not torch.equal(a, b) for a, b in zip(sr.model.parameters(), perm.model.parameters()))


def test_random_placebo_draws_inside_the_omega_range(tiny):
    model, data, _ = tiny
    cfg = METHODS["sragu_random"].config(**COMMON, min_evals=10, omega_min=0.2, omega_max=0.7)
    a = run_method("sragu_random", model, data, cfg, seed=3).trace.extras["alpha_omega"]
    b = run_method("sragu_random", model, data, cfg, seed=3).trace.extras["alpha_omega"]
    c = run_method("sragu_random", model, data, cfg, seed=4).trace.extras["alpha_omega"]
    used = [row["omega_used"] for row in a]
    assert all(0.2 <= w <= 0.7 for w in used)
    assert used == [row["omega_used"] for row in b] != [row["omega_used"] for row in c]


def test_agu_layerwise_empty_vector_is_agu_and_vector_is_per_layer(tiny):
    model, data, _ = tiny
    agu = run_method("agu", model, data, AGUConfig(**COMMON), seed=2)
    plain = run_method("agu_layerwise", model, data, AGULayerwiseConfig(**COMMON), seed=2)
    for a, b in zip(agu.model.parameters(), plain.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # two entries for three layers: the last entry repeats; only the middle layer's step differs from the first's
    r = run_method("agu_layerwise", model, data, AGULayerwiseConfig(**COMMON, layer_steps=(0.2, 1.0)), seed=2)
    mult = r.trace.extras["layer_multipliers"]
    assert mult["3"] == pytest.approx(mult["5"]) == pytest.approx(5 * mult["1"])
    # its α/ω records name and shape each layer like SRAGU's, so the report's bars carry the same labels
    table = r.trace.extras["alpha_omega"]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(t["name"], t["kind"], t["shape"]) for t in table] == \
        [(n, "linear", list(m.weight.shape)) for n, m in zip(("1", "3", "5"), linears, strict=True)]
    with pytest.raises(ConfigError, match="layer_steps"):
        AGULayerwiseConfig(layer_steps=(0.5, -1.0))


def test_layer_without_alpha_gets_the_neutral_mean_omega(tiny):
    model, _, _ = tiny
    table = layer_omegas(model, SRAGUConfig(min_evals=30, omega_min=0.0))  # layers: 32, 24, 4 eigenvalues
    assessed = [r["omega"] for r in table if r["status"] != "too_few_evals"]
    missing = [r["omega"] for r in table if r["status"] == "too_few_evals"]
    assert len(assessed) == 1 and len(missing) == 2
    assert all(w == pytest.approx(sum(assessed) / len(assessed)) for w in missing)
    explicit = layer_omegas(model, SRAGUConfig(min_evals=30, omega_missing=0.25))
    assert [r["omega"] for r in explicit if r["status"] == "too_few_evals"] == [0.25, 0.25]


def test_noop_row_scores_exactly_like_the_original(tiny):
    """The ``original`` control is θ0: every metric of its cell equals the metric of θ0 scored directly."""
    from components.execution.compute import CellInputs, run_unlearning, score

    model, data, test = tiny
    splits = CellSplits(data.forget, data.retain, test, data.val)
    inputs = CellInputs(data, splits)
    gold = build_model(ModelConfig("mlp", mlp_hidden=(32, 24)), (1, 8, 8), 4, seed=9)
    train(gold, data.retain, TrainConfig(epochs=3, lr=0.1), seed=9)
    ref = gold_reference(gold, splits, device="cpu", seed=0)
    facts = original_facts(model, test, device="cpu")
    unlearned, summary = run_unlearning("original", METHODS["original"].config(), model, inputs, seed=0,
                                        device=torch.device("cpu"))
    assert summary["steps"] == 0 and summary["stop_reason"] == "no_op"
    row = score(unlearned, model, facts, ref, inputs, seed=0, device=torch.device("cpu"), gold_time_s=1.0,
                method_time_s=summary["method_time_s"])
    direct = score(model, model, facts, ref, inputs, seed=0, device=torch.device("cpu"), gold_time_s=1.0,
                   method_time_s=summary["method_time_s"])
    for k in direct:
        if k not in ("eval_time_s", "rte"):
            assert row[k] == pytest.approx(direct[k], nan_ok=True), k
    assert row["test_acc_drop"] == 0 and row["max_layer_shift"] == 0
    assert row["test_acc"] == pytest.approx(facts.test_acc)


def test_controls_share_sragus_knobs():
    """A placebo searches exactly SRAGU's space, so equal-budget tuning treats them alike."""
    fields = {f.name for f in dataclasses.fields(SRAGUConfig)}
    for name in ("sragu_permuted", "sragu_random", "sragu_uniform"):
        assert {f.name for f in dataclasses.fields(METHODS[name].config)} == fields
