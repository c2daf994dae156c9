"""The metric registry's contract: one ``evaluate_cell`` on a tiny fixture, checked against the registry.

θ0 is a small MLP trained on 200 Gaussian-blob points (10 classes, inputs 1×8×8); the forget set is class 3
(a class deletion, so the per-class metrics apply too); the gold is retrained on the rest and the unlearned
model is a few AGU epochs.  Every numeric key of the row must be registered (or be the ``gold_`` pair of a
registered model metric), finite for this non-diverged model, and every model metric must have its pair.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import json
import math
from pathlib import Path

import pytest
import torch

from components.execution.artifacts import ForgetArtifact
from components.execution.compute import cell_inputs
from components.report.metric_doc import metrics_markdown
from sragu_core import metrics as M
from sragu_core.data import DatasetSplits, Split, UnlearnData
from sragu_core.evaluate import (
    DIRECTIONS,
    METRICS,
    VIEWS,
    CellSplits,
    ModelView,
    Predictions,
    evaluate_cell,
    gold_reference,
    metrics_in,
    original_facts,
)
from sragu_core.forget import ForgetConfig, retain_indices, select_forget
from sragu_core.methods import run_method
from sragu_core.methods.agu import AGUConfig
from sragu_core.methods.retrain import RetrainConfig
from sragu_core.models import ModelConfig, build_model
from sragu_core.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
RECIPE = TrainConfig(epochs=5, lr=0.1)


def _blobs(n: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    y = torch.randperm(n, generator=g) % 10
    means = torch.randn(10, 64, generator=torch.Generator().manual_seed(0))
    return Split((means[y] + 1.5 * torch.randn(n, 64, generator=g)).reshape(n, 1, 8, 8), y)


@pytest.fixture(scope="module")
def cell():
    train_split, val, test = _blobs(200, 1), _blobs(60, 2), _blobs(100, 3)
    original = build_model(ModelConfig("mlp", mlp_hidden=(32,)), (1, 8, 8), 10, seed=0)
    train(original, train_split, RECIPE, seed=0)
    fs = select_forget(ForgetConfig("class", classes=(3,)), train_split, 10, seed=0)
    f, r = train_split.subset(fs.indices), train_split.subset(retain_indices(200, fs.indices))
    data = UnlearnData(f, r, val, 10)
    splits = CellSplits(f, r, test, val, class_deletion=True)
    gold = run_method("retrain", original, data, RetrainConfig(**vars(RECIPE)), seed=0).model
    unlearned = run_method("agu", original, data, AGUConfig(leakage_stop="none", max_iters=3), seed=0).model
    facts = original_facts(original, test, device="cpu")
    ref = gold_reference(gold, splits, device="cpu", seed=0)
    return unlearned, original, gold, facts, ref, splits


def _registered(key: str) -> bool:
    if key in METRICS:
        return True
    return key.startswith("gold_") and key[5:] in METRICS and METRICS[key[5:]].gold_pair == key


def test_every_key_is_registered_finite_and_paired(cell):
    unlearned, original, _, facts, ref, splits = cell
    row = evaluate_cell(unlearned, original, facts, ref, splits, device="cpu", seed=0)
    assert row["diverged"] == 0.0
    for key, value in row.items():
        assert _registered(key), key
        assert isinstance(value, float) and math.isfinite(value), (key, value)
    computed = [s for s in METRICS.values() if s.kind != "pipeline"]
    assert {s.name for s in computed} <= set(row)  # a class deletion: every computed metric applies
    for s in computed:
        if s.kind == "model":
            assert row[s.gold_pair] == ref.values[s.name], s.name
    # the unlearned model really moved: the row is not the gold's or θ0's by accident
    assert row["max_layer_shift"] > 0 and row["kl_to_gold"] > 0


def test_gold_distances_vanish_for_the_gold_itself(cell):
    _, original, gold, facts, ref, splits = cell
    row = evaluate_cell(gold, original, facts, ref, splits, device="cpu", seed=0)
    for s in METRICS.values():
        if s.gold_distance:
            assert row[s.name] == pytest.approx(0.0, abs=1e-6), s.name
    for s in METRICS.values():  # and a model metric of the gold equals its gold_ pair
        if s.kind == "model":
            assert row[s.name] == row[s.gold_pair], s.name


def test_class_metrics_only_for_class_deletions(cell):
    unlearned, original, _, facts, ref, splits = cell
    random_like = CellSplits(splits.forget, splits.retain, splits.test, splits.val, class_deletion=False)
    ref2 = gold_reference(cell[2], random_like, device="cpu", seed=0)
    row = evaluate_cell(unlearned, original, facts, ref2, random_like, device="cpu", seed=0)
    assert "test_acc_forgotten_classes" not in row and "gold_test_acc_other_classes" not in row
    assert "test_acc_forgotten_classes" in evaluate_cell(unlearned, original, facts, ref, splits, device="cpu",
                                                         seed=0)


def test_registry_entries_are_well_formed():
    for s in METRICS.values():
        assert s.direction in DIRECTIONS and s.formula and set(s.views) <= set(VIEWS), s.name
        assert (s.compute is None) == (s.kind == "pipeline"), s.name
    for view in VIEWS:
        assert metrics_in(view), view  # every view shows something
    # a gap and a distance are never "higher is better"
    assert all(s.direction == "lower" for s in METRICS.values() if s.gold_distance)


def test_docs_metrics_md_is_the_registry():
    assert (ROOT / "docs" / "metrics.md").read_text() == metrics_markdown(), \
        "docs/metrics.md is stale: python -m components.report.metric_doc > docs/metrics.md"


# ------------------------------------------------------------------ MIA non-members from D_f's own distribution
def _class_losses(y: torch.Tensor, forgotten: int, seed: int) -> torch.Tensor:
    """Per-sample losses of a model that never learned class ``forgotten`` (the gold of a class deletion):
    high on that class, low elsewhere, with the same law for training and test points."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(len(y), generator=g).abs()
    return torch.where(y == forgotten, 2.0 + base, 0.05 * base)


def _predictions(losses: dict[str, torch.Tensor]) -> Predictions:
    return Predictions({k: torch.full((len(v), 10), 0.1) for k, v in losses.items()}, losses)


def test_mia_auc_against_same_rule_nonmembers_is_chance_when_forget_points_look_like_them():
    train_split, test = _blobs(4000, 1), _blobs(2000, 3)
    fs = select_forget(ForgetConfig("class", classes=(3,)), train_split, 10, seed=0, heldout=test)
    # the non-members of a class deletion: exactly D_test's points of the class
    assert fs.nonmember_indices.tolist() == torch.nonzero(test.y == 3).squeeze(1).tolist()
    assert fs.manifest["nonmember_rule"] == "same_selection_on_test"
    f, r = train_split.subset(fs.indices), train_split.subset(retain_indices(4000, fs.indices))
    losses = {"forget": _class_losses(f.y, 3, 1), "retain": _class_losses(r.y, 3, 2),
              "test": _class_losses(test.y, 3, 3), "val": torch.zeros(1)}
    new = CellSplits(f, r, test, test, class_deletion=True, mia_nonmembers=fs.nonmember_indices)
    old = CellSplits(f, r, test, test, class_deletion=True)  # no non-members: the old size-matched sample
    auc = METRICS["mia_auc"].compute
    new_auc, old_auc = auc(ModelView(_predictions(losses), new, 0)), auc(ModelView(_predictions(losses), old, 0))
    # forget and same-class test points share one loss law: chance (sd ≈ 0.025 with 400 vs 200 points) ...
    assert abs(new_auc - 0.5) < 0.08, new_auc
    # ... while against a random test sample the attack only sees that class 3 is hard: far from 0.5
    assert old_auc < 0.15, old_auc
    assert new_auc == M.mia_auc(losses["forget"], losses["test"][fs.nonmember_indices])


def test_gold_and_unlearned_are_scored_against_the_same_nonmembers(cell):
    unlearned, original, gold, facts, _, splits = cell
    nonmembers = torch.nonzero(splits.test.y == 3).squeeze(1)
    same_rule = CellSplits(splits.forget, splits.retain, splits.test, splits.val, class_deletion=True,
                           mia_nonmembers=nonmembers)
    ref = gold_reference(gold, same_rule, device="cpu", seed=0)
    assert ref.values["mia_auc"] == M.mia_auc(ref.pred.losses["forget"], ref.pred.losses["test"][nonmembers])
    row = evaluate_cell(unlearned, original, facts, ref, same_rule, device="cpu", seed=0)
    u_losses = M.predict(unlearned, splits.forget, device="cpu")[1], M.predict(unlearned, splits.test, device="cpu")[1]
    assert row["mia_auc"] == M.mia_auc(u_losses[0], u_losses[1][nonmembers])
    assert row["mia_gap"] == abs(row["mia_auc"] - ref.values["mia_auc"])


def test_the_pipeline_carries_the_nonmembers_from_selection_to_evaluation():
    train_split, val, test = _blobs(200, 1), _blobs(60, 2), _blobs(100, 3)
    ds = DatasetSplits("blobs", train_split, val, test, 10)
    cfg = ForgetConfig("class", classes=(3,))
    fs = select_forget(cfg, train_split, 10, seed=0, heldout=test)
    stored = json.loads(json.dumps(ForgetArtifact("k", fs).to_store()))  # the store's JSON round trip
    assert stored["nonmember_indices"] == fs.nonmember_indices.tolist()
    back = ForgetArtifact.from_store(stored)
    assert torch.equal(back.forget.nonmember_indices, fs.nonmember_indices)
    assert back.manifest == json.loads(json.dumps(fs.manifest))
    assert back.manifest["nonmember_size"] == 10 and back.key == "k"
    inputs = cell_inputs(ds, back.forget, cfg)
    assert torch.equal(inputs.splits.mia_nonmembers, fs.nonmember_indices)
    assert bool((inputs.splits.test.y[inputs.splits.mia_nonmembers] == 3).all())
    # a forget set stored without non-members (selected without held-out data) loads with None
    legacy = ForgetArtifact.from_store({k: v for k, v in stored.items() if k != "nonmember_indices"})
    assert legacy.forget.nonmember_indices is None and cell_inputs(ds, legacy.forget, cfg).splits.mia_nonmembers is None
