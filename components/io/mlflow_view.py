"""What MLflow's UI opens on, and what it shows of a run (measured on MLflow 3.17; docs/design.md §8).

- :class:`RunsView`: a saved view of an experiment's runs table (``CELLS`` for a benchmark's cells, ``TRIALS`` for
  a sweep's trials), and :func:`ui_link`, the link that opens it.
- :func:`applicable_params`: a cell's inputs without the config fields that do not apply to it.
- :func:`server_image_links`: a Markdown artifact's image links pointed at the server, so the UI draws them.

:mod:`components.io.tracking` logs with these; they hold no client and make no call to a server.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
import time
import types
import urllib.parse
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["CELLS", "IMAGE", "KIND", "NOTE_TAG", "TRIALS", "UI_PORT", "VIEW_TAG", "RunsView", "applicable_params",
           "server_image_links", "ui_link", "view_body"]

UI_PORT = 5000  # `mlflow ui`'s default port, and the Makefile's `make mlflow-ui`
KIND = ("mlflow.experimentKind", "custom_model_development")  # what MLflow 3.x's UI calls a model-training experiment
_NOTE, _VIEW_TAG = "mlflow.note.content", "mlflow.sharedViewState."
NOTE_TAG, VIEW_TAG = "mlflow.note.content", "mlflow.sharedViewState."


@dataclasses.dataclass(frozen=True)
class RunsView:
    """A saved view of an experiment's runs table: the active runs of one role, with chosen columns.

    MLflow 3.17 opens a runs table with three attribute columns and no metric, and keeps a user's column choice
    in that browser only.  A *shared view* is an experiment tag ``mlflow.sharedViewState.<key>`` whose value
    (``{"name", "createdAt", "state"}``, ``state`` the table's filter, sort and columns as JSON) the UI lists
    under *Views* and applies to a link carrying ``viewStateShareKey=<key>``.  It cannot expand a parent row
    (the UI drops ``runsExpanded`` from shared state), so the view filters on the role: its runs are listed flat.
    """

    key: str
    name: str
    role: str  # the runs' ``sragu.role`` tag
    tags: tuple[str, ...]  # tag columns, in order
    metrics: tuple[str, ...] | None  # metric columns; None: the console's (sragu_core.evaluate.metrics_in)
    description: str  # the experiment's description (set when it has none)

    def columns(self) -> list[str]:
        """Metric columns first (the UI would sort them after the tags, off screen), then the tag columns."""
        metrics = self.metrics
        if metrics is None:
            from sragu_core.evaluate import metrics_in  # the metric registry pulls in torch: only when needed

            metrics = metrics_in("console")
        return [f"metrics.`{m}`" for m in metrics] + [f"tags.`{t}`" for t in self.tags]

    def tag_value(self) -> str:
        cols = self.columns()
        state = {"searchFilter": f"tags.`sragu.role` = '{self.role}'", "orderByKey": "tags.`mlflow.runName`",
                 "orderByAsc": True, "selectedColumns": cols, "columnOrder": cols}
        now = int(time.time() * 1000)
        return json.dumps({"name": self.name, "createdAt": now, "updatedAt": now, "state": json.dumps(state)})


CELLS = RunsView(
    "sragu-cells", "sragu: cells and headline metrics", "cell", ("method", "regime", "model", "dataset", "seed"), None,
    "SRAGU benchmark (docs/design.md §8). Each *parent* run is one invocation: its resolved config (params and "
    "config.json), the consolidated table, and `report.md` with its figures. Each *child* run is one cell "
    "(dataset × model × seed × forget regime × method): the inputs that apply to it as params, every metric, and "
    "SRAGU's α/ω table. One active run per cell: a rerun replaces it, and a cell found cached in the store is moved "
    "under the newest parent (tag `sragu.cached`). The view **sragu: cells and headline metrics** (Views menu) "
    "lists the cells with the console's metrics as columns.")
TRIALS = RunsView(
    "sragu-trials", "sragu: sweep trials", "trial", ("method", "asha_stopped"),
    ("objective", "cells_done", "complete"),
    "SRAGU hyperparameter sweeps (docs/tuning.md). Each *parent* run is one sweep with the tuned file and the best "
    "configuration per method (`best.<method>` tags); each *child* run is one Ray Tune trial named "
    "`<method>-trial-<n>`, with its searched values as params. A trial ASHA stopped early ends KILLED with tag "
    "`asha_stopped=true`. The view **sragu: sweep trials** (Views menu) lists the trials with their objective.")


def ui_link(tracking_uri: str, experiment_id: str, *, run_id: str | None = None, artifact: str | None = None,
            view: RunsView = CELLS, port: int = UI_PORT) -> str:
    """The URL of an experiment's runs (through ``view``), of one run, or of one artifact of a run, in MLflow's UI.

    A server URI links to that server (without any ``user:password@``: the browser asks); any other store (SQLite,
    a database URI) to the ``mlflow ui`` that :meth:`components.io.tracking.Tracker.ui_command` starts on
    127.0.0.1:``port``.
    ``workflowType=machine_learning`` makes MLflow 3.17 open its model-training pages rather than its GenAI overview
    (its default, remembered per browser)."""
    parts = urllib.parse.urlsplit(tracking_uri)
    if parts.scheme in ("http", "https"):
        host = parts.netloc.rpartition("@")[2]
        base = urllib.parse.urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
    else:
        base = f"http://127.0.0.1:{port}"
    page = f"{base}/#/experiments/{experiment_id}"
    if run_id is None:
        return f"{page}/runs?workflowType=machine_learning&viewStateShareKey={view.key}"
    tail = f"/artifacts/{urllib.parse.quote(artifact)}" if artifact else ""
    return f"{page}/runs/{run_id}{tail}?workflowType=machine_learning"


def applicable_params(flat: Mapping[str, Any], model: str | None = None) -> dict[str, Any]:
    """A cell's flattened inputs without the config fields that do not apply to it: of ``forget.*`` only those its
    regime (``forget.regime``) reads, and ``steps``; of ``model.*`` only those the builder of ``model`` (else
    ``model.name``) reads, and ``model.name`` set to that model.  Every other key is kept.

    Which fields a regime or model reads is taken from its registered functions' code (:func:`_fields_read`), so a
    new regime or architecture needs no table here: on the registered ones this gives random → ``fraction``,
    class → ``classes``, memorised → ``fraction``, ``mem_models``, ``mem_subset``; mlp → ``mlp_hidden``,
    cnn_small → ``cnn_channels``, ``cnn_fc``.  An unknown regime or model keeps all its fields."""
    out = dict(flat)
    regime = out.get("forget.regime")
    if regime is not None:
        used = _regime_fields(str(regime))
        if used is not None:
            out = {k: v for k, v in out.items() if not k.startswith("forget.") or k[len("forget."):] in used}
    name = model or out.get("model.name")
    if name is not None and any(k.startswith("model.") for k in out):
        used = _model_fields(str(name))
        if used is not None:
            out = {k: v for k, v in out.items() if not k.startswith("model.") or k[len("model."):] in used}
        out["model.name"] = name
    return out


@cache
def _regime_fields(regime: str) -> frozenset[str] | None:
    from sragu_core.forget import REGIMES, ForgetConfig

    if regime not in REGIMES:
        return None
    spec, fields = REGIMES[regime], frozenset(f.name for f in dataclasses.fields(ForgetConfig))
    return frozenset({"regime", "steps"} | _fields_read([spec.select, spec.parse, spec.label, spec.alter,
                                                         spec.nonmembers], fields))


@cache
def _model_fields(model: str) -> frozenset[str] | None:
    from sragu_core.models import MODELS, ModelConfig

    if model not in MODELS:
        return None
    fields = frozenset(f.name for f in dataclasses.fields(ModelConfig))
    return frozenset({"name"} | _fields_read([MODELS[model]], fields))


def _fields_read(fns: Iterable[Any], fields: frozenset[str], depth: int = 3) -> set[str]:
    """The names in ``fields`` that ``fns`` mention: as an attribute (``cfg.fraction``) or a string constant
    (``{"copies": ...}`` in a parser, ``("mem_models", "k")`` in a label), in their nested functions, lambdas and
    closures, and in the ``sragu_core`` functions they call, ``depth`` calls deep.  Read from the code objects,
    not run: over-inclusive at worst (a field name used for something else), which logs one param too many."""
    seen: set[types.CodeType] = set()
    found: set[str] = set()

    def visit_fn(fn: Any, level: int) -> None:
        if not isinstance(fn, types.FunctionType):
            return
        visit(fn.__code__, fn.__globals__, level)
        for cell in fn.__closure__ or ():
            try:
                visit_fn(cell.cell_contents, level)
            except ValueError:  # an empty cell
                continue

    def visit(code: types.CodeType, glb: dict, level: int) -> None:
        if code in seen:
            return
        seen.add(code)
        found.update(fields.intersection(code.co_names))
        consts = list(code.co_consts)
        while consts:
            c = consts.pop()
            if isinstance(c, str) and c in fields:
                found.add(c)
            elif isinstance(c, tuple):
                consts.extend(c)
            elif isinstance(c, types.CodeType):
                visit(c, glb, level)
        if level < depth:
            for n in code.co_names:
                f = glb.get(n)
                if isinstance(f, types.FunctionType) and f.__module__.partition(".")[0] == "sragu_core":
                    visit_fn(f, level + 1)

    for fn in fns:
        visit_fn(fn, 0)
    return found


IMAGE = re.compile(r'!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)(?P<title>\s+"[^"]*")?\)')


def server_image_links(text: str, md: Path, dest: str, run_id: str, logged: dict[Path, str],
                        scheme: str = "http") -> tuple[str, dict[str, Path]]:
    """``text`` (the Markdown file ``md``, logged at ``dest`` in run ``run_id``) with each relative image link to an
    existing file pointed at the server's ``get-artifact`` endpoint; and ``{path in the run: file}`` for linked
    images ``logged`` (local file → path in the run) does not hold, to be logged beside ``dest``.

    Why: MLflow 3.17's Markdown viewer prints an image whose link has no scheme as text (``[alt](fig.png)``), and
    an image's URL must name the run.  ``http:get-artifact?path=…&run_uuid=…`` has a scheme, so it is drawn, and
    a browser resolves it against the page (same scheme: a relative reference, WHATWG URL), so it works on any
    host, port or path prefix the UI is served under — over ``scheme`` (https for an https server)."""
    extra: dict[str, Path] = {}
    folder = posixpath.dirname(dest)

    def point(m: re.Match) -> str:
        src = m.group("src")
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", src) or src.startswith(("/", "#")):
            return m.group(0)  # absolute, data: or an anchor: the viewer draws it (or not) as it is
        local = (md.parent / urllib.parse.unquote(src.split("#")[0].split("?")[0])).resolve()
        if not local.is_file():
            return m.group(0)
        at = logged.get(local)
        if at is None:
            at = posixpath.normpath(posixpath.join(folder, src))
            if at.startswith(".."):  # outside the Markdown's folder in the run: beside it
                at = posixpath.join(folder, local.name)
            logged[local], extra[at] = at, local
        query = urllib.parse.urlencode({"path": at, "run_uuid": run_id})
        return f"![{m.group('alt')}]({scheme}:get-artifact?{query}{m.group('title') or ''})"

    return IMAGE.sub(point, text), extra


def view_body(value: str | None) -> Any:
    """A saved view's content without its timestamps (so an unchanged view is not rewritten every run)."""
    try:
        v = json.loads(value or "")
        return (v.get("name"), v.get("state"))
    except (ValueError, AttributeError):
        return None
