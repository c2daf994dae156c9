"""Sequential deletions (``<regime>@<T>``): the forget set in T successive requests on one model, each request's
model compared with a retrain on D minus everything removed so far.  Through the pipeline's own tasks, no Ray."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import math

import pytest
import torch

from components.config import BenchmarkConfig, DataConfig, EpochsConfig, resolve_config
from components.execution.compute import build, load_splits, prepared
from components.execution.plan import plan_cells
from components.execution.sequential import request_inputs
from components.execution.tasks import (
    cell_task,
    ensemble_task,
    forget_task,
    gold_task,
    original_task,
    sequence_task,
    shadow_task,
)
from components.io.store import Store
from sragu_core import metrics as M
from sragu_core.errors import ConfigError
from sragu_core.forget import parse_regime, request_chunks, retain_indices
from sragu_core.models import ModelConfig

torch.set_num_threads(1)


def test_request_chunks_partition_the_forget_set_in_a_seeded_random_order():
    idx = torch.arange(3, 200, 7)  # 29 points
    chunks = request_chunks(idx, 4, seed=5)
    assert [len(c) for c in chunks] == [8, 7, 7, 7]
    assert torch.equal(torch.sort(torch.cat(chunks)).values, idx)  # disjoint, and together the whole set
    assert all(torch.equal(c, torch.sort(c).values) for c in chunks)
    assert all(torch.equal(a, b) for a, b in zip(chunks, request_chunks(idx, 4, seed=5), strict=True))
    assert not torch.equal(chunks[0], request_chunks(idx, 4, seed=6)[0])
    assert not torch.equal(chunks[0], idx[:8])  # not the set's own order (a selection rule's ranking)
    with pytest.raises(ConfigError, match="forget.steps"):
        request_chunks(idx[:3], 4, seed=0)


def test_regime_at_steps_parses_labels_and_rejects_bad_counts():
    cfg = parse_regime("high_loss_fitted:0.1@5")
    assert (cfg.regime, cfg.fraction, cfg.steps) == ("high_loss_fitted", 0.1, 5)
    assert cfg.label() == "high_loss_fitted_10pct_seq5" and cfg.family == "sequential"
    assert parse_regime("random:0.1").family == "random" and parse_regime("random:0.1").steps == 1
    for bad in ("random:0.1@1", "random:0.1@x", "random:0.1@", "random:0.1@-2"):
        with pytest.raises(ConfigError, match=r"regimes=.*@<T> with T an integer >= 2"):
            parse_regime(bad)


def _resolved(**over):
    bench = BenchmarkConfig(name="seq", datasets=("digits",), models=("mlp",), seeds=(0,),
                            regimes=("random:0.15", "random:0.15@3"), methods=over.pop("methods", ("retrain",)),
                            data=DataConfig(max_train=400), epochs=EpochsConfig(mlp=6),
                            model=ModelConfig(mlp_hidden=(32,)), device="cpu")
    return resolve_config(bench, over)


def _run(store, resolved):
    bench = resolved.bench
    ds = load_splits("digits", bench)
    rows, arts = [], {}
    for c in plan_cells(resolved):
        o = original_task(store, c.original, ds, bench)
        f = forget_task(store, c.forget_set, ds, bench, None)
        g = gold_task(store, c.gold, ds, bench, o, f)
        e = ensemble_task(store, c.ensemble, ds, bench, f) if c.ensemble is not None else None
        s = shadow_task(store, c.shadow, ds, bench) if c.shadow is not None else None
        q = sequence_task(store, c.sequence, ds, bench, f) if c.sequence is not None else None
        rows.append(cell_task(store, c, ds, bench, o, f, g, {}, e, s, q)["row"])
        arts[(c.forget.label(), c.method)] = (c, ds, o, f, g, q)
    return rows, arts


def test_sequence_shares_the_forget_set_and_gold_and_each_request_is_scored_against_its_own_retrain(tmp_path):
    resolved = _resolved(methods=("retrain", "original"))
    store = Store(str(tmp_path / "store"))
    rows, arts = _run(store, resolved)
    one, seq = arts[("random_15pct", "retrain")], arts[("random_15pct_seq3", "retrain")]
    c1, cs = one[0], seq[0]
    # the same forget set, gold and θ0; the cells differ
    assert cs.forget_set.key == c1.forget_set.key and cs.gold.key == c1.gold.key and cs.key != c1.key
    assert cs.sequence is not None and c1.sequence is None and cs.sequence.steps == 3
    _, ds, o, f, g, q = seq
    by = {(r["regime"], r["method"]): r for r in rows}
    row = by[("random_15pct_seq3", "retrain")]
    assert row["regime_family"] == "sequential" and row["seq_steps"] == 3
    assert by[("random_15pct", "retrain")]["regime_family"] == "random"
    assert "seq_steps" not in by[("random_15pct", "retrain")]
    # request t: the method sees D_f = chunk t and a D_r without chunks 1..t; evaluation sees chunks 1..t as D_f
    ds = prepared(ds, None, 0)
    for t in range(3):
        inp = request_inputs(ds, f.forget, q.chunks, t, cs.forget)
        removed = torch.cat(q.chunks[:t + 1])
        assert torch.equal(inp.data.forget.x, ds.train.x[q.chunks[t]])
        assert len(inp.data.retain) == len(ds.train) - len(removed) == len(inp.splits.retain)
        assert len(inp.splits.forget) == len(removed)
        assert torch.equal(inp.data.retain.x, ds.train.x[retain_indices(len(ds.train), removed)])
        assert torch.equal(inp.splits.forget.x, ds.train.x[torch.sort(removed).values])
    # the last request's retrain is the cell's gold (same data, recipe and init), up to float32 rounding
    last = q.references[-1].pred.probs
    for split in ("forget", "retain", "test"):
        assert torch.allclose(last[split], g.reference.pred.probs[split], atol=1e-4), split
    # the gold's own method in the sequence retrains on exactly what each request's retrain saw: at the floor
    for t in (1, 2, 3):
        assert row[f"seq_t{t}_js"] < 1e-6 and row[f"seq_t{t}_avg_gap"] < 1e-6, t
    assert row["seq_js_max"] < 1e-6 and row["js"] < 1e-6
    # the no-op keeps θ0: after request t its forget accuracy is θ0's on chunks 1..t, its distance grows from 0
    noop = by[("random_15pct_seq3", "original")]
    theta0 = build(resolved.bench, "mlp", ds, o.state)
    for t in range(3):
        inp = request_inputs(ds, f.forget, q.chunks, t, cs.forget)
        acc = M.accuracy(M.predict(theta0, inp.splits.forget, device="cpu")[0], inp.splits.forget.y)
        assert noop[f"seq_t{t + 1}_forget_acc"] == pytest.approx(acc)
        ref = q.references[t].pred.probs["forget"]
        assert noop[f"seq_t{t + 1}_js"] == pytest.approx(
            M.js(M.predict(theta0, inp.splits.forget, device="cpu")[0], ref), rel=1e-5)
    assert noop["seq_js_max"] > 1e-4 > 100 * row["seq_js_max"]  # measured: 3.3e-4 vs < 1e-7
    assert noop["seq_js_mean"] == pytest.approx(sum(noop[f"seq_t{t}_js"] for t in (1, 2, 3)) / 3)
    # the final request's model is the cell's model: its row metrics are the no-op's one-request ones
    assert noop["js"] == pytest.approx(by[("random_15pct", "original")]["js"])
    assert row["sequence_time_s"] > 0 and math.isfinite(row["method_time_s"])
    # cached: a second run reads the per-request retrains back, verified by key
    again = sequence_task(store, cs.sequence, ds, resolved.bench, f)
    assert again.time_s == q.time_s and all(torch.equal(a, b) for a, b in zip(again.chunks, q.chunks, strict=True))


def test_sequence_runs_the_method_per_request_on_the_shadow_originals_too(tmp_path):
    resolved = _resolved(methods=("retrain",), **{"gold.k": "2", "shadow.n": "2", "shadow.query_points": "20"})
    rows, _ = _run(Store(str(tmp_path / "store")), resolved)
    by = {r["regime"]: r for r in rows}
    for r in by.values():
        assert math.isfinite(r["klom_forget"]) and 0 <= r["ulira_auc"] <= 1
    assert by["random_15pct_seq3"]["seq_steps"] == 3


def test_tuning_searches_a_sequential_regime_as_its_one_request_form():
    cells = plan_cells(_resolved(methods=("retrain",)))
    assert len({c.forget_set.key for c in cells}) == 1 and len(cells) == 2
