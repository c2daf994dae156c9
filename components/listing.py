"""What the command line can take and what a run would do: ``--list`` and ``--dry-run``, read from the registries.

    python pipelines/benchmark.py --list methods      # every registered method and the line its module opens with
    python pipelines/benchmark.py --list regimes      # every forget regime: syntax, example, what it selects
    python pipelines/benchmark.py --list metrics      # every metric: direction, kind, formula
    python pipelines/benchmark.py --list presets      # every preset: grid size (full and smoke), what it measures
    python pipelines/benchmark.py --list keys --preset smoke   # every --set key: type, value in that preset
    python pipelines/benchmark.py --preset default --dry-run   # the grid, cached vs to-do cells, where outputs go

Importing this module is free (the standard library only), so ``--help`` can name the presets without loading
torch: :func:`preset_names` reads them from ``components/presets.py``'s source (a test checks it against
``PRESETS``).  Everything else imports the registries, which load torch (~2 s); nothing here imports Ray or
MLflow except :func:`dry_run`, which names the MLflow destination exactly as a run would.
"""

from __future__ import annotations

import ast
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

__all__ = ["LISTINGS", "TUNE_LISTINGS", "preset_names", "grid_size", "listing", "set_keys", "config_keys", "dry_run"]

LISTINGS = ("methods", "regimes", "metrics", "presets", "keys")
TUNE_LISTINGS = (*LISTINGS, "tune")  # pipelines/tune.py also lists its --tune settings
_PRESETS_SOURCE = Path(__file__).resolve().parent / "presets.py"


def preset_names() -> list[str]:
    """The names registered in ``PRESETS``, read from the source (``Preset("name", ...)`` in its definition)
    without importing it; [] if the definition no longer has that shape (help then points to ``--list``)."""
    try:
        tree = ast.parse(_PRESETS_SOURCE.read_text())
    except (OSError, SyntaxError):
        return []
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(
            node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == "PRESETS":
            return [c.args[0].value for c in ast.walk(node) if isinstance(c, ast.Call)
                    and getattr(c.func, "id", None) == "Preset" and c.args and isinstance(c.args[0], ast.Constant)]
    return []


# ---------------------------------------------------------------------------------------------------- listings
def listing(what: str, *, preset: str, smoke: bool = False, overrides: dict[str, str] | None = None) -> str:
    """The text of ``--list <what>``; ``keys`` shows the values of ``preset`` (its smoke variant, overrides
    applied).  An unknown ``what`` is a ConfigError naming ``--list``."""
    from sragu_core.errors import ConfigError

    if what not in TUNE_LISTINGS:
        raise ConfigError("--list", what, f"one of {', '.join(TUNE_LISTINGS)}")
    if what == "tune":
        from .execution.tune_run import TuneSettings

        return _table(["key", "type", "default"], config_keys(TuneSettings()),
                      "--tune keys of pipelines/tune.py (--tune KEY=VALUE; docs/tuning.md)")
    if what == "keys":
        from .presets import resolve

        resolved = resolve(preset, overrides, smoke=smoke)
        title = f"--set keys: type, and the value in preset {preset}{' (smoke variant)' if smoke else ''}"
        return _table(["key", "type", "value"], set_keys(resolved), title)
    return {"methods": _methods, "regimes": _regimes, "metrics": _metrics, "presets": _presets}[what]()


def _methods() -> str:
    import sys

    from sragu_core.methods import METHODS

    rows = []
    for name in METHODS:
        spec = METHODS[name]
        role = "gold retrain" if spec.retrains else "control (no-op)" if not spec.moves else "unlearning"
        rows.append([name, role, _gist(sys.modules[spec.fn.__module__].__doc__)])
    return _table(["method", "role", "what (sragu_core/methods/<method>.py)"], rows,
                  "methods (--set methods=[a,b]; per-method keys: --list keys)")


def _regimes() -> str:
    from sragu_core.forget import REGIMES

    rows = []
    for name in REGIMES:
        spec = REGIMES[name]
        scored = "θ0" if spec.needs_model or spec.needs_trainer else "alters data" if spec.alter else "-"
        rows.append([spec.syntax, spec.example, scored, _gist(spec.select.__doc__)])
    return _table(["syntax", "example", "needs", "selects"], rows,
                  "forget regimes (--set regimes=[random:0.1,class:3]; <regime>@<T>: the same set deleted in T "
                  "successive requests, e.g. random:0.2@4)")


def _metrics() -> str:
    from sragu_core.evaluate import METRICS

    rows = [[s.name, s.direction, s.kind, s.formula] for s in METRICS.values()]
    return _table(["metric", "better", "kind", "formula"], rows, "metrics (columns of the results table; "
                  "docs/metrics.md)")


def _presets() -> str:
    from .presets import PRESETS

    rows = []
    for name, p in PRESETS.items():
        full, small = p.config(), p.config(smoke=True)
        rows.append([name, str(grid_size(full)), str(grid_size(small)), _gist(p.build.__doc__)])
    return _table(["preset", "cells", "smoke", "what"], rows,
                  "presets (--preset NAME [--smoke]; runtimes: README, preset table)")


def set_keys(resolved: Any) -> list[list[str]]:
    """``[key, type, value]`` for every dotted key ``--set`` takes: the benchmark's fields (nested ones dotted),
    then ``<method>.<field>`` for every registered method.  Keys the config refuses (``train.epochs``,
    ``model.name``, a gold retrain's recipe fields) are left out."""
    from sragu_core.methods import METHODS
    from sragu_core.training import TrainConfig

    recipe = {f.name for f in dataclasses.fields(TrainConfig)}
    rows = [r for r in config_keys(resolved.bench) if r[0] not in ("train.epochs", "model.name")]
    for name in METHODS:
        skip = recipe if METHODS[name].retrains else set()
        rows += [r for r in config_keys(resolved.methods[name], name) if r[0].partition(".")[2] not in skip]
    return rows


def config_keys(cfg: Any, prefix: str = "") -> list[list[str]]:
    """``[dotted key, type, value]`` of every leaf field of frozen dataclass ``cfg``, in declaration order."""
    hints = typing.get_type_hints(type(cfg))
    rows = []
    for f in dataclasses.fields(cfg):
        key, value = f"{prefix}.{f.name}" if prefix else f.name, getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            rows += config_keys(value, key)
        else:
            rows.append([key, _type_name(hints[f.name]), _show(value)])
    return rows


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return "|".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        named = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is tuple:
        return f"list of {_type_name(args[0]) if args else 'str'}"
    return getattr(tp, "__name__", str(tp))


def _show(value: Any) -> str:
    """A value as ``--set`` takes it back: [a,b], null, true."""
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(_show(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _gist(doc: str | None, width: int = 110) -> str:
    """A docstring's first paragraph on one line, cut at ``width``."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split()).replace("``", "")
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _table(header: list[str], rows: list[list[str]], title: str) -> str:
    """Left-aligned columns, the last one unpadded."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    line = lambda r: "  ".join([*(c.ljust(w) for c, w in zip(r, widths)), r[-1]]).rstrip()  # noqa: E731
    return "\n".join([f"# {title}", line(header), *(line(r) for r in rows)])


def grid_size(bench: Any) -> int:
    """Cells of a BenchmarkConfig's grid: datasets × models × seeds × regimes × methods."""
    return len(bench.datasets) * len(bench.models) * len(bench.seeds) * len(bench.regimes) * len(bench.methods)


# ---------------------------------------------------------------------------------------------------- dry run
def dry_run(resolved: Any, *, out: Path, store_uri: str, preset_given: bool) -> str:
    """What a run of ``resolved`` would do: the grid, the work it plans, which cells the store already holds
    (listed once) and where outputs would go.  Writes nothing, starts nothing; an S3 store is only probed."""
    from .execution.plan import plan_cells
    from .execution.tasks import cell_path
    from .io.store import Store
    from .io.tracking import redact, resolve_tracking_uri

    bench = resolved.bench
    store = Store(store_uri)
    if store.kind == "s3":
        store.check()  # reachable and the bucket exists: a listing of a wrong endpoint would retry for minutes
    present = set(store.list("cells/"))
    cells = plan_cells(resolved)
    cached = sum(cell_path(c.key) in present for c in cells)
    dims = [("dataset", bench.datasets), ("model", bench.models), ("seed", bench.seeds),
            ("regime", bench.regimes), ("method", bench.methods)]
    upstream = [("original", {c.original.key for c in cells}), ("forget set", {c.forget_set.key for c in cells}),
                ("gold", {c.gold.key for c in cells}),
                ("gold ensemble", {c.ensemble.key for c in cells if c.ensemble}),
                ("shadow set", {c.shadow.key for c in cells if c.shadow}),
                ("request sequence", {c.sequence.key for c in cells if c.sequence})]
    lines = [f"dry run of {bench.name}{'' if preset_given else ' (no --preset given: the default)'}: "
             "nothing started, nothing written",
             "grid: " + " × ".join(f"{len(v)} {k}{'s' if len(v) != 1 else ''}" for k, v in dims)
             + f" = {len(cells)} cells",
             *(f"  {k + 's:':9} {', '.join(map(str, v))}" for k, v in dims),
             "builds: " + ", ".join(f"{len(keys)} {what}{'s' if len(keys) != 1 else ''}"
                                   for what, keys in upstream if keys) + " (each reused if already in the store)",
             f"cells: {cached} already in the store, {len(cells) - cached} to run",
             f"store:  {store.uri}  (cells/<key>.parquet, tables/{bench.name}.parquet)",
             f"run:    {out}/{bench.name}-<time>/  (config.json, results.parquet, report/)",
             f"mlflow: {redact(resolve_tracking_uri(out))}  experiment sragu-{bench.name}",
             "not checked: datasets, device, Ray, MLflow (a run checks them before any work starts)"]
    return "\n".join(lines)
