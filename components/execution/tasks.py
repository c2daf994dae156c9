"""The benchmark's unit tasks, cache-aware: each first looks for its artifact in the store.

Plain functions (``grid`` wraps them with ``ray.remote``; tests call them directly).  Each takes the spec
of what it builds and the typed artifacts it depends on, writes its own artifact under its content key
and returns it, so a rerun, a retried task or another invocation reuses it instead of recomputing.

A cached artifact is verified when read: it must load (``weights_only`` for tensors) and carry the key it
is stored under.  One that does not is quarantined (``Store.quarantine``) and recomputed, so a truncated
or planted file heals on the next run instead of failing its cells forever; the driver names it in one
line at the end of the run.  A store that cannot be reached is not corruption: that error fails the task.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

import pyarrow as pa
import torch

from sragu_core.data import DatasetSplits
from sragu_core.evaluate import gold_reference
from sragu_core.forget import prepare_train

from ..config import GOLD, BenchmarkConfig
from ..io.store import CorruptObject, Store, is_corrupt, reason
from .artifacts import ForgetArtifact, GoldEnsemble, GoldModel, OriginalModel, Shadows, StepGolds
from .compute import (
    build,
    cell_inputs,
    make_forget,
    pick_device,
    prepared,
    run_unlearning,
    score,
    subset_trainer,
    train_original,
)
from .ensembles import ensemble_columns, shadow_columns, train_gold_ensemble, train_shadows
from .plan import Cell, EnsembleSpec, ForgetSpec, GoldSpec, OriginalSpec, SequenceSpec, ShadowSpec
from .sequential import request_values, sequence_columns, train_step_golds, unlearn_sequence

__all__ = ["original_task", "forget_task", "gold_task", "ensemble_task", "shadow_task", "sequence_task", "cell_task",
           "cell_path", "alpha_omega_path", "read_cell", "cached"]

T = TypeVar("T")


def cell_path(key: str) -> str:
    return f"cells/{key}.parquet"


def alpha_omega_path(key: str) -> str:
    return f"artifacts/alpha_omega/{key}.json"


def read_cell(store: Store, key: str) -> pa.Table:
    """A cell file, verified: one row whose ``cell_key`` is ``key`` (raises CorruptObject otherwise)."""
    table = store.read_table([cell_path(key)])
    if table.num_rows != 1 or "cell_key" not in table.column_names or table.column("cell_key")[0].as_py() != key:
        found = table.column("cell_key").to_pylist()[:3] if "cell_key" in table.column_names else "no cell_key"
        raise CorruptObject(f"{table.num_rows} row(s) with cell_key {found}, expected one row of {key}")
    return table


def _expect(key: str, found: str, what: str) -> None:
    if found != key:
        raise CorruptObject(f"{what} stored under {key} says it is {found}")


def cached(store: Store, path: str, load: Callable[[str], T], verify: Callable[[T], None]) -> T | None:
    """The verified object at ``path``; None when absent or when it failed verification (then quarantined)."""
    if not store.exists(path):
        return None
    try:
        obj = load(path)
        verify(obj)
        return obj
    except Exception as e:
        if not is_corrupt(e):
            raise
        store.quarantine(path, reason(e))
        return None


def _torch_artifact(store: Store, path: str, kind, verify: Callable, build: Callable[[], T]) -> T:
    """The artifact of class ``kind`` at ``path``: read back and verified (``verify``) when the store has it,
    else ``build()`` and stored (``torch.save`` of tensors and plain containers, read with ``weights_only``)."""
    hit = cached(store, path, lambda p: kind.from_store(store.get_torch(p)), verify)
    if hit is not None:
        return hit
    out = build()
    store.put_torch(path, out.to_store())
    return out


def _threads() -> None:
    # one BLAS/torch thread per task (docs/design.md §9); Ray gives each task its own CPU(s)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


def original_task(store: Store, spec: OriginalSpec, ds: DatasetSplits, bench: BenchmarkConfig) -> OriginalModel:
    """θ0 for (dataset, model, seed)."""
    _threads()

    def train() -> OriginalModel:
        data = prepared(ds, spec.alter, spec.seed)
        model, facts, summary = train_original(data, spec.model, bench, seed=spec.seed,
                                               device=pick_device(bench.device))
        return OriginalModel(spec.key, model.state_dict(), facts, summary["train_time_s"], summary["train_loss"],
                             spec.inputs)

    return _torch_artifact(store, f"artifacts/originals/{spec.key}.pt", OriginalModel,
                           lambda o: _expect(spec.key, o.key, "original"), train)


def forget_task(store: Store, spec: ForgetSpec, ds: DatasetSplits, bench: BenchmarkConfig,
                original: OriginalModel | None) -> ForgetArtifact:
    """The forget set's indices and manifest; ``original`` is θ0 for regimes that score points with it."""
    _threads()
    path = f"artifacts/forget/{spec.key}.json"
    hit = cached(store, path, lambda p: ForgetArtifact.from_store(store.get_json(p)),
                 lambda f: _expect(spec.key, f.key, "forget set"))
    if hit is not None:
        return hit
    device = pick_device(bench.device)
    alter = spec.original.alter if spec.original is not None else None
    raw, ds = ds, prepared(ds, alter, spec.seed)
    model = build(bench, spec.original.model, ds, original.state) if spec.original is not None else None
    trainer = subset_trainer(bench, spec.original.model, ds, seed=spec.seed, device=device) \
        if spec.config.spec.needs_trainer else None
    fs = make_forget(ds, spec.config, seed=spec.seed, original=model, device=device, trainer=trainer)
    if alter is not None:  # what the regime changed in the training data (flipped labels, duplicated points)
        fs.manifest["alter"] = prepare_train(alter, raw.train, raw.num_classes, spec.seed)[1]
    out = ForgetArtifact(spec.key, fs)
    store.put_json(path, out.to_store())
    return out


def gold_task(store: Store, spec: GoldSpec, ds: DatasetSplits, bench: BenchmarkConfig, original: OriginalModel,
              forget: ForgetArtifact) -> GoldModel:
    """The gold (retrained on D_r with θ0's recipe), its predictions and its own metric values."""
    _threads()

    def retrain() -> GoldModel:
        device = pick_device(bench.device)
        data = prepared(ds, spec.original.alter, spec.original.seed)
        inputs = cell_inputs(data, forget.forget, spec.forget.config)
        # the gold reinitialises from spec.seed: θ0's own seed (gold.init=shared) or an independent one
        model, summary = run_unlearning(GOLD, spec.config, build(bench, spec.original.model, data, original.state),
                                        inputs, seed=spec.seed, device=device)
        reference = gold_reference(model.to(device), inputs.splits, device=device, seed=spec.original.seed)
        return GoldModel(spec.key, forget.key, model.cpu().state_dict(), reference, summary["method_time_s"],
                         summary["epochs_run"], summary["stop_reason"])

    return _torch_artifact(store, f"artifacts/gold/{spec.key}.pt", GoldModel,
                           lambda g: (_expect(spec.key, g.key, "gold"),
                                      _expect(forget.key, g.forget_key, "gold's forget set")), retrain)


def ensemble_task(store: Store, spec: EnsembleSpec, ds: DatasetSplits, bench: BenchmarkConfig,
                  forget: ForgetArtifact) -> GoldEnsemble:
    """``gold.k`` independent retrains of one forget set, trained together: their references and noise band."""
    _threads()

    def train() -> GoldEnsemble:
        data = prepared(ds, spec.original.alter, spec.original.seed)
        inputs = cell_inputs(data, forget.forget, spec.forget.config)
        fields = train_gold_ensemble(bench, spec.original.model, data, inputs, spec.config, spec.seeds,
                                     seed=spec.original.seed, device=pick_device(bench.device))
        return GoldEnsemble(spec.key, forget.key, **fields)

    return _torch_artifact(store, f"artifacts/gold_ensemble/{spec.key}.pt", GoldEnsemble,
                           lambda e: (_expect(spec.key, e.key, "gold ensemble"),
                                      _expect(forget.key, e.forget_key, "gold ensemble's forget set")), train)


def shadow_task(store: Store, spec: ShadowSpec, ds: DatasetSplits, bench: BenchmarkConfig) -> Shadows:
    """``shadow.n - 1`` more originals beside θ0 (its data and recipe, their own seeds), trained together."""
    _threads()
    o = spec.original

    def train() -> Shadows:
        data = prepared(ds, o.alter, o.seed)
        states, time_s = train_shadows(bench, o.model, data, data.train, bench.train_for(o.model), spec.seeds,
                                       device=pick_device(bench.device))
        return Shadows(spec.key, o.key, tuple(states), time_s)

    return _torch_artifact(store, f"artifacts/shadows/{spec.key}.pt", Shadows,
                           lambda s: (_expect(spec.key, s.key, "shadow originals"),
                                      _expect(o.key, s.original_key, "shadows' original")), train)


def sequence_task(store: Store, spec: SequenceSpec, ds: DatasetSplits, bench: BenchmarkConfig,
                  forget: ForgetArtifact) -> StepGolds:
    """A sequential regime's requests and the retrain after each (:mod:`.sequential`)."""
    _threads()

    def train() -> StepGolds:
        data = prepared(ds, spec.original.alter, spec.original.seed)
        fields = train_step_golds(bench, spec.original.model, data, forget.forget, spec.forget.config, spec.config,
                                  gold_seed=spec.gold_seed, steps=spec.steps, seed=spec.seed,
                                  device=pick_device(bench.device))
        return StepGolds(spec.key, forget.key, **fields)

    return _torch_artifact(store, f"artifacts/step_golds/{spec.key}.pt", StepGolds,
                           lambda q: (_expect(spec.key, q.key, "per-request retrains"),
                                      _expect(forget.key, q.forget_key, "per-request retrains' forget set")), train)


def cell_task(store: Store, cell: Cell, ds: DatasetSplits, bench: BenchmarkConfig, original: OriginalModel,
              forget: ForgetArtifact, gold: GoldModel, extra: dict, ensemble: GoldEnsemble | None = None,
              shadows: Shadows | None = None, sequence: StepGolds | None = None) -> dict:
    """Run one method and score it against the gold; writes ``cells/<key>.parquet`` (one row).

    Returns ``{"row": {...}, "alpha_omega": [...] | None, "epoch_trace": [...]}``.  ``extra`` holds columns
    the driver wants in the row (code version, tuning marks).
    """
    _threads()
    t0 = time.perf_counter()
    device = pick_device(bench.device)
    ds = prepared(ds, cell.original.alter, cell.seed)
    inputs = cell_inputs(ds, forget.forget, cell.forget)
    original_model = build(bench, cell.model, ds, original.state)
    seq_cols: dict = {}
    per_request: list[dict] = []

    def unlearn(model, seed, after=None):  # the method, in one request or in the sequence's requests
        if sequence is None:
            return run_unlearning(cell.method, cell.method_cfg, model, inputs, seed=seed, device=device,
                                  freeze_norm=bench.freeze_norm)
        return unlearn_sequence(cell.method, cell.method_cfg, model, ds, forget.forget, sequence.chunks,
                                cell.forget, seed=seed, device=device, freeze_norm=bench.freeze_norm, after=after)

    unlearned, summary = unlearn(original_model, cell.seed, after=lambda t, m, inp: per_request.append(
        request_values(m, inp, sequence.references[t], seed=cell.seed, device=device)))
    if sequence is not None:  # each request's model against the retrain without everything removed so far
        seq_cols = {**sequence_columns(per_request), "sequence_time_s": sequence.time_s}
    metrics = score(unlearned, original_model, original.facts, gold.reference, inputs, seed=cell.seed,
                    device=device, gold_time_s=gold.time_s, method_time_s=summary["method_time_s"])
    metrics.update(seq_cols)
    if ensemble is not None:  # against the distribution of retrains, and that distribution's own band
        metrics.update(ensemble_columns(unlearned, metrics, ensemble, inputs, seed=cell.seed, device=device))
        metrics["ensemble_time_s"] = ensemble.time_s  # training the k retrains together
    if ensemble is not None and shadows is not None:  # the method on n originals: KLoM, U-LiRA
        t1 = time.perf_counter()
        metrics.update(shadow_columns(lambda m, s: unlearn(m, s)[0], unlearned, shadows.states, cell.shadow.seeds,
                                      ensemble, bench, cell.model, ds, inputs, device=device))
        metrics["shadow_time_s"] = time.perf_counter() - t1
        unlearned.cpu()
    manifest = forget.manifest
    # the configured fraction where the forget set is exactly that share of the training set; else the measured
    # share (class deletions, subpopulations, duplicates: a cluster's size, copies appended to the training set)
    size, n = manifest["size"], manifest["train_size"]
    fraction = cell.forget.fraction if round(cell.forget.fraction * n) == size and not cell.forget.spec.by_class \
        else size / n
    row = {**cell.coords(), "status": "ok", "forget_fraction": fraction,
           "forget_size": manifest["size"], "train_size": manifest["train_size"],
           "forget_key": forget.key, "original_key": original.key,
           "gold_key": gold.key, "gold_time_s": gold.time_s, "gold_epochs_run": gold.epochs_run,
           "gold_stop_reason": gold.stop_reason, "nonmember_rule": manifest.get("nonmember_rule", ""), **extra,
           **{k: v for k, v in summary.items() if k not in ("epoch_trace", "alpha_omega")}, **metrics,
           "task_time_s": time.perf_counter() - t0}
    if summary["alpha_omega"]:  # before the cell file, which marks the cell done: a rerun can log it from here
        store.put_json(alpha_omega_path(cell.key), summary["alpha_omega"])
    store.write_rows(cell_path(cell.key), [row])
    return {"row": row, "alpha_omega": summary["alpha_omega"], "epoch_trace": summary["epoch_trace"]}
