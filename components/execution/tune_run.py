"""Ray Tune sweeps of unlearning hyperparameters with one protocol for every method (docs/tuning.md).

* **Equal budgets over equal spaces.**  ``tune.protocol=shared`` (the default) searches, for every method, only
  the knobs methods share — a step size and an epoch budget, with one range per role
  (:mod:`components.execution.search_space`); a method without such a knob (``ssd``, ``original``) runs one
  trial of its defaults.  ``tune.protocol=ablation`` searches every declared knob, the method's own too; meant
  for ``tune.methods=[sragu,agu_layerwise]``: SRAGU's ω knobs against AGU's free per-layer steps, each with
  the same extra budget.
* **Same number of trials.**  Every method gets ``trials`` trials: Optuna's TPE proposes (its first
  ``startup_trials(trials)`` = min(10, max(1, trials // 3)) proposals are random), the first trial is the
  method's default config, and ASHA stops poor trials early.
* **ASHA compares like with like.**  A trial runs the tuning cells (dataset × model × regime) in one fixed
  order shared by every trial and reports once per finished cell: ``training_iteration`` = cells finished,
  ``objective`` = mean over those cells.  ``grace_period`` therefore counts cells (default: the number of
  regimes, one cell of each).  Only trials that finished every cell (``complete`` = 1) can be "best", and
  only if they beat the default config, which is scored on every cell before the sweep (ASHA may stop the
  default's own trial on the first cells' mean).
* **Bounded objective** (to minimise), on the *tuning seed* only: per cell, ``objective`` (default ``js`` on
  D_f; ``tv``, ``pd`` or ``avg_gap``; ``kl_to_gold`` is unbounded and not recommended) +
  ``penalty`` · max(0, acc_drop − ``drop_tolerance``), where acc_drop is θ0's accuracy minus u's on
  ``penalty_split`` (D_val by default, so tuning never sees D_test); averaged over the cells.
* **No retraining per trial.**  Originals, forget sets and golds are the pipeline's own cached
  artifacts (:mod:`components.execution.tasks`), built once for the tuning seed and shared with every trial
  through the object store (``tune.with_parameters``).

One ``Tuner`` per method, results under ``<store>/tune/<sweep>-<method>`` (local or S3 through
``storage_filesystem``).  ``--resume`` restores an interrupted sweep with ``Tuner.restore`` (finished trials
are kept, unfinished ones resumed) once :mod:`components.execution.tune_state` has checked its files against
the digests recorded when it stopped.  MLflow: one parent run per sweep (closed by
``Tracker.parent_run`` whatever happens), one child per trial through Ray's ``MLflowLoggerCallback``
(tag ``mlflow.parentRunId``), the tuned file and the best configs on the parent.  A trial's run is named
``<method>-trial-<n>`` (n: the order Tune created it in), its searched values are shown to 6 significant
digits, and a trial ASHA stopped before its last cell ends KILLED with tag ``asha_stopped=true``
(:func:`trial_logger`); the experiment's saved view lists the trials with their objective
(``components.io.tracking.TRIALS``).
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
from ..io.mlflow_values import display_value
from ..io.store import Store
from ..io.tracking import TRIALS, Tracker
from .compute import CellInputs, build, cell_inputs, pick_device, prepared
from .grid import Upstream, init_ray
from .plan import plan_cells
from .search_space import Protocol, SearchDim, assemble, describe, flat_point, search_space, to_tune
from .tune_state import record_state, sweep_path, verify_state
from .tuned_file import TUNED_FORMAT

__all__ = ["TuneSettings", "for_preset", "pick_best", "ASCENT_FAMILY", "OBJECTIVES", "AVG_GAP_SPLITS", "objective_of",
           "startup_trials", "TuningCell", "SweepInterrupted", "prepare_cells", "evaluate_config", "run_sweeps",
           "TrialName", "trial_logger"]

# name → what it measures; every one but kl_to_gold is bounded, so one diverged cell cannot decide a mean
OBJECTIVES = {
    "js": "Jensen-Shannon divergence to the gold on D_f, in [0, ln 2]",
    "tv": "total-variation distance to the gold on D_f, in [0, 1]",
    "pd": "prediction disagreement with the gold on D_f, in [0, 1]",
    "avg_gap": "mean |acc_u - acc_gold| on D_f, D_r and D_val, in [0, 1] (SalUn's Avg. Gap without its MIA "
               "term and with D_val in place of D_test)",
    "kl_to_gold": "KL(gold || u) on D_f: unbounded, not recommended (one diverged cell dominates the mean)",
}
Objective = Literal[tuple(OBJECTIVES)]
_DISTANCES = {"js": js, "tv": tv, "pd": pd, "kl_to_gold": kl_to_gold}
AVG_GAP_SPLITS = ("forget", "retain", "val")  # never test: tuning does not see D_test

# the ascent family: every method compared in the headline SRAGU-vs-AGU question and its placebo controls
ASCENT_FAMILY = ("agu", "sragu", "grad_ascent", "sragu_permuted", "sragu_random", "sragu_uniform")


def for_preset(settings: TuneSettings, methods: tuple[str, ...]) -> TuneSettings:
    """``settings`` with ``methods`` null resolved to the unlearning methods of the preset's ``methods``."""
    if settings.methods is not None:
        return settings
    return dataclasses.replace(settings, methods=tuple(m for m in methods if not METHODS[m].retrains))


def pick_best(finished: list[tuple[dict, float]], default: tuple[dict, float]) -> tuple[dict, float, bool]:
    """(config, objective, default kept?) of the best finished trial, or of the default config when no finished
    trial beats it.  The default is scored on every cell before the sweep; ASHA may stop the default's own
    trial on the first cells' mean, and a finished trial that is worse over all cells must not replace it."""
    cfg, obj = min(finished, key=lambda t: t[1]) if finished else default
    return (default[0], default[1], True) if default[1] <= obj else (cfg, obj, False)


def startup_trials(trials: int) -> int:
    """TPE's random start-up proposals: Optuna's default 10 would make a 16-trial sweep mostly random search."""
    return min(10, max(1, trials // 3))


@dataclass(frozen=True)
class TuneSettings:
    # null (the default): every unlearning method the preset runs, so every method of the benchmark it feeds
    # gets the same budget; or a list, e.g. the ascent family ASCENT_FAMILY or the ablation's [sragu,agu_layerwise]
    methods: tuple[str, ...] | None = None
    protocol: Protocol = "shared"  # shared: step and epochs only, one range per role; ablation: every knob
    trials: int = 16  # per method: every method gets the same budget
    tuning_seed: int = 1000  # not among any preset's evaluation seeds
    objective: Objective = "js"
    penalty: float = 1.0
    drop_tolerance: float = 0.02
    penalty_split: Literal["val", "test"] = "val"
    max_concurrent: int = 2
    trial: TaskResources = field(default_factory=TaskResources)
    # ASHA: cells a trial finishes before it can be stopped (capped at the number of cells).  Null (default): the
    # number of regimes, so no trial is judged before it has seen every regime once (cells run model by model,
    # every regime within a model).  Measured on the verdict grid with 2: the first two cells (random 10% and
    # class 3) stopped every small-step trial, whose class-3 distance stays near θ0's, and kept only trials that
    # were worse over all ten cells than the default config.
    grace_period: int | None = None
    reduction_factor: int = 3
    search_seed: int = 0

    def __post_init__(self):
        if self.methods is not None:
            for m in self.methods:
                check(m in METHODS, "tune.methods", m, f"one of {METHODS.names()}")
                check(not METHODS[m].retrains, "tune.methods", m, "an unlearning method (not a gold retrain)")
            check(len(self.methods) >= 1, "tune.methods", self.methods, "one or more methods, or null (the preset's)")
            check(len(set(self.methods)) == len(self.methods), "tune.methods", self.methods, "distinct names")
        check(self.trials >= 1, "tune.trials", self.trials, "an integer >= 1")
        check(self.penalty >= 0, "tune.penalty", self.penalty, "a number >= 0")
        check(0 <= self.drop_tolerance < 1, "tune.drop_tolerance", self.drop_tolerance, "a number in [0, 1)")
        check(self.max_concurrent >= 1, "tune.max_concurrent", self.max_concurrent, "an integer >= 1")
        check(self.grace_period is None or self.grace_period >= 1, "tune.grace_period", self.grace_period,
              "null (the number of regimes) or an integer >= 1 (cells)")
        check(self.reduction_factor >= 2, "tune.reduction_factor", self.reduction_factor, "an integer >= 2")


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
    gold_acc: dict[str, float] = field(default_factory=dict)  # the gold's accuracy on AVG_GAP_SPLITS

    def original(self, bench) -> torch.nn.Module:
        return build(bench, self.model_name, self.dataset, self.original_state)

    def penalty_split(self, settings: TuneSettings):
        return self.inputs.splits.val if settings.penalty_split == "val" else self.inputs.splits.test


def _acc(model: torch.nn.Module, split, device) -> float:
    return accuracy(predict(model, split, device=device)[0], split.y)


def objective_of(settings: TuneSettings, unlearned: torch.nn.Module, cell: TuningCell, *, device) -> tuple[float, dict]:
    """The tuning objective of one cell (see module docstring) and its parts."""
    splits = cell.inputs.splits
    if settings.objective == "avg_gap":
        accs = {s: _acc(unlearned, getattr(splits, s), device) for s in AVG_GAP_SPLITS}
        dist = sum(abs(accs[s] - cell.gold_acc[s]) for s in AVG_GAP_SPLITS) / len(AVG_GAP_SPLITS)
        acc = accs["val"] if settings.penalty_split == "val" else _acc(unlearned, splits.test, device)
    else:
        pu, _ = predict(unlearned, splits.forget, device=device)
        dist = _DISTANCES[settings.objective](pu, cell.gold_forget_probs)
        acc = _acc(unlearned, cell.penalty_split(settings), device)
    drop = cell.acc0 - acc if math.isfinite(acc) else 1.0
    value = dist + settings.penalty * max(0.0, drop - settings.drop_tolerance)
    if not math.isfinite(value):
        value = 1e6  # a diverged model is a (very bad) result, not a crash of the sweep
    return value, {settings.objective: dist, "acc_drop": drop}


class SweepInterrupted(RuntimeError):
    """Tune stopped before every trial finished (e.g. Ctrl-C); its state is saved for ``Tuner.restore``."""

    run_status = "KILLED"  # the sweep's MLflow parent run ends KILLED, not FAILED


def prepare_cells(resolved: Resolved, settings: TuneSettings, store: Store, datasets: dict) -> list[TuningCell]:
    """Build (or load from the store) originals, forget sets and golds for the tuning seed; the cells come in
    the plan's order, the one order every trial runs them in."""
    bench = dataclasses.replace(resolved.bench, seeds=(settings.tuning_seed,))
    tuning = resolved.with_bench(bench)
    # one cell per forget set: a sequential regime (``<regime>@<T>``) is tuned as its one-request form, which
    # deletes the same set (a preset holding both tunes it once)
    cells = list({c.forget_set.key: c for c in reversed(plan_cells(tuning)) if c.method == bench.methods[0]}.values())
    cells.reverse()
    upstream = Upstream(tuning, store, datasets, cells)
    device = pick_device(bench.device)
    out = []
    for c in cells:
        o, f, g = ray.get(list(upstream(c)[1:]))
        ds = prepared(datasets[c.dataset], c.original.alter, c.seed)  # the data θ0 trained on
        inputs = cell_inputs(ds, f.forget, c.forget)
        original = build(bench, c.model, ds, o.state)
        split = inputs.splits.val if settings.penalty_split == "val" else inputs.splits.test
        gold_probs = g.reference.pred.probs  # stored with the gold
        gold_acc = {s: accuracy(gold_probs[s], getattr(inputs.splits, s).y) for s in AVG_GAP_SPLITS}
        out.append(TuningCell(f"{c.dataset}/{c.model}/{c.forget_set.config.label()}", c.model, o.state, inputs,
                              gold_probs["forget"], _acc(original, split, device), ds, gold_acc))
    return out


def evaluate_config(method: str, cfg: Any, cells: list[TuningCell], settings: TuneSettings, bench, *,
                    report=None) -> float:
    """Mean objective of ``cfg`` over ``cells``, run in their given order; ``report(dict)`` is called once per
    finished cell with the mean over the cells finished so far (what ASHA compares)."""
    device = pick_device(bench.device)
    done: list[float] = []
    for cell in cells:
        result = run_method(method, cell.original(bench), cell.inputs.data, cfg, seed=settings.tuning_seed,
                            device=device)
        value, parts = objective_of(settings, result.model, cell, device=device)
        done.append(value)
        if report is not None:
            report({"objective": sum(done) / len(done), "cells_done": len(done),
                    "complete": int(len(done) == len(cells)), "cell_objective": value,
                    **{f"cell_{k}": v for k, v in parts.items()}})
    return sum(done) / len(done)


def _trainable(config: dict, *, method: str, base: Any, space: dict[str, SearchDim], cells: list,
               settings: TuneSettings, bench) -> None:
    torch.set_num_threads(1)
    try:
        cfg = dataclasses.replace(base, **assemble(space, config))
    except ConfigError:  # an invalid combination the space can propose: a bad result, not a crash
        tune.report({"objective": 1e6, "cells_done": len(cells), "complete": 1, "invalid": 1})
        return
    evaluate_config(method, cfg, cells, settings, bench, report=tune.report)


class TrialName:
    """Tune's ``trial_name_creator``: ``<method>-trial-<n>``, n the order the searcher created the trial in (its
    ``experiment_tag`` starts with that counter, which a restored sweep keeps), instead of ``_trainable_<id>``.
    A class, not a closure: Tune pickles it with the sweep's state."""

    def __init__(self, method: str):
        self.method = method

    def __call__(self, trial) -> str:
        n = str(getattr(trial, "experiment_tag", "")).partition("_")[0]
        return f"{self.method}-trial-{n}" if n.isdigit() else f"{self.method}-trial-{trial.trial_id}"


def trial_logger(tracking_uri: str, experiment: str, tags: dict, sweep: str):
    """Ray's ``MLflowLoggerCallback`` for the trials of ``sweep`` (the parent's ``sweep`` tag): each trial's searched
    values shown to 6 significant digits; a trial that ended without finishing every cell (``complete`` != 1: ASHA
    stopped it; Tune reports it TERMINATED, as a finished one) ended KILLED with tag ``asha_stopped=true``; and
    trials filed under the sweep's newest RUNNING parent.  That last point is for ``--resume``: Tune restores this
    callback from the pickled state of the run that started the sweep, whose parent has ended (KILLED), and the
    resumed trials belong to the run that resumes it (measured: they went to the old parent)."""
    from mlflow.tracking import MlflowClient
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class TrialLogger(MLflowLoggerCallback):
        def setup(self, *args, **kwargs) -> None:
            super().setup(*args, **kwargs)
            client = MlflowClient(self.tracking_uri)
            exp = client.get_experiment_by_name(self.experiment_name)
            live = client.search_runs([exp.experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                                      filter_string=f"tags.sweep = '{sweep}' and tags.`sragu.role` = 'parent' and "
                                                    "attributes.status = 'RUNNING'") if exp else []
            if live:
                self.tags = {**self.tags, "mlflow.parentRunId": live[0].info.run_id}

        def log_trial_start(self, trial) -> None:
            if trial not in self._trial_runs:
                run = self.mlflow_util.start_run(tags={**self.tags, "trial_name": str(trial)}, run_name=str(trial))
                self._trial_runs[trial] = run.info.run_id
                shown = {k: display_value(v) for k, v in trial.config.items()}
                self.mlflow_util.log_params(run_id=self._trial_runs[trial], params_to_log=shown)

        def log_trial_end(self, trial, failed: bool = False) -> None:
            result = trial.last_result or {}
            if failed or result.get("complete") == 1:
                return super().log_trial_end(trial, failed)
            run_id, done = self._trial_runs[trial], result.get("cells_done")
            client = MlflowClient(self.tracking_uri)
            client.set_tag(run_id, "asha_stopped", "true")
            client.set_tag(run_id, "stop_reason", f"stopped early by ASHA after {done} cell(s)" if done is not None
                           else "stopped early by ASHA")
            client.set_terminated(run_id, status="KILLED")

    return TrialLogger(tracking_uri=tracking_uri, experiment_name=experiment, tags=tags, save_artifact=False)


def run_sweeps(resolved: Resolved, settings: TuneSettings, store: Store, datasets: dict, tracker: Tracker, *,
               name: str, space_overrides: dict[str, dict], out: Path, state_dir: Path,
               restore: set[str] = frozenset()) -> dict:
    """All methods' sweeps; writes the tuned-config document to ``out`` (and on the MLflow parent) and returns it.

    ``restore``: the sweeps (``<name>-<method>``) to resume, already verified by ``tune_state.resumable``;
    ``state_dir``: where the digests of each sweep's state files are recorded when it stops."""
    settings = for_preset(settings, resolved.bench.methods)
    spaces = {m: search_space(m, space_overrides.get(m), protocol=settings.protocol) for m in settings.methods}
    t0 = time.perf_counter()
    init_ray(resolved)
    try:
        cells = prepare_cells(resolved, settings, store, datasets)
        described = {m: describe(s) for m, s in spaces.items()}
        config = {"bench": resolved.as_dict(), "tune": to_dict(settings), "spaces": described}
        tracker.view = TRIALS  # the experiment's saved view lists trials, not cells
        with tracker.parent_run(name, config, {"sweep": name, "tuning_seed": str(settings.tuning_seed),
                                               "protocol": settings.protocol}) as parent:
            doc = {"format": TUNED_FORMAT, "source": name, "preset": resolved.bench.name,
                   "tuned_seed": settings.tuning_seed, "protocol": settings.protocol,
                   "objective": settings.objective, "cells": [c.label for c in cells],
                   "settings": to_dict(settings), "methods": {}}
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
    import optuna
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    base = resolved.methods[method]
    t0 = time.perf_counter()
    default_obj = evaluate_config(method, base, cells, settings, resolved.bench)
    if not space:  # nothing to search under this protocol (ssd and original under shared): its defaults
        print(f"{method}: no field searched under protocol {settings.protocol}: 1 trial of its defaults, "
              f"{settings.objective} objective {default_obj:.4f}", flush=True)
        return {"config": {}, "objective": default_obj, "default_objective": default_obj, "space": {},
                "trials": 1, "finished_trials": 1, "stopped_early": 0, "startup_trials": 0,
                "note": f"no field searched under protocol {settings.protocol}: its defaults, 1 trial",
                "wall_s": time.perf_counter() - t0, "path": None}
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, method=method, base=base, space=space, cells=cells, settings=settings,
                             bench=resolved.bench),
        {"cpu": settings.trial.num_cpus, "gpu": settings.trial.num_gpus})
    storage, fs = store.tune_location()
    sweep = f"{name}-{method}"
    path = sweep_path(store, sweep)
    startup = startup_trials(settings.trials)
    if sweep in restore:  # its state files matched this machine's digests (tune_state.resumable) ...
        verify_state(store, sweep, state_dir)  # ... and still do, now, just before Tune unpickles them
        print(f"{method}: resuming sweep at {path}", flush=True)
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=fs)
    else:
        sampler = optuna.samplers.TPESampler(n_startup_trials=startup, seed=settings.search_seed)
        search = OptunaSearch(points_to_evaluate=[flat_point(space, base)], sampler=sampler)
        grace = settings.grace_period or len(resolved.forget)
        asha = ASHAScheduler(time_attr="training_iteration", grace_period=min(grace, len(cells)),
                             reduction_factor=settings.reduction_factor, max_t=len(cells))  # both in cells
        mlflow_cb = trial_logger(tracker.tracking_uri, tracker.experiment,
                                 {"mlflow.parentRunId": parent, "method": method, "sragu.role": "trial"}, name)
        tuner = tune.Tuner(
            trainable, param_space=to_tune(space),
            tune_config=tune.TuneConfig(metric="objective", mode="min", search_alg=search, scheduler=asha,
                                        num_samples=settings.trials, max_concurrent_trials=settings.max_concurrent,
                                        trial_name_creator=TrialName(method)),
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
    best_cfg, best_obj, kept = pick_best([(assemble(space, r.config), r.metrics["objective"]) for r in finished],
                                         (assemble(space, flat_point(space, base)), default_obj))
    print(f"{method}: best {settings.objective} objective {best_obj:.4f} "
          f"(default {default_obj:.4f}{', kept: no finished trial beat it' if kept else ''}) over {len(grid)} "
          f"trials, protocol {settings.protocol} ({', '.join(space)}); {json.dumps(best_cfg)}", flush=True)
    return {"config": best_cfg, "objective": best_obj, "default_objective": default_obj, "default_kept": kept,
            "space": describe(space), "trials": len(grid), "finished_trials": len(finished),
            "stopped_early": sum(1 for r in grid if r.metrics and r.metrics.get("complete") != 1),
            "startup_trials": startup, "wall_s": time.perf_counter() - t0, "path": path}
