"""The reference ensemble and the shadow models through the pipeline's own tasks (no Ray: the tasks are plain
functions; ``grid`` only wraps them).  A tiny grid: digits, a small mlp, gold.k = 4, shadow.n = 4."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import itertools
import math

import numpy as np
import pytest
import torch

from components.config import BenchmarkConfig, DataConfig, EpochsConfig, resolve_config
from components.execution.compute import build, cell_inputs, load_splits, prepared
from components.execution.plan import plan_cells
from components.execution.tasks import cell_task, ensemble_task, forget_task, gold_task, original_task, shadow_task
from components.io.store import Store
from sragu_core import metrics as M
from sragu_core.models import ModelConfig

torch.set_num_threads(1)


def _resolved(tmp_path, **over):
    bench = BenchmarkConfig(name="ref", datasets=("digits",), models=("mlp",), seeds=(0,),
                            regimes=over.pop("regimes", ("random:0.1",)),
                            methods=over.pop("methods", ("retrain_indep", "original")),
                            data=DataConfig(max_train=400), epochs=EpochsConfig(mlp=8),
                            model=ModelConfig(mlp_hidden=(32,)), device="cpu")
    return resolve_config(bench, {"gold.k": "4", "shadow.n": "4", "shadow.query_points": "50", **over})


def _run(tmp_path, resolved):
    store = Store(str(tmp_path / "store"))
    bench = resolved.bench
    ds = load_splits("digits", bench)
    out, arts = [], {}
    for c in plan_cells(resolved):
        o = original_task(store, c.original, ds, bench)
        f = forget_task(store, c.forget_set, ds, bench, o if c.forget_set.original is not None else None)
        g = gold_task(store, c.gold, ds, bench, o, f)
        e = ensemble_task(store, c.ensemble, ds, bench, f)
        s = shadow_task(store, c.shadow, ds, bench)
        out.append(cell_task(store, c, ds, bench, o, f, g, {}, e, s)["row"])
        arts[c.method] = (c, ds, f, e, s)
    return out, arts, store


def test_ensemble_band_shadows_klom_and_ulira_through_the_tasks(tmp_path):
    resolved = _resolved(tmp_path)
    rows, arts, store = _run(tmp_path, resolved)
    by = {r["method"]: r for r in rows}
    c, ds, f, e, s = arts["original"]
    # k members, independent of θ0 and of each other: distinct seeds, distinct predictions
    assert len(e.members) == 4 and len(set(c.ensemble.seeds)) == 4 and c.original.seed not in c.ensemble.seeds
    assert not torch.equal(e.members[0].pred.probs["forget"], e.members[1].pred.probs["forget"])
    # the band is the pairwise distances inside the ensemble, recomputed here from the stored predictions
    pairs = [M.js(e.members[i].pred.probs["forget"], e.members[j].pred.probs["forget"])
             for i, j in itertools.combinations(range(4), 2)]
    assert e.band["js"]["mean"] == pytest.approx(np.mean(pairs), rel=1e-6)
    assert e.band["js"]["n_pairs"] == 6 and e.band["js"]["lo"] <= e.band["js"]["mean"] <= e.band["js"]["hi"]
    row = by["original"]
    assert row["js_floor_mean"] == pytest.approx(e.band["js"]["mean"])
    # js against the ensemble = the mean of js against each member, from θ0's own predictions (the no-op)
    inputs = cell_inputs(prepared(ds, c.original.alter, c.seed), f.forget, c.forget)
    theta0 = build(resolved.bench, "mlp", ds, original_task(store, c.original, ds, resolved.bench).state)
    p0 = M.predict(theta0, inputs.splits.forget, device="cpu")[0]
    per = [M.js(p0, m.pred.probs["forget"]) for m in e.members]
    assert row["js_ens"] == pytest.approx(np.mean(per), rel=1e-5)
    assert row["js_ens_sd"] == pytest.approx(np.std(per, ddof=1), rel=1e-4)
    # shadows: n - 1 = 3 more originals, their own seeds
    first = [next(iter(state.values())) for state in s.states]
    assert len(s.states) == 3 and not torch.equal(first[0], first[1])
    for r in rows:
        for k in ("klom_forget", "klom_forget_hi", "klom_retain", "klom_val", "ulira_auc", "ulira_tpr_1pct"):
            assert math.isfinite(r[k]), (r["method"], k)
        assert 0 <= r["ulira_auc"] <= 1
    # the no-op keeps what θ0 learnt of D_f; an independent retrain is a draw of the reference itself
    # (measured: KLoM 2.20 vs 1.67, U-LiRA AUC 0.65 vs 0.48)
    assert by["original"]["klom_forget"] > by["retrain_indep"]["klom_forget"]
    assert by["original"]["ulira_auc"] > by["retrain_indep"]["ulira_auc"] and by["retrain_indep"]["ulira_auc"] < 0.55
    # margins stored with the ensemble: (k, query points) per split
    assert e.margins["forget"].shape == (4, len(f.forget.indices))
    assert e.margins["retain"].shape == (4, 50) and e.margins["val"].shape[0] == 4


def test_reference_off_keeps_the_cell_keys_and_adds_no_columns(tmp_path):
    bench = BenchmarkConfig(name="ref", datasets=("digits",), models=("mlp",), seeds=(0,), methods=("original",),
                            data=DataConfig(max_train=400), epochs=EpochsConfig(mlp=2),
                            model=ModelConfig(mlp_hidden=(32,)), device="cpu")
    off = plan_cells(resolve_config(bench))
    assert all(c.ensemble is None and c.shadow is None for c in off)
    on = plan_cells(resolve_config(bench, {"gold.k": "3"}))
    assert {c.gold.key for c in on} == {c.gold.key for c in off}  # the single gold is the same model
    assert {c.key for c in on}.isdisjoint({c.key for c in off})  # cells carry new columns: new keys
    indep = plan_cells(resolve_config(bench, {"gold.init": "independent"}))
    assert indep[0].gold.seed != indep[0].original.seed and indep[0].gold.key != off[0].gold.key
