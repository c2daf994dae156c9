"""One benchmark run: header → Ray fan-out → MLflow → consolidated Parquet → report.

The terminal shows a short header (the grid's shape and size, where outputs go, where Ray runs; the full
resolved config, code and package versions are saved to ``<run>/config.json`` and the MLflow parent run, not
printed), then the progress of the cells and of the upstream tasks they wait on
(:mod:`components.execution.progress`: bars on a terminal, a few lines in a log), then the summary table.

Everything that can fail on bad input (config, data, device, store, tracking server, Ray address) is
checked first by :func:`components.execution.preflight.preflight`, before a file is written or Ray starts.

Cells whose ``cells/<key>.parquet`` is in the store (and verifies: one row of that key) are not run again; a
cell file that fails verification is quarantined and its cell recomputed.  The cells left to run are
claimed in the store (``components/io/leases.py``), so two drivers sharing a store split the work instead
of doing it twice; a driver waits for the cells another live driver holds and takes over those of a dead
one.  MLflow is reconciled from the store before the grid runs (``TrackedRun``), and a tracking or store
outage mid-run costs no finished result: the run reports what it has, names what is missing and exits 1.
The consolidated table is every verified cell in plan order plus this invocation's failed cells, so a
rerun gives the same table with no duplicate rows.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow.parquet as pq
import ray

from sragu_core.config import flatten, to_dict

from ..config import Resolved
from ..io.cell_logger import CellJob
from ..io.consolidate import RowSpool, consolidate_cells, verify_cells
from ..io.leases import Leases
from ..io.mlflow_values import row_metrics
from ..io.store import Store, is_corrupt, reason
from ..io.tracking import TrackedRun, redact
from ..report import summary_table, write_report
from .grid import GridTasks, init_ray, run_grid
from .plan import Cell, code_hash, git_revision, plan_cells
from .preflight import Prepared, package_versions
from .progress import Progress
from .tasks import alpha_omega_path, cell_path, read_cell

__all__ = ["run_benchmark", "verified_cells"]


def _cell_params(cell: Cell, resolved: Resolved) -> dict:
    """The cell's resolved inputs, flattened: method config, forget config, recipe, data, model."""
    bench = resolved.bench
    return flatten({cell.method: to_dict(cell.method_cfg), "forget": to_dict(cell.forget),
                    "train": to_dict(bench.train_for(cell.model)), "data": to_dict(bench.data),
                    "model": to_dict(bench.model), "dataset": cell.dataset, "seed": cell.seed})


def run_benchmark(p: Prepared, *, tuned: dict | None = None, tasks: GridTasks | None = None) -> tuple[int, Path]:
    """Run the grid; returns (exit code, run folder).  Exit code 1 when any cell failed or is missing, or
    when MLflow or the store could not be written to the end.

    ``tuned`` (from a sweep's tuned-config file) marks which methods run with tuned configurations and on
    which seed they were tuned; those rows get ``tuned=True`` and ``tuned_seed``.  ``tasks``: stand-ins for the
    Ray tasks (``bench/scale.py`` only).

    Writes ``<run>/driver.json``: the driver's own time per phase and how long it waited on MLflow.
    """
    t0 = time.time()
    clock = _Phases()
    cells = plan_cells(p.resolved)
    clock.lap("plan_s")
    done = verified_cells(p.store, cells)
    clock.lap("verify_s")
    todo = [c for c in cells if c.key not in done]
    print(_header(p, cells, len(todo)), flush=True)
    progress = Progress(total=len(cells), cached=len(done))
    progress.expect(todo)
    if todo:
        progress.start()  # the stages' totals with nothing done, at once: Ray takes seconds to start
    ray_up = _Ray(p.resolved, progress.note)
    try:
        if todo:
            ray_up.start()  # a cluster that went away since preflight fails here, before any file
        with Leases(p.store, p.resolved.bench.ray.lease_ttl_s) as leases:
            claimed = set(leases.claim_many([c.key for c in todo]))
            mine = [c for c in todo if c.key in claimed]
            held = leases.held  # a copy per call: once, not once per cell (that was 200 s at 100k cells)
            others = [c for c in todo if c.key not in held]
            if others:  # their upstream tasks are the other driver's (a takeover counts its cells again)
                progress.expect(mine, replace=True)
            return _run(p, cells, done, mine, others, leases, ray_up, tuned, t0, progress, tasks, clock)
    finally:
        progress.close()
        ray_up.stop()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _header(p: Prepared, cells: list[Cell], todo: int) -> str:
    """What the run is and where it goes, in a few lines (the full config goes to ``<run>/config.json``)."""
    bench = p.resolved.bench
    shape = " × ".join(_count(len(v), k) for k, v in (("dataset", bench.datasets), ("model", bench.models),
                                                       ("seed", bench.seeds), ("regime", bench.regimes),
                                                       ("method", bench.methods)))
    address = bench.ray.address or os.environ.get("RAY_ADDRESS", "").strip() or "local"
    if not todo:
        where = "not needed: every cell is in the store"
    elif address == "local":
        where = "a local instance of this run's own (127.0.0.1)"
    else:
        where = f"the cluster at {address}" + (" (the one `ray start` recorded)" if address == "auto" else "")
    rows = [("runs", f"{p.out.resolve()}/{bench.name}-<time>/  (config.json: the full config and versions; "
                     "results.parquet; report/)"),
            ("store", p.store.uri),
            ("mlflow", f"{redact(p.tracker.tracking_uri)}  (experiment {p.tracker.experiment})"),
            ("ray", where),
            ("code", f"{code_hash()}, git {git_revision()}")]
    return "\n".join([f"{bench.name}: {shape} = {_count(len(cells), 'cell')}",
                      *(f"  {k + ':':<8}{v}" for k, v in rows)])


class _Ray:
    """Ray, started on first need (a run whose cells are all cached or computed elsewhere never starts it)."""

    def __init__(self, resolved, say):
        self.resolved, self.say, self.where = resolved, say, None

    def start(self) -> str:
        if self.where is None:
            self.where = init_ray(self.resolved)
            self.say(f"ray: {self.where}")
        return self.where

    def stop(self) -> None:
        if self.where is not None:
            ray.shutdown()
            self.where = None


def verified_cells(store: Store, cells: list[Cell]) -> set[str]:
    """The keys of the cells whose files are in the store and verify.

    The store is listed once and the files are read in parallel, a chunk at a time, without keeping them
    (:func:`components.io.consolidate.verify_cells`); a file that does not read back as one row of its own key
    is quarantined (``Store.quarantine``), so its cell is run again."""
    present = set(store.list("cells/"))
    keys = [c.key for c in cells if cell_path(c.key) in present]
    ok, bad = verify_cells(store, keys, path_of=cell_path)
    for key, why in bad.items():
        store.quarantine(cell_path(key), why)
    return set(ok)


def _unique_dir(out: Path, name: str) -> Path:
    """``<out>/<name>-<time>``, or with ``-2``, ``-3``... when another run took that name in the same second."""
    stem = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for i in range(1, 1000):
        d = out / (stem if i == 1 else f"{stem}-{i}")
        try:
            d.mkdir(parents=True, exist_ok=False)
            return d
        except FileExistsError:
            continue
    raise FileExistsError(f"{out}: no free run folder name for {stem}")


class _Phases:
    """Wall time per phase of the driver (``<run>/driver.json``)."""

    def __init__(self):
        self.t = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self.t
        self.t = now


def _run(p: Prepared, cells: list[Cell], done: set[str], mine: list[Cell], others: list[Cell],
         leases: Leases, ray_up: _Ray, tuned: dict | None, t0: float, progress: Progress,
         tasks: GridTasks | None = None, clock: _Phases | None = None) -> tuple[int, Path]:
    clock = clock or _Phases()
    resolved, bench = p.resolved, p.resolved.bench
    code, rev = code_hash(), git_revision()
    config = {"config": resolved.as_dict(), "code_version": code, "git_revision": rev,
              "packages": package_versions(), "store": p.store.uri, "tracking_uri": redact(p.tracker.tracking_uri)}
    run_dir = _unique_dir(p.out, bench.name)
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    progress.note(f"run: {run_dir}")
    tuned_methods = set((tuned or {}).get("methods", {}))
    tuned_seed = (tuned or {}).get("tuned_seed")

    def extra(cell: Cell) -> dict:
        mark = cell.method in tuned_methods
        return {"code_version": code, "git_revision": rev, "tuned": mark, "tuned_seed": tuned_seed if mark else None}

    tags = {"benchmark": bench.name, "code_version": code, "git_revision": rev, "store": p.store.uri,
            "sragu.driver": leases.id}
    with TrackedRun(p.tracker, run_dir.name, config, tags) as tracking:
        tracking.end_orphans(leases.alive)
        by_key = {c.key: c for c in cells}
        per_cell = bench.tracking.cell_runs(len(cells))
        reconciled = 0
        if per_cell:
            tracking.list_cells()  # one listing of the experiment's cell runs serves the whole grid
            if bench.tracking.mode == "async":
                tracking.start_logger(lambda key: _stored_job(p, resolved, by_key[key]),
                                      queue_size=bench.tracking.queue_size,
                                      threads=1 if p.tracker.is_sqlite else bench.tracking.threads)
            reconciled = _reconcile(p, resolved, cells, done, tracking)
            tracking.adopt_cells(sorted(done))  # cells found in the store: under this run's parent, tagged cached
        else:
            progress.note(f"mlflow: {len(cells)} cells > tracking.max_cell_runs={bench.tracking.max_cell_runs}: one "
                          "child run per dataset × model × regime × method, logged from the table at the end"
                          if bench.tracking.cells == "auto" else
                          "mlflow: one child run per dataset × model × regime × method (tracking.cells=groups)")
        progress.note(f"{len(cells)} cells: {len(mine)} to run, {len(done)} already in {p.store.uri}"
                      + (f", {len(others)} being computed by another run" if others else "")
                      + (f"; {reconciled} logged to MLflow from the store" if reconciled else ""))

        failed: dict[str, dict] = {}
        spool = RowSpool(run_dir / ".rows.jsonl")  # this run's rows on local disk: the table needs no store read

        def on_result(cell: Cell, result: dict) -> None:
            row = result["row"]
            if row["status"] == "ok":
                done.add(cell.key)  # its row is in the store (the cell task wrote it before returning)
                spool.add(row)
            else:
                failed[cell.key] = row
            leases.release_later(cell.key)
            if per_cell:
                tracking.submit(_cell_job(resolved, cell, row, result["alpha_omega"]))

        clock.lap("start_s")
        if mine:
            run_grid(resolved, mine, p.store, p.datasets, extra, on_result, progress, tasks)
        if others:
            _wait_for_others(p, others, done, failed, leases, ray_up, extra, on_result, progress, tasks)
        progress.close()  # the final progress line, before the table and the report
        clock.lap("grid_s")
        if tracking.logger is not None and tracking.logger.backlog:
            print(f"mlflow: logging the last {tracking.logger.backlog} cell(s)", flush=True)
        tracking.drain(bench.tracking.drain_timeout_s)
        clock.lap("drain_s")

        # the table streams from the cell files in plan order, a chunk at a time, then this run's failed cells
        spool.flush()
        keys, fails = [c.key for c in cells if c.key in done], [failed[c.key] for c in cells if c.key in failed]
        problems = []
        try:
            result = consolidate_cells(p.store, keys, fails, run_dir / "results.parquet", path_of=cell_path,
                                       local=spool.row)
            for key, why in result.corrupt.items():  # verified earlier, unreadable now: rerun it next time
                p.store.quarantine(cell_path(key), why)
            lost = list(result.corrupt)
        except Exception as e:  # noqa: BLE001 — the store went away: the table of this run's cells, exit 1
            if is_corrupt(e):
                raise
            result = consolidate_cells(p.store, [k for k in keys if k in spool], fails, run_dir / "results.parquet",
                                       path_of=cell_path, local=spool.row)
            lost = [k for k in keys if k not in spool]
            problems.append(f"store: reading the cached cells failed ({reason(e)}); the table holds this run's "
                            f"{len(spool.keys())} finished cell(s), not {len(lost)} cached one(s)")
        spool.close()
        missing = [c.key for c in cells if c.key not in done and c.key not in failed] + lost
        table_key = f"tables/{bench.name}.parquet"
        clock.lap("consolidate_s")
        if missing:
            problems.insert(0, f"{len(missing)} cell(s) neither finished nor failed: {', '.join(missing[:5])}"
                               f"{' …' if len(missing) > 5 else ''}")
        try:
            p.store.put_bytes(table_key, (run_dir / "results.parquet").read_bytes())
        except Exception as e:  # noqa: BLE001 — the table is in the run folder; say so and exit 1
            problems.append(f"store: writing {table_key} failed ({reason(e)}); "
                            f"the table is in {run_dir / 'results.parquet'}")
        clock.lap("store_s")
        if not per_cell:
            tracking.log_groups(run_dir / "results.parquet",
                                lambda row: _cell_params(by_key[row["cell_key"]], resolved))
        clock.lap("groups_s")
        note = None
        if tuned_methods:
            note = (f"Configurations of {', '.join(sorted(tuned_methods))} come from "
                    f"{tuned.get('source', 'a sweep')}, tuned on seed {tuned_seed}; evaluated on held-out seeds "
                    f"{list(bench.seeds)}.")
        frame = pq.read_table(run_dir / "results.parquet").to_pandas()  # the report reads the table only
        report = write_report(frame, run_dir / "report", title=f"SRAGU benchmark: {bench.name}", tuned_note=note)
        clock.lap("report_s")
        n_ok = int((frame["status"] == "ok").sum()) if len(frame) else 0
        tracking.parent.artifacts = {"results.parquet": run_dir / "results.parquet", "report.md": report,
                                     "report": run_dir / "report"}
        tracking.parent.metrics = {"cells_ok": n_ok, "cells_failed": len(failed), "cells_cached": progress.cached,
                                   "cells_missing": len(missing)}
        tracking.parent.status = "FAILED" if failed or missing else "FINISHED"
    clock.lap("finish_s")
    logger = tracking.logger
    (run_dir / "driver.json").write_text(json.dumps({
        "cells": len(cells), "mlflow_mode": ("runs" if per_cell else "groups") + f" ({bench.tracking.mode})",
        **{k: round(v, 3) for k, v in clock.laps.items()}, "mlflow_blocked_s": round(tracking.blocked_s, 3),
        "mlflow_logged": logger.logged if logger else None,
        "mlflow_logging_busy_s": round(logger.busy_s, 3) if logger else None,
        "mlflow_overflowed": logger.overflowed if logger else None}, indent=1))
    if tracking.error is not None:
        problems.append(f"mlflow: {tracking.error}; {tracking.pending} cell(s) not logged — rerun the same "
                        "command to log them from the store")
    for h in _healed(p.store, t0):
        print(f"healed: {h['key']} failed verification ({h['reason']}); moved to {h['moved_to']} and recomputed")
    print(summary_table(frame))
    print(f"\n{len(frame)} cells ({n_ok} ok, {len(failed)} failed, {progress.cached} cached"
          f"{f', {len(missing)} missing' if missing else ''})\n"
          f"table:  {run_dir / 'results.parquet'}  (and {p.store.uri}/{table_key})\n"
          f"report: {report}\n"
          f"mlflow: {tracking.ui_hint()}")
    for line in problems:
        print(f"incomplete: {line}", flush=True)
    return (1 if failed or missing or problems else 0), run_dir


def _cell_job(resolved: Resolved, cell: Cell, row: dict, ao: list | None, **extra_tags: str) -> CellJob:
    """A finished cell's child run (:class:`CellJob`): its applicable inputs, its row's numbers as metrics, its
    coordinates as tags, its α/ω rows."""
    tags = {k: str(row.get(k)) for k in ("method", "dataset", "model", "regime", "seed", "cell_key",
                                         "code_version", "stop_reason")}
    tags.update(extra_tags)
    if row["status"] == "failed":
        tags["error"] = row["error"]
    return CellJob(cell.key, f"{cell.method}/{cell.forget.label()}/s{cell.seed}", _cell_params(cell, resolved),
                   row_metrics(row), tags, "FINISHED" if row["status"] == "ok" else "FAILED", ao or None)


def _stored_job(p: Prepared, resolved: Resolved, cell: Cell) -> CellJob | None:
    """The job of a cell logged from the store (reconciliation, or a cell the logging queue had no room for):
    its stored row and α/ω rows; None when the store has no verified row of it."""
    try:
        row = read_cell(p.store, cell.key).to_pylist()[0]
    except FileNotFoundError:
        return None
    ao = None
    try:
        if p.store.exists(alpha_omega_path(cell.key)):
            ao = p.store.get_json(alpha_omega_path(cell.key))
    except Exception:  # noqa: BLE001, S110 — the α/ω plot is a nicety; the row is what matters
        pass
    return _cell_job(resolved, cell, row, ao, **{"sragu.logged_from": "store"})


def _reconcile(p: Prepared, resolved: Resolved, cells: list[Cell], done: set[str], tracking: TrackedRun) -> int:
    """Log every cell the store holds and MLflow lacks (or has only as FAILED); returns how many.  With background
    logging they are queued behind the grid's cells (read from the store by the logging threads)."""
    logged = tracking.logged_cells()
    if logged is None:
        return 0
    n = 0
    for c in cells:
        if c.key in done and logged.get(c.key) != "FINISHED":
            if tracking.logger is not None:
                tracking.logger.submit_key(c.key)
            else:
                job = _stored_job(p, resolved, c)
                if job is not None:
                    tracking.submit(job)
            if tracking.error is not None:
                break
            n += 1
    return n


def _wait_for_others(p: Prepared, others: list[Cell], done: set[str], failed: dict, leases: Leases, ray_up: _Ray,
                     extra, on_result, progress: Progress, tasks: GridTasks | None = None,
                     poll_s: float = 2.0) -> None:
    """Cells another driver claimed: take each from the store once written; run those whose driver is gone.

    Gives up after ``ray.stall_timeout_s`` without one of them finishing: they become failed rows."""
    resolved = p.resolved
    stall = resolved.bench.ray.stall_timeout_s
    waiting = {c.key: c for c in others}
    owners = sorted({o for c in others if (o := leases.owner(c.key))})
    progress.note(f"waiting for {len(waiting)} cell(s) another run is computing "
                  f"({', '.join(owners) or 'driver gone'})")
    last = time.monotonic()
    while waiting:
        takeover = []
        for key in list(waiting):
            try:
                if p.store.exists(cell_path(key)):
                    read_cell(p.store, key)  # verifies: one row of its key
                    done.add(key)
                    del waiting[key]
                    progress.cached += 1
                    last = time.monotonic()
                elif leases.owner(key) is None and leases.claim(key):
                    takeover.append(waiting.pop(key))
            except Exception as e:  # noqa: BLE001 — unreadable or unreachable: retried next poll, bounded by stall
                if is_corrupt(e):
                    p.store.quarantine(cell_path(key), reason(e))
        if takeover:
            ray_up.start()
            progress.note(f"taking over {len(takeover)} cell(s) whose run is gone")
            run_grid(resolved, takeover, p.store, p.datasets, extra, on_result, progress, tasks)
            last = time.monotonic()
            continue
        if waiting and stall and time.monotonic() - last > stall:
            why = (f"stalled: no cell computed by another run appeared in {stall:.0f} s "
                   f"(ray.stall_timeout_s={stall:g})")
            progress.note(why)
            for c in waiting.values():
                on_result(c, {"row": {**c.coords(), **extra(c), "status": "failed", "error": why},
                              "alpha_omega": None, "epoch_trace": []})
                progress.failed += 1
            return
        if waiting:
            progress.show()
            time.sleep(poll_s)


def _healed(store: Store, t0: float) -> list[dict]:
    try:
        return store.quarantined_since(t0)
    except Exception:  # noqa: BLE001 — an unreachable store was reported already
        return []
