"""Ray Tune search of unlearning hyperparameters with one protocol for every method (SPEC §7).

* **Spaces come from the methods' typed configs.**  A config field declares its range once, as
  ``field(default=…, metadata={"search": …})``: ``("float", lo, hi)``, ``("log", lo, hi)``,
  ``("int", lo, hi)`` (inclusive) or ``("choice",)`` (every value of the field's ``Literal`` type, or
  ``("choice", [values])``).  ``--space sragu.tau=0.5:3`` narrows or adds a range for one run and is
  validated against the field's type before Ray starts.
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
  artifacts (``components.tasks``), built once for the tuning seed and shared with every trial through
  the object store (``tune.with_parameters``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_type_hints

import torch

from sragu_core.config import choices, override, parse_value
from sragu_core.errors import ConfigError, check
from sragu_core.methods import METHODS
from sragu_core.metrics import accuracy, js, kl_to_gold, pd, predict, tv

from .presets import Resolved, TaskResources

__all__ = ["TuneSettings", "SearchDim", "search_space", "parse_space_override", "objective_of", "OBJECTIVES",
           "load_tuned", "apply_tuned", "TUNED_FORMAT"]

OBJECTIVES = {"kl_to_gold": kl_to_gold, "pd": pd, "tv": tv, "js": js}
TUNED_FORMAT = "sragu-tuned/1"


@dataclass(frozen=True)
class TuneSettings:
    methods: tuple[str, ...] = ("sragu", "agu")
    trials: int = 16  # per method: every method gets the same budget
    tuning_seed: int = 1000  # not among any preset's evaluation seeds
    objective: Literal["kl_to_gold", "pd", "tv", "js"] = "kl_to_gold"
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
            check(m not in ("retrain", "retrain_indep"), "tune.methods", m, "an unlearning method (not a gold)")
        check(len(self.methods) >= 1, "tune.methods", self.methods, "one or more methods")
        check(self.trials >= 1, "tune.trials", self.trials, "an integer >= 1")
        check(self.penalty >= 0, "tune.penalty", self.penalty, "a number >= 0")
        check(0 <= self.drop_tolerance < 1, "tune.drop_tolerance", self.drop_tolerance, "a number in [0, 1)")
        check(self.max_concurrent >= 1, "tune.max_concurrent", self.max_concurrent, "an integer >= 1")
        check(self.grace_period >= 1, "tune.grace_period", self.grace_period, "an integer >= 1")
        check(self.reduction_factor >= 2, "tune.reduction_factor", self.reduction_factor, "an integer >= 2")


@dataclass(frozen=True)
class SearchDim:
    """One searched field: ``kind`` in float | log | int | choice."""

    kind: str
    low: float | None = None
    high: float | None = None
    values: tuple = ()

    def to_tune(self):
        from ray import tune

        if self.kind == "float":
            return tune.uniform(self.low, self.high)
        if self.kind == "log":
            return tune.loguniform(self.low, self.high)
        if self.kind == "int":
            return tune.randint(int(self.low), int(self.high) + 1)
        return tune.choice(list(self.values))


def _dim(key: str, spec: tuple, tp: Any) -> SearchDim:
    kind = spec[0]
    if kind == "choice":
        values = tuple(spec[1]) if len(spec) > 1 else choices(tp)
        check(bool(values), key, spec, "a non-empty list of choices")
        return SearchDim("choice", values=tuple(parse_value(key, v, tp) for v in values))
    check(kind in ("float", "log", "int") and len(spec) == 3, key, spec, "(float|log|int, low, high) or (choice, ...)")
    number = int if kind == "int" else float
    low, high = parse_value(key, spec[1], number), parse_value(key, spec[2], number)
    raw = f"{spec[1]}:{spec[2]}"  # as the user wrote it
    check(low < high, key, raw, "a non-empty range low < high")
    check(kind != "log" or low > 0, key, raw, "a log range with low > 0")
    return SearchDim(kind, low, high)


def parse_space_override(key: str, text: str) -> tuple[str, str, tuple]:
    """``("sragu.tau", "0.5:3")`` → (method, field, spec).  Forms: ``lo:hi``, ``log:lo:hi``, ``int:lo:hi``,
    ``a,b,c`` (choices).  Unknown methods or fields and malformed ranges are ConfigErrors."""
    method, _, name = key.partition(".")
    check(method in METHODS, "--space", key, f"<method>.<field> with method one of {METHODS.names()}")
    cls = METHODS[method].config
    hints = get_type_hints(cls)
    check(name in hints, "--space", key, f"a field of {cls.__name__}: {sorted(hints)}")
    parts = text.split(":")
    if len(parts) == 2:
        spec = ("int" if hints[name] is int else "float", parts[0], parts[1])
    elif len(parts) == 3 and parts[0] in ("log", "int", "float"):
        spec = (parts[0], parts[1], parts[2])
    elif len(parts) == 1 and "," in text or choices(hints[name]) or hints[name] is bool:
        spec = ("choice", [v for v in text.split(",") if v])
    else:
        raise ConfigError(f"--space {key}", text, "lo:hi, log:lo:hi, int:lo:hi or a,b,c")
    _dim(key, spec, hints[name])  # validate now, before Ray starts
    return method, name, spec


def search_space(method: str, overrides: dict[str, tuple] | None = None) -> dict[str, SearchDim]:
    """The method's searched fields, from ``metadata["search"]`` of its config, plus ``overrides``."""
    cls = METHODS[method].config
    hints = get_type_hints(cls)
    specs = {f.name: f.metadata["search"] for f in dataclasses.fields(cls) if "search" in f.metadata}
    specs.update(overrides or {})
    return {name: _dim(f"{method}.{name}", spec, hints[name]) for name, spec in specs.items()}


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


def load_tuned(path: str | Path) -> dict:
    """Read and validate a tuned-config file; one ConfigError line when it is not one."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError("--tuned", str(path), f"a readable tuned-config JSON file ({type(e).__name__})") from None
    check(isinstance(doc, dict) and doc.get("format") == TUNED_FORMAT, "--tuned", str(path),
          f"a file written by pipelines/tune.py (format {TUNED_FORMAT})")
    check(isinstance(doc.get("tuned_seed"), int), "--tuned", str(path), "a file with an integer tuned_seed")
    for m in doc.get("methods", {}):
        check(m in METHODS, "--tuned", m, f"methods among {METHODS.names()}")
    return doc


def apply_tuned(resolved: Resolved, doc: dict) -> Resolved:
    """Freeze the tuned configs into the method configs and keep only held-out seeds."""
    methods = dict(resolved.methods)
    for m, entry in doc["methods"].items():
        methods[m] = override(methods[m], dict(entry["config"]), prefix=m)
    held_out = tuple(s for s in resolved.bench.seeds if s != doc["tuned_seed"])
    check(bool(held_out), "seeds", resolved.bench.seeds, f"seeds other than the tuning seed {doc['tuned_seed']}")
    return Resolved(dataclasses.replace(resolved.bench, seeds=held_out), methods)
