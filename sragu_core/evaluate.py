"""One benchmark cell's evaluation, driven by the metric registry ``METRICS``.

Every metric is registered once, here, with its direction, formula and the views that show it; the
report, the console summary, the tuning objective's choices and ``docs/metrics.md`` are read from this
registry.  Three kinds:

* **model** metrics are a value of one model, computed from its predictions on the splits (accuracies,
  leakage).  They are computed for the unlearned model and, once per forget set, for the gold model
  (:func:`gold_reference`); the gold's value sits beside the method's as ``gold_<name>``.
* **cell** metrics compare the unlearned model with the gold or with θ0 (retrain alignment, gaps,
  stability).
* **pipeline** metrics are recorded around the method by the pipeline (times, memory, RTE); they are
  registered here for their direction and formula only.

Adding a metric = one registered function in this file (plus its test).  The formulas themselves are
the pure functions of :mod:`sragu_core.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from . import metrics as M
from .data import Split
from .registry import Registry
from .spectral import layer_alphas

__all__ = ["CellSplits", "Predictions", "GoldReference", "OriginalFacts", "MetricSpec", "METRICS", "DIRECTIONS",
           "VIEWS", "metrics_in", "predictions", "gold_reference", "original_facts", "evaluate_cell", "gold_distances",
           "model_values", "GOLD_DISTANCES"]

DIRECTIONS = ("lower", "higher", "closer_to_gold", "n/a")
# where a metric is shown: the report's per-regime summary (``summary``), its full tables (``report``),
# its plots (``plot``), the paired sragu − agu comparison (``paired``) and the console table (``console``)
VIEWS = ("summary", "report", "plot", "paired", "console")
KINDS = ("model", "cell", "pipeline")


@dataclass(frozen=True)
class CellSplits:
    """What evaluation sees.  ``class_deletion``: the forget regime deletes whole classes, so accuracy on
    the forgotten classes' unseen test points is reported too.  ``mia_nonmembers``: indices into ``test`` of
    the membership attack's non-members — the forget set's selection rule applied to D_test with θ0
    (:func:`sragu_core.forget.select_forget`); None: a size-matched random sample of D_test."""

    forget: Split
    retain: Split
    test: Split
    val: Split
    class_deletion: bool = False
    mia_nonmembers: torch.Tensor | None = None


@dataclass(frozen=True)
class Predictions:
    """Softmax outputs and per-sample losses of one model on each split (CPU tensors)."""

    probs: dict[str, torch.Tensor]
    losses: dict[str, torch.Tensor]


@dataclass(frozen=True)
class GoldReference:
    """The gold model's predictions and its own model-metric values: shared by every method of a forget set."""

    pred: Predictions
    values: dict[str, float]


@dataclass(frozen=True)
class OriginalFacts:
    """What evaluation needs of θ0 besides its weights, computed once when θ0 is trained."""

    alpha: dict[str, float]
    test_acc: float


@dataclass(frozen=True)
class ModelView:
    """One model's predictions with the splits they were made on (input of a model metric)."""

    pred: Predictions
    splits: CellSplits
    seed: int


@dataclass(frozen=True)
class CellView:
    """Everything a cell metric may compare (input of a cell metric)."""

    unlearned: nn.Module
    original: nn.Module
    original_facts: OriginalFacts
    u: ModelView
    gold: GoldReference
    values: dict[str, float]  # the unlearned model's model-metric values


@dataclass(frozen=True)
class MetricSpec:
    name: str
    direction: str  # one of DIRECTIONS
    formula: str
    kind: str  # one of KINDS
    compute: Callable[..., float | None] | None = None  # None result: does not apply to this cell
    gold_distance: bool = False  # a distance from the gold: an independent retrain's value is the noise floor
    views: frozenset[str] = field(default_factory=frozenset)

    @property
    def gold_pair(self) -> str | None:
        """The column holding the gold model's own value (model metrics only)."""
        return f"gold_{self.name}" if self.kind == "model" else None


METRICS: Registry[MetricSpec] = Registry("metric")


def register_metric(name: str, direction: str, formula: str, *, kind: str = "cell", gold_distance: bool = False,
                    views: tuple[str, ...] = ()) -> Callable:
    """Decorator on ``compute(view) -> float | None`` (a ModelView for model metrics, else a CellView)."""
    if direction not in DIRECTIONS or kind not in KINDS or not set(views) <= set(VIEWS):
        raise ValueError(f"metric {name!r}: direction in {DIRECTIONS}, kind in {KINDS}, views within {VIEWS}")

    def wrap(fn: Callable[..., float | None] | None):
        METRICS.register(name, MetricSpec(name, direction, formula, kind, fn, gold_distance, frozenset(views)))
        return fn
    return wrap


def register_recorded(name: str, direction: str, formula: str, views: tuple[str, ...] = ()) -> None:
    """A metric the pipeline records around the method (no compute function here)."""
    register_metric(name, direction, formula, kind="pipeline", views=views)(None)


def metrics_in(view: str) -> tuple[str, ...]:
    """The metrics shown in ``view``, in registration order (the order tables and plots use)."""
    if view not in VIEWS:
        raise ValueError(f"view {view!r}: one of {VIEWS}")
    return tuple(spec.name for spec in METRICS.values() if view in spec.views)


# ============================================================================ the metrics (registration order
# is the order of columns in every table: accuracies, alignment, leakage, gaps, stability, cost)
def _acc(split: str) -> Callable[[ModelView], float]:
    return lambda v: M.accuracy(v.pred.probs[split], getattr(v.splits, split).y.cpu())


register_metric("forget_acc", "closer_to_gold", "mean[argmax p_u = y] on D_f", kind="model",
                views=("console",))(_acc("forget"))
register_metric("retain_acc", "higher", "mean[argmax p_u = y] on D_r", kind="model")(_acc("retain"))
register_metric("test_acc", "higher", "mean[argmax p_u = y] on D_test", kind="model", views=("console",))(
    _acc("test"))
register_metric("val_acc", "higher", "mean[argmax p_u = y] on D_val", kind="model")(_acc("val"))

_HEADLINE = ("summary", "report", "plot", "paired", "console")
_ALIGN = (  # (name, formula, function, views of the D_f version)
    ("kl_to_gold", "mean KL(p_g || p_u), eps-clamped", M.kl_to_gold, _HEADLINE),
    ("pd", "mean[argmax p_u != argmax p_g]", M.pd, _HEADLINE),
    ("tv", "mean 0.5*||p_u - p_g||_1", M.tv, ("report",)),
    ("js", "mean JS(p_u, p_g), natural log (<= ln 2)", M.js, ("report",)),
)
for _query, _suffix in (("forget", ""), ("test", "_test")):
    for _name, _formula, _fn, _views in _ALIGN:
        register_metric(_name + _suffix, "lower", f"{_formula}, on Q = {'D_f' if _query == 'forget' else 'D_test'}",
                        gold_distance=True, views=_views if _query == "forget" else ())(
            lambda c, fn=_fn, q=_query: fn(c.u.pred.probs[q], c.gold.pred.probs[q]))


@register_metric("mia_auc", "closer_to_gold",
                 "ROC-AUC of -loss, members D_f vs non-members = D_f's selection rule applied to D_test with "
                 "theta0; 0.5 = none", kind="model")
def _mia_auc(v: ModelView) -> float:
    # non-members from D_f's own distribution: against a random test sample, a non-random forget set (a class,
    # θ0's hardest points) is told apart by its selection alone — the gold itself scored 0.045 on a class
    idx = v.splits.mia_nonmembers
    if idx is None:
        idx = M.size_matched(len(v.splits.forget), len(v.splits.test), v.seed)
    return M.mia_auc(v.pred.losses["forget"], v.pred.losses["test"][idx])


@register_metric("mia_efficacy", "closer_to_gold", "SalUn SVC on p[y], fit D_r vs D_test; fraction of D_f non-member",
                 kind="model")
def _mia_efficacy(v: ModelView) -> float:
    p, s = v.pred.probs, v.splits
    return M.mia_efficacy(p["retain"], s.retain.y.cpu(), p["test"], s.test.y.cpu(), p["forget"], s.forget.y.cpu(),
                          seed=v.seed)


def _gap(of: str) -> Callable[[CellView], float]:
    return lambda c: abs(c.values[of] - c.gold.values[of])


register_metric("mia_gap", "lower", "|mia_auc(u) - mia_auc(gold)|", gold_distance=True,
                views=_HEADLINE)(_gap("mia_auc"))
register_metric("forget_acc_gap", "lower", "|forget_acc(u) - forget_acc(gold)|", gold_distance=True,
                views=("summary", "report", "plot"))(_gap("forget_acc"))
register_metric("retain_acc_gap", "lower", "|retain_acc(u) - retain_acc(gold)|", gold_distance=True,
                views=("report", "plot"))(_gap("retain_acc"))
register_metric("test_acc_gap", "lower", "|test_acc(u) - test_acc(gold)|", gold_distance=True,
                views=("summary", "report", "plot"))(_gap("test_acc"))
register_metric("val_acc_gap", "lower", "|val_acc(u) - val_acc(gold)|", gold_distance=True)(_gap("val_acc"))

_AVG_GAP_KEYS = ("forget_acc", "retain_acc", "test_acc", "mia_efficacy")


@register_metric("avg_gap", "lower", "mean |x_u - x_gold| over forget/retain/test acc and mia_efficacy (SalUn)",
                 gold_distance=True, views=("report", "paired", "console"))
def _avg_gap(c: CellView) -> float:
    return M.avg_gap({k: c.values[k] for k in _AVG_GAP_KEYS}, {k: c.gold.values[k] for k in _AVG_GAP_KEYS})


@register_metric("diverged", "lower", "1 if any weight or loss is non-finite else 0")
def _diverged(c: CellView) -> float:
    losses = torch.cat([c.u.pred.losses[s] for s in ("forget", "retain", "test")])
    return float(M.diverged(c.unlearned, losses))


register_metric("original_test_acc", "n/a", "test_acc(theta0), the starting point of test_acc_drop")(
    lambda c: c.original_facts.test_acc)
register_metric("test_acc_drop", "lower", "test_acc(theta0) - test_acc(u)")(
    lambda c: c.original_facts.test_acc - c.values["test_acc"])


def _shifts(c: CellView) -> dict[str, float]:
    return M.layer_relative_shift(_state(c.original), _state(c.unlearned))


register_metric("max_layer_shift", "n/a", "max over parameter tensors of ||theta_u - theta_0|| / ||theta_0||")(
    lambda c: max(_shifts(c).values(), default=0.0))


@register_metric("mean_layer_shift", "n/a", "mean over parameter tensors of ||theta_u - theta_0|| / ||theta_0||")
def _mean_layer_shift(c: CellView) -> float:
    shifts = _shifts(c)
    return sum(shifts.values()) / len(shifts) if shifts else 0.0


@register_metric("mean_alpha_drift", "n/a", "mean over layers of |alpha_l(u) - alpha_l(theta0)|, finite layers only")
def _mean_alpha_drift(c: CellView) -> float:
    after = {r.name: r.alpha for r in layer_alphas(c.unlearned)} if not _diverged(c) else {}
    drift = [abs(v) for v in M.alpha_drift(c.original_facts.alpha, after).values() if math.isfinite(v)]
    return sum(drift) / len(drift) if drift else math.nan


def _class_acc(forgotten: bool) -> Callable[[ModelView], float | None]:
    def compute(v: ModelView) -> float | None:
        if not v.splits.class_deletion:
            return None
        y = v.splits.test.y.cpu()
        in_f = torch.isin(y, torch.tensor(sorted(set(v.splits.forget.y.tolist()))))
        mask = in_f if forgotten else ~in_f
        return M.accuracy(v.pred.probs["test"][mask], y[mask])
    return compute


register_metric("test_acc_forgotten_classes", "closer_to_gold",
                "test_acc on D_test points of the forgotten classes (class deletions only)", kind="model")(
    _class_acc(True))
register_metric("test_acc_other_classes", "higher",
                "test_acc on D_test points of the other classes (class deletions only)", kind="model")(
    _class_acc(False))

register_recorded("rte", "higher", "t_gold / t_method (wall time of retraining over the method's)",
                  views=("summary", "report", "plot", "console"))
register_recorded("method_time_s", "lower", "wall seconds of the unlearning method", views=("console",))
register_recorded("spectral_time_s", "lower", "wall seconds of the spectral (alpha) diagnostics")
register_recorded("peak_mem_mb", "lower", "peak RSS (MiB) of the worker process that ran the method; CUDA: "
                  "allocator peak")
register_recorded("eval_time_s", "n/a", "wall seconds of this evaluation")

# ---------------------------------------------------------------------------- against distributions of retrains
# (docs/reference_metrics.md; computed by the pipeline when gold.k >= 2 and shadow.n >= 2)
GOLD_DISTANCES = tuple(spec.name for spec in METRICS.values() if spec.gold_distance)
for _name in GOLD_DISTANCES:
    register_recorded(f"{_name}_ens", "lower", f"mean over the gold.k independent retrains r_i of {_name}(u, r_i)")
    register_recorded(f"{_name}_ens_sd", "n/a", f"sd over the gold.k retrains r_i of {_name}(u, r_i)")
    for _end, _what in (("lo", "low quantile (gold.floor_quantiles[0])"), ("mean", "mean"),
                        ("hi", "high quantile (gold.floor_quantiles[1])")):
        register_recorded(f"{_name}_floor_{_end}", "n/a",
                          f"noise floor: {_what} of {_name}(r_i, r_j) over pairs i < j of the gold.k retrains")
for _split in ("forget", "retain", "val"):
    register_recorded(f"klom_{_split}", "lower", f"mean over query points of D_{_split[0]} of KL between the margin "
                      "histograms of shadow.n unlearned and gold.k retrained models (KLoM, Georgiev et al. 2024)")
    register_recorded(f"klom_{_split}_hi", "lower", "the shadow.klom_percentile-th percentile over query points "
                      f"of D_{_split[0]} of KLoM")
register_recorded("ulira_auc", "lower", "U-LiRA (Hayes et al. 2024): ROC-AUC of the per-example Gaussian likelihood "
                  "ratio, unlearned vs retrained models, on D_f; 0.5 = indistinguishable")
register_recorded("ulira_tpr_1pct", "lower", "U-LiRA TPR at 1% FPR; 0.01 = chance")
register_recorded("ulira_tpr_01pct", "lower", "U-LiRA TPR at 0.1% FPR; 0.001 = chance")
for _name in ("avg_gap", "js"):
    register_recorded(f"seq_{_name}_max", "lower", f"sequential regimes (<regime>@<T>): the largest {_name} over the T "
                      "requests, each request's model against a retrain without every point removed so far")
    register_recorded(f"seq_{_name}_mean", "lower", f"sequential regimes: the mean {_name} over the T requests "
                      "(per request: seq_t<i>_<metric> columns)")
register_recorded("sequence_time_s", "n/a", "wall seconds of training the T per-request retrains of a sequential "
                  "regime")
register_recorded("ensemble_time_s", "n/a", "wall seconds of training the gold.k reference retrains together")
register_recorded("shadow_time_s", "n/a", "wall seconds of the method on the shadow.n - 1 shadow originals and of "
                  "KLoM / U-LiRA")


# ============================================================================ evaluation
def predictions(model: nn.Module, splits: CellSplits, *, device) -> Predictions:
    probs, losses = {}, {}
    for name in ("forget", "retain", "test", "val"):
        probs[name], losses[name] = M.predict(model, getattr(splits, name), device=device)
    return Predictions(probs, losses)


def _model_values(view: ModelView) -> dict[str, float]:
    out = {}
    for spec in METRICS.values():
        if spec.kind == "model" and (value := spec.compute(view)) is not None:
            out[spec.name] = value
    return out


def gold_reference(gold: nn.Module, splits: CellSplits, *, device, seed: int) -> GoldReference:
    """The gold's predictions and model-metric values (the SVC attack is the costly part): computed once per
    forget set and stored with the gold."""
    pred = predictions(gold, splits, device=device)
    return GoldReference(pred, _model_values(ModelView(pred, splits, seed)))


def original_facts(original: nn.Module, test: Split, *, device) -> OriginalFacts:
    alpha = {r.name: r.alpha for r in layer_alphas(original)}
    return OriginalFacts(alpha, M.accuracy(M.predict(original, test, device=device)[0], test.y.cpu()))


def evaluate_cell(unlearned: nn.Module, original: nn.Module, facts: OriginalFacts, gold: GoldReference,
                  splits: CellSplits, *, device, seed: int) -> dict[str, float]:
    """Every model and cell metric of ``unlearned`` (model metrics with their ``gold_`` pair), in registry order."""
    u = ModelView(predictions(unlearned, splits, device=device), splits, seed)
    values = _model_values(u)
    view = CellView(unlearned, original, facts, u, gold, values)
    row: dict[str, float] = {}
    for spec in METRICS.values():
        if spec.kind == "model" and spec.name in values:
            row[spec.name], row[spec.gold_pair] = values[spec.name], gold.values[spec.name]
        elif spec.kind == "cell" and (value := spec.compute(view)) is not None:
            row[spec.name] = value
    return row


def gold_distances(pred: Predictions, values: dict[str, float], reference: GoldReference, splits: CellSplits, *,
                   seed: int) -> dict[str, float]:
    """The gold-distance metrics (``gold_distance=True``: alignment, gaps, avg_gap) of a model given by its
    predictions and model-metric values, against ``reference`` — one member of a reference ensemble, or
    another member when the ensemble's own pairwise band (the noise floor) is measured.  These metrics read
    predictions and values only, never the weights."""
    view = CellView(None, None, None, ModelView(pred, splits, seed), reference, values)  # type: ignore[arg-type]
    return {spec.name: value for spec in METRICS.values()
            if spec.kind == "cell" and spec.gold_distance and (value := spec.compute(view)) is not None}


def model_values(pred: Predictions, splits: CellSplits, *, seed: int) -> dict[str, float]:
    """Every model metric of one model from its predictions (what :func:`gold_reference` stores for the gold)."""
    return _model_values(ModelView(pred, splits, seed))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.named_parameters()}
