"""One benchmark run: header → Ray fan-out → MLflow → consolidated Parquet → report.

Everything that can fail on bad input (config, data, device, store, tracking server) is checked first by
:func:`components.execution.preflight.preflight`, before a file is written or Ray starts.  Cells whose
``cells/<key>.parquet`` already exists in the store are not run again; the consolidated table is rebuilt
from the cell files, so a rerun gives the same table with no duplicate rows.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from sragu_core.config import flatten, to_dict

from ..config import Resolved
from ..io.store import Store
from ..io.tracking import alpha_omega_figure, redact
from ..report import summary_table, write_report
from .grid import Progress, init_ray, run_grid
from .plan import Cell, code_hash, git_revision, plan_cells
from .preflight import Prepared, package_versions
from .tasks import cell_path

__all__ = ["run_benchmark", "consolidate"]


def _cell_params(cell: Cell, resolved: Resolved) -> dict:
    """The cell's resolved inputs, flattened: method config, forget config, recipe, data, model."""
    bench = resolved.bench
    return flatten({cell.method: to_dict(cell.method_cfg), "forget": to_dict(cell.forget),
                    "train": to_dict(bench.train_for(cell.model)), "data": to_dict(bench.data),
                    "model": to_dict(bench.model), "dataset": cell.dataset, "seed": cell.seed})


def run_benchmark(p: Prepared, *, tuned: dict | None = None) -> tuple[int, Path]:
    """Run the grid; returns (exit code, run folder).  Exit code 1 when any cell failed.

    ``tuned`` (from a sweep's tuned-config file) marks which methods run with tuned configurations and on
    which seed they were tuned; those rows get ``tuned=True`` and ``tuned_seed``.
    """
    resolved = p.resolved
    cells = plan_cells(resolved)
    todo = [c for c in cells if not p.store.exists(cell_path(c.key))]
    where = init_ray(resolved) if todo else None  # a bad cluster address fails here, before any file
    try:
        return _run(p, cells, todo, where, tuned)
    finally:
        if todo:
            ray.shutdown()


def _run(p: Prepared, cells: list[Cell], todo: list[Cell], where: str | None,
         tuned: dict | None) -> tuple[int, Path]:
    resolved, bench = p.resolved, p.resolved.bench
    code, rev = code_hash(), git_revision()
    header = {"config": resolved.as_dict(), "code_version": code, "git_revision": rev,
              "packages": package_versions(), "store": p.store.uri, "tracking_uri": redact(p.tracker.tracking_uri)}
    print(json.dumps(header, indent=2), flush=True)
    run_dir = p.out / f"{bench.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=False)
    (run_dir / "config.json").write_text(json.dumps(header, indent=2))
    tuned_methods = set((tuned or {}).get("methods", {}))
    tuned_seed = (tuned or {}).get("tuned_seed")

    def extra(cell: Cell) -> dict:
        mark = cell.method in tuned_methods
        return {"code_version": code, "git_revision": rev, "tuned": mark, "tuned_seed": tuned_seed if mark else None}

    with p.tracker.parent_run(run_dir.name, header, {"benchmark": bench.name, "code_version": code,
                                                     "git_revision": rev, "store": p.store.uri}) as parent:
        progress = Progress(total=len(cells), cached=len(cells) - len(todo))
        print(f"{len(cells)} cells: {len(todo)} to run, {len(cells) - len(todo)} already in {p.store.uri}",
              flush=True)

        def on_result(cell: Cell, result: dict) -> None:
            row = result["row"]  # log_cell itself replaces any earlier run of this cell key
            tags = {k: str(row.get(k)) for k in ("method", "dataset", "model", "regime", "seed", "cell_key",
                                                 "code_version", "stop_reason")}
            ao = result["alpha_omega"]
            if row["status"] == "failed":
                tags["error"] = row["error"]
            p.tracker.log_cell(parent.run_id, cell.key, f"{cell.method}/{cell.forget.label()}/s{cell.seed}",
                               params=_cell_params(cell, resolved), metrics=row, tags=tags,
                               tables={"alpha_omega": ao} if ao else None,
                               figures={"alpha_omega.png": alpha_omega_figure(ao)} if ao else None,
                               status="FINISHED" if row["status"] == "ok" else "FAILED")

        failed_rows: list[dict] = []
        if todo:
            print(f"ray: {where}", flush=True)
            rows = run_grid(resolved, todo, p.store, p.datasets, extra, on_result, progress)
            failed_rows = [r for r in rows if r["status"] == "failed"]

        table = consolidate(p.store, cells, failed_rows)
        table_key = f"tables/{bench.name}.parquet"
        pq.write_table(table, run_dir / "results.parquet")
        p.store.put_bytes(table_key, (run_dir / "results.parquet").read_bytes())
        note = None
        if tuned_methods:
            note = (f"Configurations of {', '.join(sorted(tuned_methods))} come from "
                    f"{tuned.get('source', 'a sweep')}, tuned on seed {tuned_seed}; evaluated on held-out seeds "
                    f"{list(bench.seeds)}.")
        report = write_report(table.to_pandas(), run_dir / "report", title=f"SRAGU benchmark: {bench.name}",
                              tuned_note=note)
        rows = table.to_pylist()
        ok = [r for r in rows if r.get("status") == "ok"]
        parent.artifacts = {"results.parquet": run_dir / "results.parquet", "report.md": report,
                            **{f"report/{f.name}": f for f in sorted((run_dir / "report").glob("*.png"))}}
        parent.metrics = {"cells_ok": len(ok), "cells_failed": len(failed_rows), "cells_cached": progress.cached}
        parent.status = "FAILED" if failed_rows else "FINISHED"
    print(summary_table(rows))
    print(f"\n{len(rows)} cells ({len(ok)} ok, {len(failed_rows)} failed, {progress.cached} cached)\n"
          f"table:  {run_dir / 'results.parquet'}  (and {p.store.uri}/{table_key})\n"
          f"report: {report}\n"
          f"mlflow: mlflow ui --backend-store-uri {redact(p.tracker.tracking_uri)}   (or: make mlflow-ui)")
    return (1 if failed_rows else 0), run_dir


def consolidate(store: Store, cells: list[Cell], failed_rows: list[dict]) -> pa.Table:
    """The grid's table: every finished cell file once, plus this invocation's failed cells."""
    keys = [cell_path(c.key) for c in cells if store.exists(cell_path(c.key))]
    table = store.read_table(keys) if keys else pa.table({})
    if failed_rows:
        failed = pa.Table.from_pylist(failed_rows)
        table = pa.concat_tables([table, failed], promote_options="default") if keys else failed
    return table
