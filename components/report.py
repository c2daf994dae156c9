"""Benchmark report (SPEC §6, §7): summary tables, noise floor, deletion sweep, paired tests, plots, Markdown.

Input is the results table, one row per cell (a DataFrame or a list of dicts): ``dataset, model, seed,
regime, method, status`` are required; ``regime_family, forget_fraction, error, tuned, tuned_seed`` and the
metric columns of ``sragu_core.metrics.METRIC_INFO`` are used when present. Statistics are over the
``status == "ok"`` rows only; across seeds every interval is ``mean_ci`` (Student t, 95%). A nan metric value
is dropped from that metric's interval (so the interval may rest on fewer than ``n`` seeds); ``inf`` is kept.

Numbers in ``report.md`` are formatted by ``fmt``: integral values as integers, all others with 4 significant
digits (``f"{x:.4g}"``); an interval is ``"mean [lo, hi]"``, or just ``"mean"`` when it is undefined (n = 1).
Every number in the report is computed from the table passed in. Plots are drawn on ``matplotlib.figure.Figure``
objects with the Agg canvas; they are never registered with pyplot, so there is no global figure state to close.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from sragu_core.errors import ConfigError, check
from sragu_core.metrics import METRIC_INFO, mean_ci

__all__ = [
    "PAIRED_METRICS",
    "PLOT_METRICS",
    "SUMMARY_METRICS",
    "deletion_sweep",
    "fmt",
    "fmt_ci",
    "noise_floor",
    "paired_comparison",
    "read_results",
    "summary",
    "to_markdown_table",
    "write_report",
]

REQUIRED = ("dataset", "model", "seed", "regime", "method", "status")
CELL = ("dataset", "model", "regime", "method")
SUMMARY_METRICS = ("kl_to_gold", "pd", "mia_gap", "forget_acc_gap", "test_acc_gap", "rte")
PAIRED_METRICS = ("kl_to_gold", "pd", "mia_gap", "avg_gap")
PLOT_METRICS = ("kl_to_gold", "pd", "mia_gap", "forget_acc_gap", "retain_acc_gap", "test_acc_gap", "rte")
REPORT_METRICS = ("kl_to_gold", "pd", "tv", "js", "mia_gap", "forget_acc_gap", "retain_acc_gap", "test_acc_gap",
                  "avg_gap", "rte")
# Distances of the unlearned model to its gold: an independent retrain (retrain_indep) is not at 0 on these,
# and its value is the noise floor below which a method is indistinguishable from retraining.
GOLD_DISTANCES = ("kl_to_gold", "pd", "tv", "js", "mia_gap", "forget_acc_gap", "retain_acc_gap", "test_acc_gap",
                  "avg_gap")
FLOOR_METHOD = "retrain_indep"
DAGGER = "†"
_ARROW = {"lower": " ↓", "higher": " ↑"}
_DIRECTION_TEXT = {"lower": "lower is better", "higher": "higher is better",
                   "closer_to_gold": "closer to the gold (retrained) model's value is better",
                   "n/a": "descriptive, no better direction"}
_NAN = float("nan")


# --------------------------------------------------------------------------------------------- input
def _frame(df: pd.DataFrame | Iterable[Mapping]) -> pd.DataFrame:
    """A copy with the required columns checked and ``tuned`` (False), ``tuned_seed``, ``error`` filled in."""
    d = df.copy() if isinstance(df, pd.DataFrame) else pd.DataFrame(list(df))
    missing = [c for c in REQUIRED if c not in d.columns]
    check(not missing, "table", f"missing columns {missing}", f"a results table with columns {list(REQUIRED)}")
    d["tuned"] = pd.Series([bool(v) if v is not None and v == v else False
                            for v in d.get("tuned", [False] * len(d))], index=d.index, dtype=bool)
    d["tuned_seed"] = pd.to_numeric(d["tuned_seed"], errors="coerce") if "tuned_seed" in d else _NAN
    d["error"] = d["error"].fillna("").astype(str) if "error" in d else ""
    seeds = pd.to_numeric(d["seed"], errors="coerce")
    if len(d) and seeds.notna().all() and (seeds % 1 == 0).all():
        d["seed"] = seeds.astype("int64")
    for c in ("dataset", "model", "regime", "method", "status"):
        d[c] = d[c].astype(str)
    return d


def _values(g: pd.DataFrame, col: str) -> np.ndarray:
    """The non-nan values of ``col`` as float64 (empty when the column is absent)."""
    if col not in g:
        return np.empty(0)
    v = pd.to_numeric(g[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return v[~np.isnan(v)]


def _ci_cols(prefix: str, v: np.ndarray) -> dict[str, float]:
    mean, _, lo, hi = mean_ci(v) if v.size else (_NAN,) * 4
    return {f"{prefix}_mean": mean, f"{prefix}_lo": lo, f"{prefix}_hi": hi}


def _ci_names(prefixes: Iterable[str]) -> list[str]:
    return [f"{p}_{s}" for p in prefixes for s in ("mean", "lo", "hi")]


def _direction(metric: str) -> str:
    return METRIC_INFO.get(metric, ("n/a", ""))[0]


# --------------------------------------------------------------------------------------------- statistics
def summary(df: pd.DataFrame | Iterable[Mapping], metrics: Sequence[str] = SUMMARY_METRICS) -> pd.DataFrame:
    """One row per (dataset, model, regime, method) with ok rows: n (distinct seeds), tuned (any row tuned),
    and ``<m>_mean, <m>_lo, <m>_hi`` (95% t interval across seeds) for each metric (nan when absent)."""
    d = _frame(df)
    ok = d[d["status"] == "ok"]
    rows = []
    for key, g in ok.groupby(list(CELL), sort=False, dropna=False):
        row = dict(zip(CELL, key), n=int(g["seed"].nunique()), tuned=bool(g["tuned"].any()))
        for m in metrics:
            row.update(_ci_cols(m, _values(g, m)))
        rows.append(row)
    return pd.DataFrame(rows, columns=[*CELL, "n", "tuned", *_ci_names(metrics)])


def noise_floor(summary_df: pd.DataFrame) -> pd.DataFrame:
    """The ``retrain_indep`` rows of a ``summary`` per (dataset, model, regime): the distance-to-gold noise floor."""
    floor = summary_df[summary_df["method"] == FLOOR_METHOD]
    return floor.drop(columns=["method", "tuned"], errors="ignore").reset_index(drop=True)


def deletion_sweep(df: pd.DataFrame | Iterable[Mapping]) -> pd.DataFrame:
    """Random-deletion regimes: per (dataset, model, method, forget_fraction), n and the mean and 95% CI of
    kl_to_gold, test_acc_drop and the diverged rate (mean of the 0/1 flag over ok rows; failed cells are not
    counted). The diverged-rate interval is the Wilson score interval of k diverged in n (scipy ``binomtest``):
    a t interval on 0/1 flags leaves [0, 1] and collapses to a point when no seed diverged. Rows are in order of
    first appearance of (dataset, model, method), by forget_fraction within. Empty when there is no
    ``regime_family == "random"`` row with a forget_fraction."""
    d = _frame(df)
    cols = ["dataset", "model", "method", "forget_fraction", "n",
            *_ci_names(("kl_to_gold", "test_acc_drop", "diverged_rate"))]
    if "regime_family" not in d or "forget_fraction" not in d:
        return pd.DataFrame(columns=cols)
    d["forget_fraction"] = pd.to_numeric(d["forget_fraction"], errors="coerce")
    ok = d[(d["status"] == "ok") & (d["regime_family"] == "random") & d["forget_fraction"].notna()]
    rows = []
    for key, g in ok.groupby(["dataset", "model", "method", "forget_fraction"], sort=False):
        row = dict(zip(("dataset", "model", "method", "forget_fraction"), key), n=int(g["seed"].nunique()))
        row.update(_ci_cols("kl_to_gold", _values(g, "kl_to_gold")))
        row.update(_ci_cols("test_acc_drop", _values(g, "test_acc_drop")))
        flags = _values(g, "diverged") != 0
        if flags.size:
            ci = stats.binomtest(int(flags.sum()), flags.size).proportion_ci(0.95, method="wilson")
            row.update(diverged_rate_mean=float(flags.mean()), diverged_rate_lo=ci.low, diverged_rate_hi=ci.high)
        else:
            row.update(_ci_cols("diverged_rate", flags))
        rows.append(row)
    out = pd.DataFrame(rows, columns=cols)
    order = out.groupby(["dataset", "model", "method"], sort=False).ngroup()
    return out.assign(_o=order).sort_values(["_o", "forget_fraction"], kind="stable").drop(columns="_o") \
        .reset_index(drop=True)


def paired_comparison(df: pd.DataFrame | Iterable[Mapping], a: str = "sragu", b: str = "agu",
                      metrics: Sequence[str] = PAIRED_METRICS) -> pd.DataFrame:
    """Method ``a`` vs ``b`` paired on seed, per (dataset, model, regime, metric) where both were run.

    Pairs are the seeds where both are ok and the metric is not nan (duplicate rows of a seed are averaged).
    ``mean_diff, lo, hi``: mean of a − b and its 95% t interval (``mean_ci``; nan for n_pairs < 2).
    ``wilcoxon_p``: ``scipy.stats.wilcoxon`` (two-sided, zero differences dropped); nan when n_pairs < 2 or every
    difference is zero (scipy would return 1.0 from an empty rank sum). ``sign_p``: ``scipy.stats.binomtest`` of
    the number of positive differences among the non-zero ones (p = ½); nan when none is non-zero.
    ``better``: the method whose mean is better by the metric's direction (METRIC_INFO), "tie" for a zero mean
    difference, "n/a" for metrics with no better direction; ``ci_excludes_0``: the interval excludes zero.
    """
    d = _frame(df)
    d = d[d["method"].isin([a, b])]
    rows = []
    for key, g in d.groupby(["dataset", "model", "regime"], sort=False):
        if set(g["method"]) != {a, b}:
            continue
        ok = g[g["status"] == "ok"]
        for m in metrics:
            by = {}
            for name in (a, b):
                s = ok[ok["method"] == name]
                by[name] = (pd.to_numeric(s[m], errors="coerce") if m in s else pd.Series(_NAN, index=s.index))
                by[name] = by[name].groupby(s["seed"]).mean()
            both = pd.concat([by[a].rename("a"), by[b].rename("b")], axis=1, join="inner").dropna()
            diff = (both["a"] - both["b"]).to_numpy(dtype=np.float64)
            mean, _, lo, hi = mean_ci(diff) if diff.size else (_NAN,) * 4
            nonzero = diff[diff != 0]
            with warnings.catch_warnings():  # tiny samples: scipy warns about its normal approximation
                warnings.simplefilter("ignore")
                p_w = float(stats.wilcoxon(diff).pvalue) if diff.size >= 2 and nonzero.size else _NAN
            p_s = float(stats.binomtest(int((nonzero > 0).sum()), nonzero.size).pvalue) if nonzero.size else _NAN
            rows.append({**dict(zip(("dataset", "model", "regime"), key)), "metric": m, "n_pairs": int(diff.size),
                         "mean_diff": mean, "lo": lo, "hi": hi, "wilcoxon_p": p_w, "sign_p": p_s,
                         "better": _better(mean, _direction(m), a, b), "ci_excludes_0": bool(lo > 0 or hi < 0)})
    return pd.DataFrame(rows, columns=["dataset", "model", "regime", "metric", "n_pairs", "mean_diff", "lo", "hi",
                                       "wilcoxon_p", "sign_p", "better", "ci_excludes_0"])


def _better(mean_diff: float, direction: str, a: str, b: str) -> str:
    if direction not in ("lower", "higher"):
        return "n/a"
    if not mean_diff == mean_diff:
        return ""
    if mean_diff == 0:
        return "tie"
    return a if (mean_diff < 0) == (direction == "lower") else b


# --------------------------------------------------------------------------------------------- formatting
def fmt(x: object) -> str:
    """Integral numbers as integers, other floats with 4 significant digits, nan as "nan", None as ""."""
    if x is None:
        return ""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isnan(x):
            return "nan"
        if math.isfinite(x) and x.is_integer() and abs(x) < 1e15:
            return str(int(x))
        return f"{x:.4g}"
    return str(x)


def fmt_ci(mean: float, lo: float, hi: float) -> str:
    """``"mean [lo, hi]"``, or ``"mean"`` when the interval is undefined (nan)."""
    if lo != lo or hi != hi:
        return fmt(mean)
    return f"{fmt(mean)} [{fmt(lo)}, {fmt(hi)}]"


def to_markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-Markdown pipe table without ``tabulate`` (not installed here): cells via ``fmt``, ``|`` escaped,
    newlines flattened; numeric columns right-aligned, their nan shown as "nan"; a missing text value is blank."""
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]

    def cell(v: object, is_numeric: bool) -> str:
        if v is None or v is pd.NA or (not is_numeric and isinstance(v, float) and math.isnan(v)):
            return ""
        return fmt(v).replace("|", "\\|").replace("\r", " ").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c, False) for c in df.columns) + " |",
             "| " + " | ".join("---:" if n else "---" for n in numeric) + " |"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v, n) for v, n in zip(row, numeric)) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- reading
def read_results(path: str | Path) -> pd.DataFrame:
    """The results table from one Parquet file, or every ``*.parquet`` in a folder (not recursive) concatenated
    with the union of their columns (pyarrow's permissive promotion: a column absent from a file is null)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        check(bool(files), "--table", str(path), "a Parquet file or a folder holding *.parquet files")
    else:
        check(path.is_file(), "--table", str(path), "an existing Parquet file or folder of *.parquet files")
        files = [path]
    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(f))
        except (pa.ArrowException, OSError) as e:
            raise ConfigError("--table", str(f), f"a readable Parquet file ({type(e).__name__}: {e})") from None
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowException, TypeError) as e:
        raise ConfigError("--table", str(path), f"Parquet files with compatible column types ({e})") from None
    return table.to_pandas()


# --------------------------------------------------------------------------------------------- plots
def _slug(*parts: object) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(str(p) for p in parts)).strip("-")


def _yerr(mean: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    err = np.vstack([mean - lo, hi - mean])
    return np.where(np.isfinite(err) & (err >= 0), err, 0.0)


def _plot_regime(path: Path, title: str, rows: pd.DataFrame, labels: list[str], floor: pd.Series | None,
                 metrics: Sequence[str]) -> None:
    """One panel per metric: each method's mean with its 95% CI; the retrain_indep floor as a line and band."""
    from matplotlib.figure import Figure

    ncols = min(4, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig = Figure(figsize=(3.4 * ncols, 3.0 * nrows), dpi=100)
    # fixed margins: a layout engine doubles the drawing time, which is most of the report's runtime
    fig.subplots_adjust(left=0.06, right=0.98, top=1 - 0.7 / (3.0 * nrows), bottom=0.9 / (3.0 * nrows),
                        wspace=0.3, hspace=0.9)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    x = np.arange(len(rows))
    for ax, m in zip(axes, metrics):
        mean, lo, hi = (rows[f"{m}_{s}"].to_numpy(dtype=np.float64) for s in ("mean", "lo", "hi"))
        ax.errorbar(x, np.where(np.isfinite(mean), mean, np.nan), yerr=_yerr(mean, lo, hi), fmt="o", capsize=3)
        if floor is not None and m in GOLD_DISTANCES and np.isfinite(floor[f"{m}_mean"]):
            ax.axhline(floor[f"{m}_mean"], color="grey", ls="--", lw=1)
            if np.isfinite(floor[f"{m}_lo"]) and np.isfinite(floor[f"{m}_hi"]):
                ax.axhspan(floor[f"{m}_lo"], floor[f"{m}_hi"], color="grey", alpha=0.2, lw=0)
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{m} ({_direction(m)})", fontsize=9)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle(f"{title}: mean and 95% CI across seeds; grey dashed line and band: {FLOOR_METHOD} "
                 "noise floor (mean, 95% CI)", fontsize=10)
    fig.savefig(path)


def _plot_sweep(path: Path, title: str, rows: pd.DataFrame, label: dict[str, str]) -> None:
    """kl_to_gold, test_acc_drop and diverged rate against forget_fraction, one line (and CI band) per method."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.3), dpi=100)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.84, bottom=0.15, wspace=0.25)
    axes = fig.subplots(1, 3)
    for ax, m in zip(axes, ("kl_to_gold", "test_acc_drop", "diverged_rate")):
        for method, g in rows.groupby("method", sort=False):
            x = g["forget_fraction"].to_numpy(dtype=np.float64)
            mean, lo, hi = (g[f"{m}_{s}"].to_numpy(dtype=np.float64) for s in ("mean", "lo", "hi"))
            (line,) = ax.plot(x, np.where(np.isfinite(mean), mean, np.nan), marker="o", label=label[method])
            band = np.isfinite(lo) & np.isfinite(hi)
            if band.any():
                ax.fill_between(x[band], lo[band], hi[band], color=line.get_color(), alpha=0.15, lw=0)
        ax.set_xlabel("forget_fraction")
        ax.set_title(f"{m} (lower)", fontsize=9)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{title}: random deletions, mean and 95% CI across seeds", fontsize=10)
    fig.savefig(path)


# --------------------------------------------------------------------------------------------- report
def _ci_table(rows: pd.DataFrame, metrics: Sequence[str], lead: dict[str, list]) -> pd.DataFrame:
    cols = dict(lead)
    for m in metrics:
        cols[m + _ARROW.get(_direction(m), "")] = [fmt_ci(*r) for r in rows[_ci_names([m])].to_numpy()]
    return pd.DataFrame(cols)


def _listing(values: Iterable[object]) -> str:
    return ", ".join(fmt(v) for v in dict.fromkeys(values)) or "none"


def write_report(df: pd.DataFrame | Iterable[Mapping], out_dir: Path, title: str,
                 tuned_note: str | None = None) -> Path:
    """Write ``report.md`` and its PNG plots into ``out_dir``; return the path of ``report.md``.

    Sections: overview, metric definitions and directions, tuning (when any row is tuned or a note is given;
    tuned methods carry a † everywhere), per-regime summary tables with plots, the retrain_indep noise floor,
    the random-deletion sweep, the paired sragu − agu comparison, and the failed cells (when any).
    ``report.md`` is written last, through a temporary file, so a crash never leaves a half-written report.
    """
    d = _frame(df)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ok, failed = d[d["status"] == "ok"], d[d["status"] != "ok"]
    metrics = [m for m in REPORT_METRICS if _values(ok, m).size]
    summ = summary(d, metrics)
    floor = noise_floor(summ)
    sweep = deletion_sweep(d)
    paired = paired_comparison(d)
    tuned = d[d["tuned"]]
    marked = set(zip(tuned["dataset"], tuned["model"], tuned["method"]))

    def lab(ds: str, mo: str, me: str) -> str:
        return me + DAGGER if (ds, mo, me) in marked else me

    counts = ", ".join(f"{n} {st}" for st, n in d["status"].value_counts(sort=False).items()) or "none"
    md = [f"# {title}", "",
          f"{len(d)} cells: {counts}. Datasets: {_listing(d['dataset'])}. "
          f"Models: {_listing(d['model'])}. Regimes: {_listing(d['regime'])}. Methods: {_listing(d['method'])}. "
          f"Seeds: {_listing(sorted(d['seed'].unique()))}.", "",
          "Intervals are 95% Student-t confidence intervals across seeds, written `mean [lo, hi]` (just `mean` "
          "for a single seed); statistics use the ok cells only.", "", "## Metrics", ""]
    described = dict.fromkeys([*metrics, *(["test_acc_drop", "diverged"] if len(sweep) else []),
                               *(paired["metric"] if len(paired) else [])])
    for m in described:
        direction, text = METRIC_INFO.get(m, ("n/a", "no description in METRIC_INFO"))
        md.append(f"- `{m}`: {text}; {_DIRECTION_TEXT.get(direction, direction)}.")

    if len(tuned) or tuned_note:
        md += ["", "## Tuning", ""]
        if len(tuned):
            md.append(f"Methods marked {DAGGER} had their configuration tuned (column `tuned`), on the seed in "
                      "`tuned_seed`, and frozen for the evaluation seeds (SPEC §7).")
            md.append("")
            rows = []
            for (ds, mo, me), g in tuned.groupby(["dataset", "model", "method"], sort=False):
                tseeds = sorted(int(s) for s in g["tuned_seed"].dropna().unique())
                evaluated = sorted(ok[(ok["dataset"] == ds) & (ok["model"] == mo) & (ok["method"] == me)]["seed"]
                                   .unique())
                overlap = sorted(set(tseeds) & set(evaluated))
                rows.append({"dataset": ds, "model": mo, "method": lab(ds, mo, me),
                             "tuned on seed": _listing(tseeds) if tseeds else "unknown",
                             "evaluation seeds": _listing(evaluated),
                             "note": f"tuning seed {_listing(overlap)} is also evaluated" if overlap else ""})
            md.append(to_markdown_table(pd.DataFrame(rows)))
        if tuned_note:
            md += ["", tuned_note]

    md += ["", "## Summary per regime", ""]
    if summ.empty:
        md.append("No ok cells.")
    plot_metrics = [m for m in PLOT_METRICS if m in metrics]
    fig_no = 0
    for (ds, mo, rg), rows in summ.groupby(["dataset", "model", "regime"], sort=False):
        md += [f"### {ds} / {mo} / {rg}", ""]
        cells = ok[(ok["dataset"] == ds) & (ok["model"] == mo) & (ok["regime"] == rg)]
        facts = [f"`{c}` = {_listing(sorted(cells[c].dropna().unique()))}"
                 for c in ("regime_family", "forget_fraction", "forget_size") if c in cells and cells[c].notna().any()]
        if facts:
            md += ["; ".join(facts) + ".", ""]
        labels = [lab(ds, mo, me) for me in rows["method"]]
        md.append(to_markdown_table(_ci_table(rows, metrics, {"method": labels, "n": list(rows["n"])})))
        if plot_metrics:
            fig_no += 1
            name = f"fig{fig_no:02d}_{_slug(ds, mo, rg)}.png"
            fl = floor[(floor["dataset"] == ds) & (floor["model"] == mo) & (floor["regime"] == rg)]
            _plot_regime(out_dir / name, f"{ds} / {mo} / {rg}", rows, labels,
                         fl.iloc[0] if len(fl) else None, plot_metrics)
            md += ["", f"![{ds} / {mo} / {rg}]({name})"]
        md.append("")

    floor_metrics = [m for m in metrics if m in GOLD_DISTANCES]
    md += ["## Noise floor", "",
           f"`{FLOOR_METHOD}` is a second retrain on the retain set, scored against the gold like any method: "
           "its distance to the gold is the floor below which a method cannot be told apart from retraining "
           "(grey line and band in the plots).", ""]
    if len(floor) and floor_metrics:
        md.append(to_markdown_table(_ci_table(floor, floor_metrics, {
            "dataset": list(floor["dataset"]), "model": list(floor["model"]), "regime": list(floor["regime"]),
            "n": list(floor["n"])})))
    else:
        md.append(f"No ok `{FLOOR_METHOD}` cells, so no noise floor.")

    if len(sweep):
        md += ["", "## Deletion-size sweep (random regimes)", "",
               "Stability under growing random deletions; `diverged_rate` is the fraction of ok cells that "
               "diverged, with a 95% Wilson score interval.", ""]
        labels = [lab(ds, mo, me) for ds, mo, me in zip(sweep["dataset"], sweep["model"], sweep["method"])]
        md.append(to_markdown_table(_ci_table(sweep, ("kl_to_gold", "test_acc_drop", "diverged_rate"), {
            "dataset": list(sweep["dataset"]), "model": list(sweep["model"]), "method": labels,
            "forget_fraction": list(sweep["forget_fraction"]), "n": list(sweep["n"])})))
        for (ds, mo), rows in sweep.groupby(["dataset", "model"], sort=False):
            fig_no += 1
            name = f"fig{fig_no:02d}_sweep_{_slug(ds, mo)}.png"
            _plot_sweep(out_dir / name, f"{ds} / {mo}", rows, {me: lab(ds, mo, me) for me in rows["method"]})
            md += ["", f"![sweep {ds} / {mo}]({name})"]

    md += ["", "## Paired comparison: sragu − agu", ""]
    if len(paired):
        md += ["Pairs are seeds where both methods are ok. Difference = sragu − agu; `better` names the method "
               "whose mean is better by the metric's direction (for a lower-is-better metric a negative difference "
               "favours sragu), `CI excludes 0` whether the 95% t interval of the difference excludes zero. Wilcoxon "
               "signed-rank p (zero differences dropped) is "
               "nan for fewer than 2 pairs or all-zero differences; the sign-test p is a binomial test of the "
               "positive differences among the non-zero ones.", ""]
        md.append(to_markdown_table(pd.DataFrame({
            "dataset": paired["dataset"], "model": paired["model"], "regime": paired["regime"],
            "metric": paired["metric"], "n_pairs": paired["n_pairs"],
            "sragu − agu": [fmt_ci(*r) for r in paired[["mean_diff", "lo", "hi"]].to_numpy()],
            "Wilcoxon p": paired["wilcoxon_p"], "sign-test p": paired["sign_p"],
            "better": [lab(ds, mo, me) if me in ("sragu", "agu") else me
                       for ds, mo, me in zip(paired["dataset"], paired["model"], paired["better"])],
            "CI excludes 0": paired["ci_excludes_0"]})))
    else:
        md.append("No (dataset, model, regime) has both sragu and agu cells.")

    if len(failed):
        md += ["", "## Failed cells", ""]
        errors = [(e.strip().splitlines() or [""])[0][:200] for e in failed["error"]]
        md.append(to_markdown_table(pd.DataFrame({
            "dataset": list(failed["dataset"]), "model": list(failed["model"]), "regime": list(failed["regime"]),
            "method": [lab(ds, mo, me) for ds, mo, me in zip(failed["dataset"], failed["model"], failed["method"])],
            "seed": list(failed["seed"]), "status": list(failed["status"]), "error": errors})))

    report = out_dir / "report.md"
    tmp = out_dir / ".report.md.tmp"
    tmp.write_text("\n".join(md) + "\n", encoding="utf-8")
    os.replace(tmp, report)
    return report
