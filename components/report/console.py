"""The console's view of a finished run: per (dataset, model, regime), every method's mean ± CI half-width."""

from __future__ import annotations

import math

from sragu_core.evaluate import metrics_in

from .tables import summary

__all__ = ["CONSOLE_METRICS", "summary_table"]

CONSOLE_METRICS = metrics_in("console")


def summary_table(rows: list[dict], cols: tuple[str, ...] = CONSOLE_METRICS) -> str:
    """Console view of :func:`components.report.summary`: per (dataset, model, regime), every method's mean
    ± half-width of its 95% CI across seeds."""
    table = summary(rows, metrics=cols) if rows else None
    if table is None or table.empty:
        return "(no finished cells)"
    blocks = []
    for (ds, model, regime), group in table.groupby(["dataset", "model", "regime"], sort=False):
        lines = [f"{ds}/{model}/{regime}".ljust(34) + "".join(c.rjust(15) for c in cols)]
        for _, r in group.iterrows():
            cells = []
            for c in cols:
                mean, lo, hi = r[f"{c}_mean"], r[f"{c}_lo"], r[f"{c}_hi"]
                half = (hi - lo) / 2 if math.isfinite(lo) and math.isfinite(hi) else math.nan
                cells.append((f"{mean:.3f}" + (f"±{half:.3f}" if half > 0 else "")).rjust(15))
            lines.append(f"  {r['method']}".ljust(34) + "".join(cells))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
