"""Ray Tune sweeps of unlearning hyperparameters with one protocol for every method (docs/design.md §7).

* **Spaces come from the methods' typed configs** (:mod:`components.execution.search_space`).
* **Same budget.**  Every tuned method gets ``trials`` trials: Optuna's TPE (``ray.tune.search.optuna``)
  proposes, the first trial is the method's default config, and ASHA stops poor trials early from their
  per-epoch reports.
* **Objective** (to minimise), on the *tuning seed* only: for each cell (dataset × model × regime),
  ``<objective metric>(u, gold)`` on the forget set + ``penalty`` · max(0, acc_drop − ``drop_tolerance``),
  where acc_drop is θ0's accuracy minus u's on ``penalty_split`` (D_val by default, so tuning never sees
  D_test); averaged over the cells.  A trial reports after every epoch the mean over finished cells
  together with the current cell's value; ``training_iteration`` counts epochs, so ASHA compares trials
  after the same number of epochs of work.  Only trials that finished every cell can be "best".
* **No retraining per trial.**  Originals, forget sets and golds are the pipeline's own cached
  artifacts (:mod:`components.execution.tasks`), built once for the tuning seed and shared with every trial
  through the object store (``tune.with_parameters``).

One ``Tuner`` per method, results under ``<store>/tune/<sweep>-<method>`` (local or S3 through
``storage_filesystem``).  ``--resume`` restores an interrupted sweep with ``Tuner.restore`` (finished trials
are kept, unfinished ones resumed) once :mod:`components.execution.tune_state` has checked its files against
the digests recorded when it stopped.  MLflow: one parent run per sweep (closed by
``Tracker.parent_run`` whatever happens), one child per trial through Ray's ``MLflowLoggerCallback``
(tag ``mlflow.parentRunId``), the tuned file and the best configs on the parent.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import ray
import torch
from ray import tune

from sragu_core.config import to_dict
from sragu_core.data import DatasetSplits
from sragu_core.errors import ConfigError, check
from sragu_core.methods import METHODS, run_method
from sragu_core.metrics import accuracy, js, kl_to_gold, pd, predict, tv

from ..config import Resolved, TaskResources
from ..io.store import Store
from ..io.tracking import Tracker
from .compute import CellInputs, build, cell_inputs, pick_device
from .grid import Upstream, init_ray
from .plan import plan_cells
from .search_space import SearchDim, search_space
from .tune_state import record_state, sweep_path, verify_state
from .tuned_file import TUNED_FORMAT

__all__ = ["TuneSettings", "OBJECTIVES", "objective_of", "TuningCell", "SweepInterrupted", "prepare_cells",
           "evaluate_config", "run_sweeps"]

OBJECTIVES = {"kl_to_gold": kl_to_gold, "pd": pd, "tv": tv, "js": js}
Objective = Literal[tuple(OBJECTIVES)]


@dataclass(frozen=True)
class TuneSettings:
    methods: tuple[str, ...] = ("sragu", "agu")
    trials: int = 16  # per method: every method gets the same budget
    tuning_seed: int = 1000  # not among any preset's evaluation seeds
    objective: Objective = "kl_to_gold"
    penalty: float = 1.0
    drop_tolerance: float = 0.02
    penalty_split: Literal["val", "test"] = "val"
    max_concurrent: int = 2
    trial: TaskResources = field(default_factory=TaskResources)
    grace_period: int = 4  # ASHA: epochs (reports) before a trial can be stopped
    reduction_factor: int = 3
    search_seed: int = 0

    def __post_init__(self):
        for m in self.methods:
            check(m in METHODS, "tune.methods", m, f"one of {METHODS.names()}")
            check(not METHODS[m].retrains, "tune.methods", m, "an unlearning method (not a gold retrain)")
        check(len(self.methods) >= 1, "tune.methods", self.methods, "one or more methods")
        check(len(set(self.methods)) == len(self.methods), "tune.methods", self.methods, "distinct names")
        check(self.trials >= 1, "tune.trials", self.trials, "an integer >= 1")
        check(self.penalty >= 0, "tune.penalty", self.penalty, "a number >= 0")
        check(0 <= self.drop_tolerance < 1, "tune.drop_tolerance", self.drop_tolerance, "a number in [0, 1)")
        check(self.max_concurrent >= 1, "tune.max_concurrent", self.max_concurrent, "an integer >= 1")
        check(self.grace_period >= 1, "tune.grace_period", self.grace_period, "an integer >= 1")
        check(self.reduction_factor >= 2, "tune.reduction_factor", self.reduction_factor, "an integer >= 2")


def objective_of(settings: TuneSettings, unlearned: torch.nn.Module, gold_forget_probs: torch.Tensor,
                 forget, acc_split, acc0: float, *, device) -> tuple[float, dict]:
    """The tuning objective of one cell (see module docstring) and its parts."""
    pu, _ = predict(unlearned, forget, device=device)
    dist = OBJECTIVES[settings.objective](pu, gold_forget_probs)
    acc = accuracy(predict(unlearned, acc_split, device=device)[0], acc_split.y)
    drop = acc0 - acc if math.isfinite(acc) else 1.0
    value = dist + settings.penalty * max(0.0, drop - settings.drop_tolerance)
    if not math.isfinite(value):
        value = 1e6  # a diverged model is a (very bad) result, not a crash of the sweep
    return value, {settings.objective: dist, "acc_drop": drop}


class SweepInterrupted(RuntimeError):
    """Tune stopped before every trial finished (e.g. Ctrl-C); its state is saved for ``Tuner.restore``."""

    run_status = "KILLED"  # the sweep's MLflow parent run ends KILLED, not FAILED



@dataclass
class TuningCell:
    """Everything a trial needs for one (dataset, model, regime) on the tuning seed — no retraining."""

    label: str
    model_name: str
    original_state: dict
    inputs: CellInputs
    gold_forget_probs: torch.Tensor
    acc0: float  # θ0's accuracy on the penalty split
    dataset: DatasetSplits  # for the architecture's input shape and classes

    def original(self, bench) -> torch.nn.Module:
        return build(bench, self.model_name, self.dataset, self.original_state)


def prepare_cells(resolved: Resolved, settings: TuneSettings, store: Store, datasets: dict) -> list[TuningCell]:
    """Build (or load from the store) originals, forget sets and golds for the tuning seed."""
    bench = dataclasses.replace(resolved.bench, seeds=(settings.tuning_seed,))
    tuning = resolved.with_bench(bench)
    cells = [c for c in plan_cells(tuning) if c.method == bench.methods[0]]
    upstream = Upstream(tuning, store, datasets, cells)
    device = pick_device(bench.device)
    out = []
    for c in cells:
        _, o, f, g = ray.get(list(upstream(c)))
        ds = datasets[c.dataset]
        inputs = cell_inputs(ds, f.forget, c.forget)
        original = build(bench, c.model, ds, o.state)
        split = inputs.splits.val if settings.penalty_split == "val" else inputs.splits.test
        acc0 = accuracy(predict(original, split, device=device)[0], split.y)
        out.append(TuningCell(f"{c.dataset}/{c.model}/{c.forget.label()}", c.model, o.state, inputs,
                              g.reference.pred.probs["forget"], acc0, ds))  # stored with the gold
    return out


def evaluate_config(method: str, cfg: Any, cells: list[TuningCell], settings: TuneSettings, bench, *,
                    report=None) -> float:
    """Mean objective of ``cfg`` over ``cells``; ``report(dict)`` is called after every epoch."""
    device = pick_device(bench.device)
    done: list[float] = []
    for cell in cells:
        split = cell.inputs.splits.val if settings.penalty_split == "val" else cell.inputs.splits.test
        model = cell.original(bench)

        last: list[float] = []  # the loop ends right after its last epoch's report: reuse that value

        def on_epoch(m, record, cell=cell, split=split, last=last):
            if report is not None:
                value, parts = objective_of(settings, m, cell.gold_forget_probs, cell.inputs.splits.forget, split,
                                            cell.acc0, device=device)
                last[:] = [value]
                report({"objective": (sum(done) + value) / (len(done) + 1), "cells_done": len(done),
                        "complete": 0, "epoch": record["epoch"], **parts})

        result = run_method(method, model, cell.inputs.data, cfg, seed=settings.tuning_seed, device=device,
                            on_epoch=on_epoch)
        if not last:
            last = [objective_of(settings, result.model, cell.gold_forget_probs, cell.inputs.splits.forget, split,
                                 cell.acc0, device=device)[0]]
        done.append(last[0])
    mean = sum(done) / len(done)
    if report is not None:
        report({"objective": mean, "cells_done": len(done), "complete": 1})
    return mean


def _trainable(config: dict, *, method: str, base: Any, cells: list, settings: TuneSettings, bench) -> None:
    torch.set_num_threads(1)
    try:
        cfg = dataclasses.replace(base, **config)
    except ConfigError:  # an invalid combination the space can propose: a bad result, not a crash
        tune.report({"objective": 1e6, "cells_done": len(cells), "complete": 1, "invalid": 1})
        return
    evaluate_config(method, cfg, cells, settings, bench, report=tune.report)


def _tune_dims(space: dict[str, SearchDim]) -> dict:
    return {k: d.to_tune() for k, d in space.items()}


def run_sweeps(resolved: Resolved, settings: TuneSettings, store: Store, datasets: dict, tracker: Tracker, *,
               name: str, space_overrides: dict[str, dict], out: Path, state_dir: Path,
               restore: set[str] = frozenset()) -> dict:
    """All methods' sweeps; writes the tuned-config document to ``out`` (and on the MLflow parent) and returns it.

    ``restore``: the sweeps (``<name>-<method>``) to resume, already verified by ``tune_state.resumable``;
    ``state_dir``: where the digests of each sweep's state files are recorded when it stops."""
    spaces = {m: search_space(m, space_overrides.get(m)) for m in settings.methods}
    t0 = time.perf_counter()
    init_ray(resolved)
    try:
        cells = prepare_cells(resolved, settings, store, datasets)
        described = {m: {k: str(d) for k, d in s.items()} for m, s in spaces.items()}
        config = {"bench": resolved.as_dict(), "tune": to_dict(settings), "spaces": described}
        with tracker.parent_run(name, config, {"sweep": name, "tuning_seed": str(settings.tuning_seed)}) as parent:
            doc = {"format": TUNED_FORMAT, "source": name, "preset": resolved.bench.name,
                   "tuned_seed": settings.tuning_seed, "objective": settings.objective,
                   "cells": [c.label for c in cells], "settings": to_dict(settings), "methods": {}}
            for method in settings.methods:
                doc["methods"][method] = _sweep(method, spaces[method], cells, resolved, settings, store, tracker,
                                                name=name, parent=parent.run_id, restore=restore,
                                                state_dir=state_dir)
            doc["wall_s"] = time.perf_counter() - t0
            out.write_text(json.dumps(doc, indent=2))
            parent.artifacts = {"tuned.json": out}
            parent.metrics = {**{f"{m}.objective": e["objective"] for m, e in doc["methods"].items()},
                              **{f"{m}.default_objective": e["default_objective"] for m, e in doc["methods"].items()},
                              **{f"best.{m}": json.dumps(e["config"]) for m, e in doc["methods"].items()}}  # → tags
        return doc
    finally:
        ray.shutdown()


def _sweep(method: str, space: dict[str, SearchDim], cells: list[TuningCell], resolved: Resolved,
           settings: TuneSettings, store: Store, tracker: Tracker, *, name: str, parent: str, restore: set[str],
           state_dir: Path) -> dict:
    """One method's sweep (restored when it is in ``restore``); its tuned-file entry."""
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    base = resolved.methods[method]
    t0 = time.perf_counter()
    default_obj = evaluate_config(method, base, cells, settings, resolved.bench)
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, method=method, base=base, cells=cells, settings=settings,
                             bench=resolved.bench),
        {"cpu": settings.trial.num_cpus, "gpu": settings.trial.num_gpus})
    storage, fs = store.tune_location()
    sweep = f"{name}-{method}"
    path = sweep_path(store, sweep)
    if sweep in restore:  # its state files matched this machine's digests (tune_state.resumable) ...
        verify_state(store, sweep, state_dir)  # ... and still do, now, just before Tune unpickles them
        print(f"{method}: resuming sweep at {path}", flush=True)
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=fs)
    else:
        defaults = {k: getattr(base, k) for k in space}
        search = OptunaSearch(points_to_evaluate=[defaults], seed=settings.search_seed)
        asha = ASHAScheduler(time_attr="training_iteration", grace_period=settings.grace_period,
                             reduction_factor=settings.reduction_factor, max_t=10_000)
        mlflow_cb = MLflowLoggerCallback(tracking_uri=tracker.tracking_uri, experiment_name=tracker.experiment,
                                         tags={"mlflow.parentRunId": parent, "method": method,
                                               "sragu.role": "trial"}, save_artifact=False)
        tuner = tune.Tuner(
            trainable, param_space=_tune_dims(space),
            tune_config=tune.TuneConfig(metric="objective", mode="min", search_alg=search, scheduler=asha,
                                        num_samples=settings.trials, max_concurrent_trials=settings.max_concurrent),
            run_config=tune.RunConfig(name=sweep, storage_path=storage, storage_filesystem=fs,
                                      callbacks=[mlflow_cb], verbose=1))
    try:
        grid = tuner.fit()
    finally:  # finished or interrupted: record what Tune left, so only this state can be resumed
        record_state(store, sweep, state_dir)
    if len(grid) < settings.trials or grid.num_terminated + grid.num_errors < len(grid):
        raise SweepInterrupted(f"sweep {sweep} interrupted after {grid.num_terminated} of "
                               f"{settings.trials} trials; rerun the same command with --resume to continue it")
    finished = [r for r in grid if r.metrics and r.metrics.get("complete") == 1 and not r.error]
    check(bool(finished), f"tune.{method}", "no finished trial", "at least one trial that completes")
    best = min(finished, key=lambda r: r.metrics["objective"])
    best_cfg = {k: best.config[k] for k in space}
    print(f"{method}: best {settings.objective} objective {best.metrics['objective']:.4f} "
          f"(default {default_obj:.4f}) over {len(grid)} trials; {json.dumps(best_cfg)}", flush=True)
    return {"config": best_cfg, "objective": best.metrics["objective"], "default_objective": default_obj,
            "trials": len(grid), "finished_trials": len(finished),
            "stopped_early": sum(1 for r in grid if r.metrics and r.metrics.get("complete") != 1),
            "wall_s": time.perf_counter() - t0, "path": path}
