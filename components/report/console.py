"""The console's view of a finished run: per (dataset, model, regime), every method's mean ± CI half-width.

Each column's header carries the metric's registered direction (``sragu_core.evaluate.METRICS``): ↓ lower is
better, ↑ higher is better, ≈ closer to the gold retrain's value is better (a ``(gold)`` row shows that value
for the metrics that have one).  The best mean of each column among the methods is marked ``*`` (ties at the
printed precision all are); the noise floor (``retrain_indep``, an independent retrain, the yardstick rather
than a contender) and metrics without a better direction are not marked.  ``†`` marks a method run with a
tuned configuration (the rows' ``tuned`` column), as in the Markdown report.
"""

from __future__ import annotations

import math

import pandas as pd

from sragu_core.evaluate import METRICS, metrics_in

from .markdown import DAGGER
from .tables import CONTROLS, direction, summary

__all__ = ["ARROWS", "BEST_MARK", "CONSOLE_METRICS", "summary_table"]

CONSOLE_METRICS = metrics_in("console")
ARROWS = {"lower": "↓", "higher": "↑", "closer_to_gold": "≈", "n/a": ""}
BEST_MARK = "*"
_DIGITS = 3
_W = 17  # a column: "0.123±0.045*" and its header "forget_acc ≈"


def _gold_pair(metric: str) -> str | None:
    return METRICS[metric].gold_pair if metric in METRICS else None


def _best(group: pd.DataFrame, metric: str) -> set:
    """Index labels of ``group``'s rows holding the best mean of ``metric`` (at the printed precision)."""
    way = direction(metric)
    rows = group[~group["method"].isin(CONTROLS)]  # the no-op and the noise floor are yardsticks, not entrants
    if way == "lower":
        score = rows[f"{metric}_mean"]
    elif way == "higher":
        score = -rows[f"{metric}_mean"]
    elif way == "closer_to_gold" and f"gold_{metric}_mean" in rows:
        score = (rows[f"{metric}_mean"] - rows[f"gold_{metric}_mean"]).abs()
    else:
        return set()
    score = score.round(_DIGITS).dropna()
    return set(score.index[score == score.min()]) if len(score) else set()


def _value(mean: float, lo: float, hi: float, best: bool) -> str:
    if not math.isfinite(mean):
        return "—"
    half = (hi - lo) / 2 if math.isfinite(lo) and math.isfinite(hi) else math.nan
    return f"{mean:.{_DIGITS}f}" + (f"±{half:.{_DIGITS}f}" if half > 0 else "") + (BEST_MARK if best else " ")


def summary_table(rows: pd.DataFrame | list[dict], cols: tuple[str, ...] = CONSOLE_METRICS) -> str:
    """Console view of :func:`components.report.summary`: per (dataset, model, regime), every method's mean
    ± half-width of its 95% CI across seeds, with direction arrows, best-per-column and tuned marks (module
    docstring), and a legend under the last block."""
    pairs = [p for c in cols if (p := _gold_pair(c))]
    table = summary(rows, metrics=(*cols, *pairs)) if len(rows) else None
    if table is None or table.empty:
        return "(no finished cells)"
    header = "".join(f"{c} {ARROWS[direction(c)]} ".rjust(_W) for c in cols)
    blocks = []
    for (ds, model, regime), group in table.groupby(["dataset", "model", "regime"], sort=False):
        best = {c: _best(group, c) for c in cols}
        lines = [f"{ds}/{model}/{regime}".ljust(34) + header]
        for i, r in group.iterrows():
            name = f"  {r['method']}{DAGGER if r['tuned'] else ''}"
            lines.append(name.ljust(34) + "".join(
                _value(r[f"{c}_mean"], r[f"{c}_lo"], r[f"{c}_hi"], i in best[c]).rjust(_W) for c in cols))
        gold = {c: group[f"{_gold_pair(c)}_mean"].mean() for c in cols if _gold_pair(c) in pairs}
        if any(math.isfinite(v) for v in gold.values()):
            lines.append("  (gold)".ljust(34) + "".join(
                (f"{gold[c]:.{_DIGITS}f} " if math.isfinite(gold.get(c, math.nan)) else "").rjust(_W)
                for c in cols))
        blocks.append("\n".join(line.rstrip() for line in lines))
    legend = ["mean±half-width of the 95% CI across seeds; ↓ lower is better, ↑ higher is better, ≈ closer to "
              "the gold retrain's value (row (gold)) is better", f"{BEST_MARK} best of the methods in its column "
              f"(the controls {', '.join(CONTROLS)} are not ranked)"]
    if table["tuned"].any():
        legend[-1] += f"; {DAGGER} tuned configuration"
    return "\n\n".join(blocks) + "\n\n" + "\n".join(legend)
