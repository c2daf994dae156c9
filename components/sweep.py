"""Runs the Ray Tune sweeps of :mod:`components.tuning` and writes the tuned-config file.

One ``Tuner`` per method, each with the same number of trials, Optuna TPE + ASHA, results under
``<store>/tune/<sweep>-<method>`` (local or S3 through ``storage_filesystem``).  Rerunning the same
command restores an interrupted sweep with ``Tuner.restore`` (finished trials are kept, unfinished
ones resumed).  MLflow: one parent run per sweep, one child per trial through Ray's
``MLflowLoggerCallback`` only (tag ``mlflow.parentRunId``), the tuned file and the best configs on the
parent.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any

import ray
import torch
from ray import tune

from sragu_core.config import to_dict
from sragu_core.errors import ConfigError, check
from sragu_core.methods import run_method
from sragu_core.metrics import accuracy, predict

from .orchestrator import Upstream, init_ray
from .plan import plan_cells
from .presets import Resolved
from .steps import cell_inputs, method_config, pick_device
from .store import Store
from .tasks import forget_set_of, model_from_state
from .tuning import TUNED_FORMAT, SearchDim, TuneSettings, objective_of, search_space

__all__ = ["TuningCell", "SweepInterrupted", "prepare_cells", "evaluate_config", "run_sweeps"]


class SweepInterrupted(RuntimeError):
    """Tune stopped before every trial finished (e.g. Ctrl-C); its state is saved for ``Tuner.restore``."""



@dataclass
class TuningCell:
    """Everything a trial needs for one (dataset, model, regime) on the tuning seed — no retraining."""

    label: str
    model_name: str
    original_state: dict
    inputs: Any  # steps.CellInputs
    gold_forget_probs: torch.Tensor
    acc0: float  # θ0's accuracy on the penalty split
    dataset: Any  # DatasetSplits, for the architecture's input shape and classes

    def original(self, bench) -> torch.nn.Module:
        return model_from_state(bench, self.model_name, self.dataset, self.original_state)


def prepare_cells(resolved: Resolved, settings: TuneSettings, store: Store, datasets: dict) -> list[TuningCell]:
    """Build (or load from the store) originals, forget sets and golds for the tuning seed."""
    bench = dataclasses.replace(resolved.bench, seeds=(settings.tuning_seed,))
    tuning = Resolved(bench, resolved.methods)
    cells = [c for c in plan_cells(tuning, method_config) if c.method == bench.methods[0]]
    upstream = Upstream(tuning, store, datasets, cells)
    device = pick_device(bench.device)
    out = []
    for c in cells:
        _, o, f, g = ray.get(list(upstream(c)))
        ds = datasets[c.dataset]
        inputs = cell_inputs(ds, forget_set_of(f))
        original = model_from_state(bench, c.model, ds, o["state"])
        split = inputs.splits.val if settings.penalty_split == "val" else inputs.splits.test
        acc0 = accuracy(predict(original, split, device=device)[0], split.y)
        out.append(TuningCell(f"{c.dataset}/{c.model}/{c.forget.label()}", c.model, o["state"], inputs,
                              g["pred"]["probs"]["forget"], acc0, ds))  # stored with the gold
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


def run_sweeps(resolved: Resolved, settings: TuneSettings, store: Store, datasets: dict, tracker, *,
               name: str, space_overrides: dict[str, dict], fresh: bool = False) -> dict:
    """All methods' sweeps; returns the tuned-config document (also written by the caller)."""
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    spaces = {m: search_space(m, space_overrides.get(m)) for m in settings.methods}
    init_ray(resolved)
    try:
        cells = prepare_cells(resolved, settings, store, datasets)
        described = {m: {k: str(d) for k, d in s.items()} for m, s in spaces.items()}
        parent = tracker.start_parent(name, {"bench": resolved.as_dict(), "tune": to_dict(settings),
                                             "spaces": described},
                                      {"sweep": name, "tuning_seed": str(settings.tuning_seed)})
        doc = {"format": TUNED_FORMAT, "source": name, "preset": resolved.bench.name,
               "tuned_seed": settings.tuning_seed, "objective": settings.objective, "cells": [c.label for c in cells],
               "settings": to_dict(settings), "methods": {}}
        for method in settings.methods:
            base = resolved.methods[method]
            t0 = time.perf_counter()
            default_obj = evaluate_config(method, base, cells, settings, resolved.bench)
            trainable = tune.with_resources(
                tune.with_parameters(_trainable, method=method, base=base, cells=cells, settings=settings,
                                     bench=resolved.bench),
                {"cpu": settings.trial.num_cpus, "gpu": settings.trial.num_gpus})
            storage, fs = store.tune_location()
            path = f"{storage}/{name}-{method}"
            if not fresh and tune.Tuner.can_restore(path, storage_filesystem=fs):
                print(f"{method}: resuming sweep at {path}", flush=True)
                tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True,
                                           storage_filesystem=fs)
            else:
                defaults = {k: getattr(base, k) for k in spaces[method]}
                search = OptunaSearch(points_to_evaluate=[defaults], seed=settings.search_seed)
                asha = ASHAScheduler(time_attr="training_iteration", grace_period=settings.grace_period,
                                     reduction_factor=settings.reduction_factor, max_t=10_000)
                mlflow_cb = MLflowLoggerCallback(tracking_uri=tracker.tracking_uri, experiment_name=tracker.experiment,
                                                 tags={"mlflow.parentRunId": parent, "method": method,
                                                       "sragu.role": "trial"}, save_artifact=False)
                tuner = tune.Tuner(
                    trainable, param_space=_tune_dims(spaces[method]),
                    tune_config=tune.TuneConfig(metric="objective", mode="min", search_alg=search, scheduler=asha,
                                                num_samples=settings.trials,
                                                max_concurrent_trials=settings.max_concurrent),
                    run_config=tune.RunConfig(name=f"{name}-{method}", storage_path=storage, storage_filesystem=fs,
                                              callbacks=[mlflow_cb], verbose=1))
            grid = tuner.fit()
            if len(grid) < settings.trials or grid.num_terminated + grid.num_errors < len(grid):
                raise SweepInterrupted(f"sweep {name}-{method} interrupted after {grid.num_terminated} of "
                                       f"{settings.trials} trials; rerun the same command to resume it")
            finished = [r for r in grid if r.metrics and r.metrics.get("complete") == 1 and not r.error]
            check(bool(finished), f"tune.{method}", "no finished trial", "at least one trial that completes")
            best = min(finished, key=lambda r: r.metrics["objective"])
            best_cfg = {k: best.config[k] for k in spaces[method]}
            doc["methods"][method] = {
                "config": best_cfg, "objective": best.metrics["objective"], "default_objective": default_obj,
                "trials": len(grid), "finished_trials": len(finished),
                "stopped_early": sum(1 for r in grid if r.metrics and r.metrics.get("complete") != 1),
                "wall_s": time.perf_counter() - t0, "path": path}
            print(f"{method}: best {settings.objective} objective {best.metrics['objective']:.4f} "
                  f"(default {default_obj:.4f}) over {len(grid)} trials; {json.dumps(best_cfg)}", flush=True)
        return doc | {"mlflow_parent": parent}
    finally:
        ray.shutdown()
