"""MLflow tracking for the benchmark (docs/design.md §8), called from the driver process only.

Layout: one experiment per benchmark, named after it (``sragu-smoke``); one *parent* run per invocation
holding the resolved config (params + ``config.json``), the consolidated Parquet table, the report and
its plots; one *child* run per cell (dataset × model × seed × regime × method) tagged
``mlflow.parentRunId`` so the UI nests it, with the flattened method config as params, the §6 metrics,
tags (method, dataset, model, regime, seed, cell key, code version) and artifacts (α/ω table + plot).

Why only the driver logs: the default backend is one SQLite file, and SQLite takes one writer at a time
(a dozen Ray workers committing at once get "database is locked"); workers may also run on machines that
cannot see the driver's disk or reach the tracking server.  Workers return plain dicts; the driver logs
them here, so MLflow holds exactly what the Parquet store holds.

Rerunning a benchmark never duplicates a cell: :meth:`Tracker.find_cell` looks a cell key up, and
:meth:`Tracker.log_cell` soft-deletes any earlier run of the same key once the new one is written
(the newest result wins; ``mlflow runs restore --run-id ...`` brings an old one back).

A tracking server that fails mid-run never costs a result (:class:`TrackedRun`): HTTP calls are bounded
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` 2, ``MLFLOW_HTTP_REQUEST_TIMEOUT`` 20 s unless set), the first failure
prints one line and stops logging for the rest of the run (results keep going to the store, the run ends
with exit code 1), and every run *reconciles* MLflow from the store first: each finished cell the store
holds and the experiment lacks is logged from its stored row (tag ``sragu.logged_from=store``).  Parent
runs carry their driver's id (``sragu.driver``); a parent left RUNNING by a driver that is gone (crashed,
SIGKILLed, lost its server) is ended ``KILLED`` by the next run.

What the UI opens on (measured on MLflow 3.17): every experiment is tagged a model-training experiment and
described, and carries a saved view (:class:`RunsView`, listed under *Views*) of its cell runs with the headline
metrics as columns; :func:`ui_link` is the link that opens it (``workflowType=machine_learning``: 3.17 opens
on its GenAI overview, with no run in sight, unless the link or the user's last choice says otherwise).  A cell
logs only the config fields that apply to it (:func:`applicable_params`) and floats shown to 6 significant
digits; a Markdown artifact is logged with its image links pointed at the server (:func:`server_image_links`),
since 3.17 shows a relative image link as text.  A rerun that finds its cells cached moves their runs under its
own parent (:meth:`Tracker.adopt_cells`), so the newest parent holds the whole grid.  The view, the link, the
applicable params and the image links are built in :mod:`components.io.mlflow_view`.

Open the UI on the default store (from the repository root)::

    mlflow ui --backend-store-uri sqlite:///runs/mlflow.db --port 5000 --workers 1

then the link :meth:`TrackedRun.ui_hint` prints; or set ``MLFLOW_TRACKING_URI=http://host:5000`` to log to a
server instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NamedTuple

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sragu_core.errors import ConfigError

from .cell_logger import CellJob, CellLogger
from .mlflow_values import MAX_TAG_VAL, as_params, as_tags, clip, flatten, jsonable, split_metrics
from .mlflow_view import (
    CELLS,
    IMAGE,
    KIND,
    NOTE_TAG,
    TRIALS,
    UI_PORT,
    VIEW_TAG,
    RunsView,
    applicable_params,
    server_image_links,
    ui_link,
    view_body,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["CELLS", "GROUP_KEYS", "TRIALS", "RunsView", "Tracker", "ParentRun", "TrackedRun", "alpha_omega_figure",
           "applicable_params", "default_tracking_uri", "redact", "resolve_tracking_uri", "ui_link"]

_PARAMS_PER_BATCH, _METRICS_PER_BATCH = 100, 1000
_STATUSES = ("FINISHED", "FAILED", "KILLED")
_FIGURE_LOCK = threading.Lock()  # one α/ω figure drawn at a time, whichever thread logs
_ENV = "MLFLOW_TRACKING_URI"
# bounded HTTP calls to a tracking server during a run (MLflow's defaults retry for minutes); a user's own
# settings of these variables win
HTTP_BOUNDS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
_MAX_NOTE = 5000  # experiment tags hold at most 5000 characters (run tags 8000)
GROUP_KEYS = ("dataset", "model", "regime", "method")  # a group run's cells: every seed of one method on one regime


def default_tracking_uri(run_root: Path) -> str:
    """``sqlite:///<abs run_root>/mlflow.db`` — MLflow 3.17 refuses the old ``./mlruns`` file store."""
    return f"sqlite:///{Path(run_root).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(run_root: Path) -> str:
    """``$MLFLOW_TRACKING_URI`` when set (a server), else the local SQLite file under ``run_root``."""
    return os.environ.get(_ENV) or default_tracking_uri(run_root)


class CellRunRef(NamedTuple):
    """What a grid needs to know of an existing cell run (:meth:`Tracker.cell_index`)."""

    run_id: str
    status: str
    parent: str | None
    computed_under: bool


@dataclasses.dataclass
class ParentRun:
    """An open parent run: what the body of :meth:`Tracker.parent_run` wants logged when it closes."""

    run_id: str
    artifacts: dict[str, Path] = dataclasses.field(default_factory=dict)
    metrics: dict = dataclasses.field(default_factory=dict)
    status: str = "FINISHED"


class Tracker:
    """One benchmark's experiment on one tracking store; every call is a plain :class:`MlflowClient` call.

    Nothing touches the store until :meth:`check` or :meth:`start_parent`, so a Tracker pointed at an
    unreachable server can be built during config parsing without side effects.
    """

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None = None, *,
                 view: RunsView = CELLS):
        """``artifact_root`` applies to a SQLite backend only; a server keeps its own artifact store.  ``view``: the
        saved view of the runs table the experiment gets and :func:`ui_link` opens (a sweep sets :data:`TRIALS`).

        A ``user:password@`` in a server URI moves to MLflow's basic-auth variables (``MLFLOW_TRACKING_USERNAME``
        / ``_PASSWORD``, unless already set), so the URI that is logged, printed and shown in links is clean."""
        self.tracking_uri, self.experiment = _credentials_to_env(tracking_uri), experiment
        self._sqlite = _sqlite_path(tracking_uri)
        # A server chooses its own artifact store (mlflow-artifacts:/ proxy); a SQLite backend would
        # otherwise put artifacts in ./mlruns of whatever directory the driver was started from.
        root = None
        if self._sqlite:
            root = artifact_root if artifact_root is not None else self._sqlite.parent / "mlartifacts"
        self.artifact_location = Path(root).resolve().as_uri() if root is not None else None
        self._experiment_id: str | None = None
        self.view = view

    @property
    def is_sqlite(self) -> bool:
        """A SQLite file (one writer at a time), not a tracking server."""
        return self._sqlite is not None

    @cached_property
    def client(self) -> MlflowClient:
        if not self._sqlite:
            return MlflowClient(tracking_uri=self.tracking_uri)
        # For SQLite the first request creates and migrates the database file.  Two drivers sharing a new
        # database would race in that migration (measured: "Online migration expected to match one row ...
        # 0 found" in one of them), so the first touch happens under a lock on the database's folder.
        self._sqlite.parent.mkdir(parents=True, exist_ok=True)
        with _folder_lock(self._sqlite.parent):  # MlflowClient() builds the store, migrating the file
            client = MlflowClient(tracking_uri=self.tracking_uri)
            client.search_experiments(max_results=1)
        return client

    # ------------------------------------------------------------------ checks before any work
    def check(self) -> None:
        """Fail in seconds, with one line naming MLFLOW_TRACKING_URI, if the store cannot be used."""
        what = "a writable SQLite file" if self._sqlite else "a reachable MLflow tracking server"
        if self._sqlite and not Path(self._sqlite).exists():
            # a new SQLite store: check its folder (or nearest existing parent) is writable without creating
            # the database, so a run refused by a later preflight check leaves nothing behind.  A database the
            # user named in MLFLOW_TRACKING_URI must sit in an existing folder: a typo creates no directories.
            if os.environ.get(_ENV) == self.tracking_uri and not self._sqlite.parent.is_dir():
                raise ConfigError(_ENV, self.tracking_uri, f"{what} in an existing folder ({self._sqlite.parent} "
                                  "does not exist)")
            existing = Path(self._sqlite).parent
            while not existing.exists() and existing != existing.parent:
                existing = existing.parent
            if not (existing.is_dir() and os.access(existing, os.W_OK)):
                raise ConfigError(_ENV, self.tracking_uri, f"{what} (no writable folder at {existing})")
            return
        try:
            with _fail_fast():
                self.client.search_experiments(max_results=1)
                exp = self.client.get_experiment_by_name(self.experiment)
        except Exception as e:  # noqa: BLE001 — any failure here means "this store is unusable"
            raise ConfigError(_ENV, redact(self.tracking_uri), f"{what} ({_short_reason(e)})") from None
        if exp is not None and exp.lifecycle_stage == "deleted":
            raise ConfigError("experiment", self.experiment,
                              f"an active experiment (it was deleted: `mlflow experiments restore -x "
                              f"{exp.experiment_id}` or pick another benchmark name)")

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                try:
                    exp_id = self.client.create_experiment(self.experiment, artifact_location=self.artifact_location)
                    self._experiment_id = exp_id
                    return exp_id
                except MlflowException:  # another driver created it in between: use theirs
                    exp = self.client.get_experiment_by_name(self.experiment)
                    if exp is None:
                        raise
            if exp.lifecycle_stage == "deleted":
                raise ConfigError("experiment", self.experiment, "an active experiment (restore or rename it)")
            self._experiment_id = exp.experiment_id
        return self._experiment_id

    def prepare_experiment(self) -> None:
        """Set the experiment up for the UI: tagged model training, described (unless it has a description), and
        holding :attr:`view` (rewritten only when its columns or filter changed).  Idempotent; one read, ≤ 3 writes."""
        exp_id = self.experiment_id()
        have = self.client.get_experiment(exp_id).tags
        want = {KIND[0]: KIND[1]}
        if not have.get(NOTE_TAG):
            want[NOTE_TAG] = clip(self.view.description, _MAX_NOTE)
        view_tag, view = VIEW_TAG + self.view.key, self.view.tag_value()
        if view_body(have.get(view_tag)) != view_body(view):
            want[view_tag] = view
        for k, v in want.items():
            if have.get(k) != v:
                self.client.set_experiment_tag(exp_id, k, v)

    def ui_command(self, port: int = UI_PORT) -> str | None:
        """The ``mlflow ui`` command that serves this store on 127.0.0.1:``port``; None for a tracking server."""
        if self.tracking_uri.startswith(("http://", "https://")):
            return None
        return f"mlflow ui --backend-store-uri {redact(self.tracking_uri)} --port {port} --workers 1"

    def ui_hint(self, parent_id: str | None = None, artifact: str | None = None, port: int = UI_PORT) -> str:
        """What to run and open to see this experiment: the ``mlflow ui`` command (local stores), the link to the
        runs view and, given ``parent_id``, to that run (or its ``artifact``).  Makes no request: without a known
        experiment id (tracking failed before it was looked up) it is the command alone."""
        cmd = self.ui_command(port)
        lines = [cmd or f"tracking server {redact(self.tracking_uri)}"]
        if self._experiment_id is not None:
            lines.append(f"  runs:   {ui_link(self.tracking_uri, self._experiment_id, view=self.view, port=port)}")
            if parent_id:
                label = "report" if artifact else "run"
                lines.append(f"  {label + ':':<7} " + ui_link(self.tracking_uri, self._experiment_id, run_id=parent_id,
                                                              artifact=artifact, port=port))
        return "\n".join(lines)

    # ------------------------------------------------------------------ parent run
    def start_parent(self, run_name: str, config: dict, tags: dict) -> str:
        """Create the invocation's run; log the flattened config as params and as ``config.json``.  The experiment
        is prepared for the UI first (:meth:`prepare_experiment`)."""
        flat = as_params(config)  # a bad config fails here, before a run exists
        self.prepare_experiment()
        note = (f"**{run_name}**: running (started {time.strftime('%Y-%m-%d %H:%M:%S')}). Its resolved config is in "
                f"the params and `config.json`; its {self.view.role}s are the child runs.")
        run = self.client.create_run(self.experiment_id(), run_name=run_name,
                                     tags={**as_tags(tags), "sragu.role": "parent", NOTE_TAG: note})
        run_id = run.info.run_id
        with self._fail_run_on_error(run_id):
            self._log_params(run_id, flat)
            self.client.log_dict(run_id, jsonable(config), "config.json")
        return run_id

    def finish_parent(self, parent_id: str, *, artifacts: dict[str, Path] | None = None,
                      metrics: dict | None = None, status: str = "FINISHED") -> None:
        """Log files (key = path inside the run, e.g. ``"plots/alpha.png"``) and summary metrics, then end."""
        _check_status(status)
        missing = [str(p) for p in (artifacts or {}).values() if not Path(p).exists()]
        if missing:  # before logging anything: never a half-logged parent
            raise FileNotFoundError(f"artifacts to log do not exist: {missing}")
        with self._fail_run_on_error(parent_id):
            nums, strings, _ = split_metrics(metrics or {})
            self._log_metrics(parent_id, nums)
            for k, v in strings.items():
                self.client.set_tag(parent_id, k, v)
            report = self._log_artifacts(parent_id, {d: Path(p) for d, p in (artifacts or {}).items()})
            self.client.set_tag(parent_id, NOTE_TAG, _parent_note(status, nums, report))
        self.client.set_terminated(parent_id, status=status)

    @contextmanager
    def parent_run(self, run_name: str, config: dict, tags: dict) -> Iterator[ParentRun]:
        """Open a parent run (benchmark invocation or sweep) and always close it: on a clean exit with the
        artifacts, metrics and status the body set on the yielded :class:`ParentRun`; on an exception as
        FAILED (KILLED for Ctrl-C) with the reason in its ``error`` tag, so no parent stays RUNNING."""
        parent = ParentRun(self.start_parent(run_name, config, tags))
        try:
            yield parent
        except BaseException as e:
            try:
                self.client.set_tag(parent.run_id, "error", clip(f"{type(e).__name__}: {e}", MAX_TAG_VAL))
                status = getattr(e, "run_status", "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
                self.client.set_terminated(parent.run_id, status=status)
            except Exception:  # noqa: BLE001, S110 — the original error is the one to report
                pass
            raise
        self.finish_parent(parent.run_id, artifacts=parent.artifacts, metrics=parent.metrics, status=parent.status)

    # ------------------------------------------------------------------ cells
    def find_cell(self, cell_key: str) -> str | None:
        """The newest active child run of this experiment whose ``sragu.cell_key`` is ``cell_key``."""
        ids = self._cell_runs(cell_key)
        return ids[0] if ids else None

    def log_cell(self, parent_id: str, cell_key: str, run_name: str, params: dict, metrics: dict, tags: dict,
                 tables: dict[str, list[dict]] | None = None, figures: dict[str, Figure] | None = None,
                 status: str = "FINISHED", earlier: list[str] | None = None) -> str:
        """One finished (or failed: ``status="FAILED"`` and an ``error`` tag) cell as a child run.

        Metrics keep only finite numbers (bools as 0/1); strings such as ``stop_reason`` become tags and
        NaN/None are listed in the ``sragu.skipped_metrics`` tag.  Tables are logged as ``<name>.json``
        (a list of row objects, NaN → null), figures as ``<name>.png`` and then closed.  Earlier runs
        of the same cell key are soft-deleted once this one is written: ``earlier`` names them (from
        :meth:`cell_index`, listed once for a whole grid), else they are looked up.

        Three requests without artifacts: the run with its tags, one batch of params and metrics (more only past
        MLflow's per-batch limits), its end.
        """
        try:
            _check_status(status)
            earlier = self._cell_runs(cell_key) if earlier is None else list(earlier)
            model = str(tags.get("model") or "")
            flat = as_params(applicable_params(flatten(params), model=model if model not in ("", "None") else None))
            nums, strings, skipped = split_metrics(metrics)
            run_tags = {**as_tags(strings), **as_tags(tags), "mlflow.parentRunId": parent_id,
                        "sragu.cell_key": cell_key, "sragu.role": "cell"}
            if skipped:
                run_tags["sragu.skipped_metrics"] = ",".join(skipped)
            if earlier:
                run_tags["sragu.replaces"] = ",".join(earlier)
            run = self.client.create_run(self.experiment_id(), run_name=run_name, tags=run_tags)
            run_id = run.info.run_id
            with self._fail_run_on_error(run_id):
                self._log_batch(run_id, flat, nums)
                for name, rows in (tables or {}).items():
                    text = json.dumps(jsonable(rows), indent=1, allow_nan=False)
                    self.client.log_text(run_id, text, name if name.endswith(".json") else f"{name}.json")
                for name, fig in (figures or {}).items():
                    self.client.log_figure(run_id, fig, name if PurePosixPath(name).suffix else f"{name}.png")
            self.client.set_terminated(run_id, status=status)
        finally:
            _close(figures)
        for old in earlier:
            self.client.delete_run(old)
        return run_id

    def log_groups(self, parent_id: str, table: Path, params_of: Callable[[dict], dict],
                   keys: Sequence[str] = GROUP_KEYS) -> int:
        """One child run per group of the consolidated ``table`` (a Parquet file; groups by ``keys``): for a grid too
        large for a run per cell.  Each run holds the group's applicable params (``params_of(first row)``), the
        mean over its ok cells of every numeric column as metrics (``cells_ok``, ``cells_failed``), its coordinates
        as tags, and its rows as ``cells.parquet``; :func:`cells_from_mlflow` reads the cells back.  A few requests
        per group, whatever its size.  Returns how many groups were logged."""
        import pyarrow.parquet as pq

        df = pq.read_table(table).to_pandas()
        if df.empty:
            return 0
        n = 0
        for coords, g in df.groupby(list(keys), sort=False, dropna=False):
            coords = dict(zip(keys, coords))
            ok = g[g["status"] == "ok"] if "status" in g else g
            means = ok.select_dtypes("number").mean(numeric_only=True).to_dict()
            means = {k: v for k, v in means.items() if k not in ("seed",)}
            means.update(cells_ok=len(ok), cells_failed=len(g) - len(ok))
            nums, _, skipped = split_metrics(means)
            model = str(coords.get("model") or "")
            flat = as_params({k: v for k, v in applicable_params(flatten(params_of(g.iloc[0].to_dict())),
                                                                 model=model or None).items() if k != "seed"})
            tags = {**as_tags(coords), "sragu.role": "group", "mlflow.parentRunId": parent_id,
                    "sragu.group": "/".join(str(coords[k]) for k in keys)}
            if skipped:
                tags["sragu.skipped_metrics"] = ",".join(skipped)
            name = f"{coords.get('method')}/{coords.get('regime')}"
            run_id = self.client.create_run(self.experiment_id(), run_name=name, tags=tags).info.run_id
            with self._fail_run_on_error(run_id):
                self._log_batch(run_id, flat, nums)
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "cells.parquet"
                    pq.write_table(pa_table(g), path)
                    self.client.log_artifact(run_id, str(path))
            self.client.set_terminated(run_id, status="FINISHED" if len(ok) == len(g) else "FAILED")
            n += 1
        return n

    def logged_cells(self) -> dict[str, str]:
        """``{cell_key: status}`` of the experiment's active cell runs (the newest run per key)."""
        return {key: runs[0].status for key, runs in self.cell_index().items()}

    def cell_index(self) -> dict[str, list[CellRunRef]]:
        """``{cell_key: [CellRunRef, ...]}`` of the experiment's active cell runs, newest first: one listing
        (1,000 runs a page) that serves reconciliation, replacement and adoption for a whole grid, instead of a
        search per cell."""
        out: dict[str, list[CellRunRef]] = {}
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id()], filter_string="tags.`sragu.role` = 'cell'",
                                           order_by=["attributes.start_time DESC"], max_results=1000,
                                           page_token=token)
            for r in page:
                key = r.data.tags.get("sragu.cell_key")
                if key:
                    t = r.data.tags
                    out.setdefault(key, []).append(CellRunRef(r.info.run_id, r.info.status,
                                                              t.get("mlflow.parentRunId"),
                                                              "sragu.computed_under" in t))
            token = page.token
            if not token:
                return out

    def adopt_cells(self, parent_id: str, keys: Iterable[str], index: dict[str, list[CellRunRef]] | None = None
                    ) -> int:
        """Move the FINISHED cell runs of ``keys`` that hang under another parent under ``parent_id``; how many.

        For a rerun that finds cells cached in the store: without this its parent would have no children and the
        newest invocation would not show the grid it reports.  The run itself is kept (its metrics, artifacts and
        start time); it gains ``sragu.cached=true`` and, the first time it moves, ``sragu.computed_under`` (the
        parent that computed it).  The earlier parent keeps its ``cells_*`` metrics, not these children.
        ``index`` (:meth:`cell_index`) saves listing the runs again."""
        if index is not None:
            moved = 0
            for key in keys:
                runs = [r for r in index.get(key, ()) if r.status == "FINISHED"]
                for r in runs[:1]:
                    if r.parent != parent_id:
                        tags = [RunTag("mlflow.parentRunId", parent_id), RunTag("sragu.cached", "true")]
                        if r.parent and not r.computed_under:
                            tags.append(RunTag("sragu.computed_under", r.parent))
                        self.client.log_batch(r.run_id, tags=tags)
                        moved += 1
            return moved
        wanted, moved, token = set(keys), 0, None
        while wanted:
            page = self.client.search_runs(
                [self.experiment_id()], filter_string="tags.`sragu.role` = 'cell' and attributes.status = 'FINISHED'",
                max_results=1000, page_token=token)
            for r in page:
                t = r.data.tags
                old = t.get("mlflow.parentRunId")
                if t.get("sragu.cell_key") in wanted and old != parent_id:
                    tags = [RunTag("mlflow.parentRunId", parent_id), RunTag("sragu.cached", "true")]
                    if old and "sragu.computed_under" not in t:
                        tags.append(RunTag("sragu.computed_under", old))
                    self.client.log_batch(r.info.run_id, tags=tags)
                    moved += 1
            token = page.token
            if not token:
                break
        return moved

    def end_orphans(self, alive: Callable[[str], bool]) -> list[str]:
        """End ``KILLED`` every RUNNING parent whose driver (tag ``sragu.driver``) is not ``alive``; their ids."""
        runs = self.client.search_runs([self.experiment_id()],
                                       filter_string="tags.`sragu.role` = 'parent' and attributes.status = 'RUNNING'",
                                       max_results=1000)
        ended = []
        for r in runs:
            driver = r.data.tags.get("sragu.driver")
            if driver and not alive(driver):
                self.client.set_tag(r.info.run_id, "error", f"its driver {driver} is gone (crashed or killed); "
                                                            "ended by a later run")
                self.client.set_terminated(r.info.run_id, status="KILLED")
                ended.append(r.info.run_id)
        return ended

    # ------------------------------------------------------------------ helpers
    def _cell_runs(self, cell_key: str) -> list[str]:
        if "'" in cell_key and '"' in cell_key:
            raise ConfigError("cell_key", cell_key, "a key without both ' and \" (MLflow filter strings)")
        quoted = f'"{cell_key}"' if "'" in cell_key else f"'{cell_key}'"
        runs = self.client.search_runs(
            [self.experiment_id()], filter_string=f"tags.`sragu.cell_key` = {quoted} and tags.`sragu.role` = 'cell'",
            order_by=["attributes.start_time DESC"], max_results=100)
        return [r.info.run_id for r in runs]

    def _log_params(self, run_id: str, flat: list[Param]) -> None:
        for i in range(0, len(flat), _PARAMS_PER_BATCH):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=flat[i:i + _PARAMS_PER_BATCH])

    def _log_batch(self, run_id: str, params: list[Param], metrics: dict[str, float]) -> None:
        """Params and metrics in as few ``log_batch`` requests as MLflow's limits allow (per request: 100 params,
        1,000 metrics, 1,000 entries in all) — one for a cell."""
        now = int(time.time() * 1000)
        ms = [Metric(k, v, now, 0) for k, v in metrics.items()]
        ps = list(params)
        while ps or ms:
            p_part = ps[:_PARAMS_PER_BATCH]
            m_part = ms[:_METRICS_PER_BATCH - len(p_part)]
            self.client.log_batch(run_id, params=p_part, metrics=m_part)
            ps, ms = ps[len(p_part):], ms[len(m_part):]

    def _log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        ms = [Metric(k, v, now, 0) for k, v in metrics.items()]
        for i in range(0, len(ms), _METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=ms[i:i + _METRICS_PER_BATCH])

    def _log_artifacts(self, run_id: str, artifacts: dict[str, Path]) -> tuple[str, str] | None:
        """Log ``{path in the run: local file or folder}``; Markdown files last, with their relative image links
        pointed at this server (:func:`server_image_links`; an image no other entry logs is logged beside the
        Markdown).  Returns (path, text) of the first Markdown file logged (the run's note quotes it), else None."""
        logged: dict[Path, str] = {}
        for dest, path in artifacts.items():
            files = [(f, PurePosixPath(dest, f.relative_to(path).as_posix())) for f in sorted(path.rglob("*"))
                     if f.is_file()] if path.is_dir() else [(path, PurePosixPath(dest))]
            logged.update({f.resolve(): str(d) for f, d in files})
        markdown = {d: p for d, p in artifacts.items() if p.is_file() and p.suffix.lower() in (".md", ".markdown")}
        for dest, path in artifacts.items():
            if dest not in markdown:
                self._log_file(run_id, path, PurePosixPath(dest))
        first = None
        scheme = "https" if self.tracking_uri.startswith("https://") else "http"
        for dest, path in markdown.items():
            text = path.read_text(encoding="utf-8")
            first = (dest, text) if first is None else first
            served, extra = server_image_links(text, path, dest, run_id, logged, scheme)
            for at, local in extra.items():
                self._log_file(run_id, local, PurePosixPath(at))
            if served == text:
                self._log_file(run_id, path, PurePosixPath(dest))
            else:
                self.client.log_text(run_id, served, dest)
        return first

    def _log_file(self, run_id: str, path: Path, dest: PurePosixPath) -> None:
        folder = None if str(dest.parent) == "." else str(dest.parent)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), str(dest))
        elif path.name == dest.name:
            self.client.log_artifact(run_id, str(path), folder)
        else:  # log_artifact keeps the local file name; copy so the run shows the requested one
            with tempfile.TemporaryDirectory() as tmp:
                renamed = Path(tmp) / dest.name
                shutil.copyfile(path, renamed)
                self.client.log_artifact(run_id, str(renamed), folder)

    @contextmanager
    def _fail_run_on_error(self, run_id: str) -> Iterator[None]:
        """If logging breaks half-way, the run says FAILED with the reason instead of staying RUNNING."""
        try:
            yield
        except BaseException as e:
            try:
                self.client.set_tag(run_id, "error", clip(f"logging failed: {type(e).__name__}: {e}", MAX_TAG_VAL))
                self.client.set_terminated(run_id, status="FAILED")
            except Exception:  # noqa: BLE001, S110 — the original error is the one to report
                pass
            raise


class TrackedRun:
    """A benchmark invocation's MLflow side, which never fails the run: the parent run and its cells.

    Every call goes through :meth:`_try`: the first exception prints one ``mlflow:`` line and turns tracking
    off for the rest of the run (``self.error`` holds the reason); the store keeps every result and the next
    run logs what MLflow lacks (:meth:`reconcile`).  Used as a context manager: on a clean exit the parent is
    finished with the artifacts, metrics and status set on it; on an exception it is ended FAILED (KILLED
    for Ctrl-C) with the reason, if the server still answers.
    """

    def __init__(self, tracker: Tracker, run_name: str, config: dict, tags: dict, *, stream=None):
        self.tracker, self.stream = tracker, stream or sys.stdout
        if not tracker._sqlite:  # MLflow reads these per request; the process is this run's driver
            for k, v in HTTP_BOUNDS.items():
                os.environ.setdefault(k, v)
        self.run_name, self.config, self.tags = run_name, config, tags
        self.parent = ParentRun("")
        self.error: str | None = None
        self.pending = 0  # cells that could not be logged this run
        self.index: dict[str, list[CellRunRef]] | None = None  # the experiment's cell runs when the run started
        self.logger: CellLogger | None = None
        self.blocked_s = 0.0  # time the caller spent waiting on MLflow (calls made here, and the final drain)

    def _try(self, what: str, fn: Callable[[], Any]) -> Any:
        if self.error is not None:
            return None
        t0 = time.perf_counter()
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 — tracking is best effort; the store holds the results
            self._stopped(f"{what} failed: {_short_reason(e)}")
            return None
        finally:
            self.blocked_s += time.perf_counter() - t0

    def _stopped(self, error: str) -> None:
        if self.error is None:
            self.error = error
            print(f"mlflow: {self.error} at {redact(self.tracker.tracking_uri)}; logging stops for this run, "
                  f"results keep going to the store, and the next run logs what MLflow lacks", file=self.stream,
                  flush=True)

    def __enter__(self) -> TrackedRun:
        run_id = self._try("starting the run", lambda: self.tracker.start_parent(self.run_name, self.config,
                                                                                  self.tags))
        self.parent.run_id = run_id or ""
        return self

    def __exit__(self, tp, e, tb) -> None:
        if not self.parent.run_id or self.error is not None:
            if self.parent.run_id:  # the server failed earlier: say so on the parent if it answers again
                self.tracker_end("FAILED", f"tracking stopped: {self.error}")
            return
        if e is not None:
            status = getattr(e, "run_status", "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
            self.tracker_end(status, f"{tp.__name__}: {e}")
            return
        p = self.parent
        self._try("finishing the run", lambda: self.tracker.finish_parent(p.run_id, artifacts=p.artifacts,
                                                                          metrics=p.metrics, status=p.status))

    def tracker_end(self, status: str, why: str) -> None:
        client = self.tracker.client
        try:
            with _fail_fast():
                client.set_tag(self.parent.run_id, "error", clip(why, MAX_TAG_VAL))
                client.set_terminated(self.parent.run_id, status=status)
        except Exception:  # noqa: BLE001, S110 — the next run ends it (end_orphans)
            pass

    def end_orphans(self, alive: Callable[[str], bool]) -> list[str]:
        return self._try("ending orphaned parent runs", lambda: self.tracker.end_orphans(alive)) or []

    def log_cell(self, cell_key: str, run_name: str, **kw) -> str | None:
        """Log one cell now (the caller waits); its earlier runs come from :attr:`index` when it was listed."""
        if not self.parent.run_id or self.error is not None:
            self.pending += 1
            return None
        if self.index is not None and "earlier" not in kw:
            kw["earlier"] = [r.run_id for r in self.index.get(cell_key, ())]
        run_id = self._try(f"logging cell {cell_key}",
                           lambda: self.tracker.log_cell(self.parent.run_id, cell_key, run_name, **kw))
        if run_id is None:
            self.pending += 1
        return run_id

    def log_job(self, job: CellJob) -> str:
        """Log a :class:`CellJob` (raises on failure: the caller decides what a failure means).  Its α/ω figure is
        drawn here, one at a time (matplotlib's renderer is not thread-safe)."""
        figures = None
        if job.alpha_omega:
            with _FIGURE_LOCK:
                figures = {"alpha_omega.png": alpha_omega_figure(job.alpha_omega)}
        earlier = [r.run_id for r in (self.index or {}).get(job.cell_key, ())] if self.index is not None else None
        return self.tracker.log_cell(self.parent.run_id, job.cell_key, job.run_name, params=job.params,
                                     metrics=job.metrics, tags=job.tags,
                                     tables={"alpha_omega": job.alpha_omega} if job.alpha_omega else None,
                                     figures=figures, status=job.status, earlier=earlier)

    def start_logger(self, rebuild: Callable[[str], CellJob | None], *, threads: int, queue_size: int) -> None:
        """From now on :meth:`submit` logs on ``threads`` background threads (:class:`CellLogger`); cells that do
        not fit the queue are logged later from the store through ``rebuild(key)``."""
        if not self.parent.run_id or self.error is not None:
            return
        self.logger = CellLogger(self.log_job, rebuild, threads=threads, queue_size=queue_size,
                                 on_error=lambda e: self._stopped(f"logging cells failed: {_short_reason(e)}"))

    def submit(self, job: CellJob) -> None:
        """Log ``job`` in the background when :meth:`start_logger` was called, else now (:meth:`log_job`)."""
        if not self.parent.run_id or self.error is not None:
            self.pending += 1
        elif self.logger is not None:
            self.logger.submit(job)
        elif self._try(f"logging cell {job.cell_key}", lambda: self.log_job(job)) is None:
            self.pending += 1

    def drain(self, timeout: float | None) -> int:
        """Wait up to ``timeout`` seconds for the background logging to finish; the cells it did not log are added
        to :attr:`pending` (the next run logs them from the store).  Returns how many."""
        if self.logger is None:
            return 0
        t0 = time.perf_counter()
        left = self.logger.drain(timeout)
        self.blocked_s += time.perf_counter() - t0
        if left and self.error is None:
            self._stopped(f"logging did not finish within tracking.drain_timeout_s={timeout:g} s "
                          f"({self.logger.logged} cells logged, {left} left)")
        self.pending += left
        return left

    def log_groups(self, table: Path, params_of: Callable[[dict], dict]) -> int:
        """One child run per group of the consolidated table (:meth:`Tracker.log_groups`); how many."""
        if not self.parent.run_id or self.error is not None:
            return 0
        return self._try("logging groups", lambda: self.tracker.log_groups(self.parent.run_id, table, params_of)) or 0

    def list_cells(self) -> dict[str, list[CellRunRef]] | None:
        """List the experiment's cell runs once (:meth:`Tracker.cell_index`) into :attr:`index`."""
        self.index = self._try("listing logged cells", self.tracker.cell_index)
        return self.index

    def logged_cells(self) -> dict[str, str] | None:
        index = self.index if self.index is not None else self.list_cells()
        return None if index is None else {k: runs[0].status for k, runs in index.items()}

    def adopt_cells(self, keys: Iterable[str]) -> int:
        """Move the runs of cells this invocation found cached under its parent (:meth:`Tracker.adopt_cells`)."""
        if not self.parent.run_id or self.error is not None:
            return 0
        return self._try("linking cached cells",
                         lambda: self.tracker.adopt_cells(self.parent.run_id, keys, self.index)) or 0

    def ui_hint(self, port: int = UI_PORT) -> str:
        """The command and links that show this invocation (:meth:`Tracker.ui_hint`); the report link when a
        ``report.md`` was logged on the parent."""
        report = "report.md" if "report.md" in self.parent.artifacts and self.error is None else None
        return self.tracker.ui_hint(self.parent.run_id or None, report, port)


def pa_table(df):
    """A pandas frame → an Arrow table without the index."""
    import pyarrow as pa

    return pa.Table.from_pandas(df, preserve_index=False)


def alpha_omega_figure(rows: list[dict]) -> Figure:
    """The per-layer α and step-multiplier figure the report draws (:func:`components.report.plots.
    alpha_omega_figure`: layers labelled by name and shape, unreliable α marked), for a cell's MLflow run."""
    from components.report.plots import alpha_omega_figure as draw

    return draw(rows)


# ---------------------------------------------------------------------- module helpers
@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock (``flock``) on ``folder`` itself: no lock file is left behind."""
    import fcntl

    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (absolute or relative to the cwd), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    raw = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(raw).resolve() if raw and raw != ":memory:" else None


@contextmanager
def _fail_fast() -> Iterator[None]:
    """MLflow retries an unreachable server for minutes by default; a pre-flight check should take seconds."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _credentials_to_env(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    if not parts.scheme.startswith("http") or parts.password is None:
        return uri
    os.environ.setdefault("MLFLOW_TRACKING_USERNAME", urllib.parse.unquote(parts.username or ""))
    os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", urllib.parse.unquote(parts.password))
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


def redact(uri: str) -> str:
    """``http://user:secret@host`` → ``http://user:***@host``: error messages end up in logs."""
    return re.sub(r"//([^:/@]+):[^@/]+@", r"//\1:***@", uri)


def _short_reason(e: BaseException) -> str:
    text = str(e)
    if m := re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text):
        return m.group(1).strip()
    if "timed out" in text.lower() or "timeout" in text.lower():
        return "no answer within 5 s"
    line = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return line[:160] + ("…" if len(line) > 160 else "")


def _check_status(status: str) -> None:
    if status not in _STATUSES:
        raise ConfigError("status", status, f"one of {', '.join(_STATUSES)}")


def _parent_note(status: str, metrics: Mapping[str, float], report: tuple[str, str] | None) -> str:
    """The parent run's description once it ends: status and counts, then the report's opening (its title and
    first section, without images) and where the whole report is."""
    counts = " · ".join(f"{k} {v:g}" for k, v in metrics.items())
    lines = [f"**{status}**" + (f" — {counts}" if counts else "")]
    if report:
        head = re.split(r"\n## ", report[1], maxsplit=1)[0]
        head = "\n".join(ln for ln in head.splitlines() if not IMAGE.search(ln)).strip()
        lines += ["", clip(head, 3000), "", f"The whole report, with its figures: artifact `{report[0]}`."]
    return clip("\n".join(lines), MAX_TAG_VAL)


def _close(figures: Mapping | None) -> None:
    """Close caller-made pyplot figures (pyplot keeps every open one alive); plain Figures need nothing."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        for fig in (figures or {}).values():
            plt.close(fig)
