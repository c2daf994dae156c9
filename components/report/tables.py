"""The report's statistics: per-cell summaries across seeds, the noise floor, the deletion sweep, paired tests.

Input is the results table, one row per cell (a DataFrame or a list of dicts): ``dataset, model, seed,
regime, method, status`` are required; ``regime_family, forget_fraction, error, tuned, tuned_seed`` and the
registered metric columns (``sragu_core.evaluate.METRICS``) are used when present. Statistics are over the
``status == "ok"`` rows only; across seeds every interval is ``mean_ci`` (Student t, 95%). A nan metric value
is dropped from that metric's interval (so the interval may rest on fewer than ``n`` seeds); ``inf`` is kept.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from sragu_core.errors import ConfigError, check
from sragu_core.evaluate import METRICS, metrics_in
from sragu_core.metrics import mean_ci

__all__ = ["REQUIRED", "CELL", "FLOOR_METHOD", "CONTROLS", "GOLD_ROW", "HEADLINE", "HeadlineColumn", "SUMMARY_METRICS",
           "PAIRED_METRICS", "PLOT_METRICS", "REPORT_METRICS", "GOLD_DISTANCES", "summary", "noise_floor",
           "ensemble_floor", "family_means", "deletion_sweep", "headline", "paired_comparison", "read_results",
           "direction"]

REQUIRED = ("dataset", "model", "seed", "regime", "method", "status")
CELL = ("dataset", "model", "regime", "method")
# views of the metric registry: which metrics each part of the report shows, in registration order
SUMMARY_METRICS = metrics_in("summary")
PAIRED_METRICS = metrics_in("paired")
PLOT_METRICS = metrics_in("plot")
REPORT_METRICS = metrics_in("report")
# Distances of the unlearned model to its gold: an independent retrain (retrain_indep) is not at 0 on these,
# and its value is the noise floor below which a method is indistinguishable from retraining.
GOLD_DISTANCES = tuple(s.name for s in METRICS.values() if s.gold_distance)
FLOOR_METHOD = "retrain_indep"
# the controls: the no-op (θ0 itself) and an independent retrain. They are reference points, never "the best method".
CONTROLS = ("original", FLOOR_METHOD)
FLOOR_ENDS = ("lo", "mean", "hi")  # ``<m>_floor_<end>``: the reference ensemble's own band (docs/reference_metrics.md)
_NAN = float("nan")


def direction(metric: str) -> str:
    """The registered direction of ``metric`` ("n/a" for an unregistered column)."""
    return METRICS[metric].direction if metric in METRICS else "n/a"

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



# --------------------------------------------------------------------------------------------- statistics
def summary(df: pd.DataFrame | Iterable[Mapping], metrics: Sequence[str] = SUMMARY_METRICS) -> pd.DataFrame:
    """One row per (dataset, model, regime, method) with ok rows: n (distinct seeds), tuned (any row tuned),
    and ``<m>_mean, <m>_lo, <m>_hi`` (95% t interval across seeds) for each metric (nan when absent), then
    ``<m>_median`` for each metric (after all the intervals, so the interval columns keep their positions): the
    median across seeds, the centre to read beside the mean for heavy-tailed metrics such as ``kl_to_gold``."""
    d = _frame(df)
    ok = d[d["status"] == "ok"]
    rows = []
    for key, g in ok.groupby(list(CELL), sort=False, dropna=False):
        row = dict(zip(CELL, key), n=int(g["seed"].nunique()), tuned=bool(g["tuned"].any()))
        for m in metrics:
            v = _values(g, m)
            row.update(_ci_cols(m, v))
            row[f"{m}_median"] = float(np.median(v)) if v.size else _NAN
        rows.append(row)
    return pd.DataFrame(rows, columns=[*CELL, "n", "tuned", *_ci_names(metrics), *(f"{m}_median" for m in metrics)])


def noise_floor(summary_df: pd.DataFrame) -> pd.DataFrame:
    """The ``retrain_indep`` rows of a ``summary`` per (dataset, model, regime): the distance-to-gold noise floor."""
    floor = summary_df[summary_df["method"] == FLOOR_METHOD]
    return floor.drop(columns=["method", "tuned"], errors="ignore").reset_index(drop=True)


def _seed_mean(rows: pd.DataFrame, col: str) -> float:
    """The mean over seeds of ``col``, a seed's rows averaged first (nan dropped; nan when no value). For columns
    that are one value per seed repeated on every method's row (the reference ensemble's band), so a seed where
    more methods finished does not weigh more."""
    if col not in rows:
        return _NAN
    v = pd.to_numeric(rows[col], errors="coerce").groupby(rows["seed"]).mean().dropna()
    return float(v.mean()) if len(v) else _NAN


def ensemble_floor(df: pd.DataFrame | Iterable[Mapping], metrics: Sequence[str] = GOLD_DISTANCES) -> pd.DataFrame:
    """The reference ensemble's noise-floor band per (dataset, model, regime) with ok rows: n (seeds with any band
    value) and ``<m>_floor_lo, <m>_floor_mean, <m>_floor_hi`` for each gold distance m, each the mean over seeds
    (``_seed_mean``) of the pairwise-retrain quantile / mean the pipeline recorded (nan when absent)."""
    d = _frame(df)
    ok = d[d["status"] == "ok"]
    cols = [f"{m}_floor_{e}" for m in metrics for e in FLOOR_ENDS]
    rows = []
    for key, g in ok.groupby(["dataset", "model", "regime"], sort=False):
        present = [c for c in cols if c in g]
        n = int(g.loc[g[present].apply(pd.to_numeric, errors="coerce").notna().any(axis=1), "seed"].nunique()) \
            if present else 0
        rows.append({**dict(zip(("dataset", "model", "regime"), key)), "n": n, **{c: _seed_mean(g, c) for c in cols}})
    return pd.DataFrame(rows, columns=["dataset", "model", "regime", "n", *cols])


def family_means(summary_df: pd.DataFrame, df: pd.DataFrame | Iterable[Mapping],
                 metrics: Sequence[str]) -> pd.DataFrame:
    """A ``summary`` rolled up per regime family: one row per (dataset, model, regime_family, method) with
    ``regimes`` (how many regimes of the family the method has a row in) and ``<m>_mean``, the mean over those
    regimes of the per-regime mean (nan regimes dropped). A regime's family is its first non-null
    ``regime_family`` in ``df``; empty when ``df`` has no such column."""
    cols = ["dataset", "model", "regime_family", "method", "regimes", *(f"{m}_mean" for m in metrics)]
    d = _frame(df)
    if "regime_family" not in d or summary_df.empty:
        return pd.DataFrame(columns=cols)
    fam = d.dropna(subset=["regime_family"]).groupby(["dataset", "model", "regime"], sort=False)["regime_family"] \
        .first().rename("regime_family").reset_index()
    s = summary_df.merge(fam, on=["dataset", "model", "regime"], how="inner")
    rows = []
    for key, g in s.groupby(["dataset", "model", "regime_family", "method"], sort=False):
        rows.append({**dict(zip(cols[:4], key)), "regimes": int(g["regime"].nunique()),
                     **{f"{m}_mean": float(g[f"{m}_mean"].mean()) for m in metrics}})
    return pd.DataFrame(rows, columns=cols)


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


@dataclass(frozen=True)
class HeadlineColumn:
    """One column of the SalUn-style headline table: ``key`` (its name in ``headline``'s columns and the report),
    the results column ``source`` it is computed from (``1 − source`` when ``complement``), and the gold's value:
    the row's ``gold_<source>`` column, or ``gold_defined`` when the value is the gold's by definition."""

    key: str
    source: str
    complement: bool = False
    gold_defined: float | None = None

    @property
    def direction(self) -> str:
        """The registered direction of ``source`` (``1 − x`` is closer to the gold exactly when x is)."""
        return direction(self.source)


# Fan et al. (SalUn, ICLR 2024), Table 1's columns, plus the benchmark's own loss attack: UA = 1 − forget accuracy,
# RA, TA, MIA-efficacy, the Avg. Gap to the gold over the first four, and RTE = t_gold / t_method.
HEADLINE = (HeadlineColumn("UA", "forget_acc", complement=True), HeadlineColumn("RA", "retain_acc"),
            HeadlineColumn("TA", "test_acc"), HeadlineColumn("MIA-efficacy", "mia_efficacy"),
            HeadlineColumn("mia_auc", "mia_auc"), HeadlineColumn("avg_gap", "avg_gap", gold_defined=0.0),
            HeadlineColumn("RTE", "rte", gold_defined=1.0))
GOLD_ROW = "gold"  # the headline table's row of the gold (retrained) model's own values
_CLOSE = {"rtol": 1e-9, "atol": 1e-12}  # two means this close tie for "best"


def _column_values(g: pd.DataFrame, col: HeadlineColumn, gold: bool) -> np.ndarray:
    """A method's per-row values of ``col`` (gold: one value per seed, the seed's rows averaged; nan dropped)."""
    if gold:
        name = f"gold_{col.source}"
        if name not in g:
            return np.empty(0)
        v = pd.to_numeric(g[name], errors="coerce").groupby(g["seed"]).mean().dropna().to_numpy(dtype=np.float64)
    else:
        v = _values(g, col.source)
    return 1.0 - v if col.complement else v


def _stop_reasons(g: pd.DataFrame, column: str = "stop_reason") -> str:
    """``"max_iters"`` when every seed stopped for one reason, else ``"max_iters ×3, param_change ×2"`` (most first)."""
    if column not in g:
        return ""
    counts = g[column].dropna().astype(str).value_counts(sort=False)
    counts = counts.iloc[np.argsort(-counts.to_numpy(), kind="stable")]
    if len(counts) == 1:
        return str(counts.index[0])
    return ", ".join(f"{reason} ×{n}" for reason, n in counts.items())


def _epochs(g: pd.DataFrame, column: str) -> dict:
    """``epochs_mean, epochs_min, epochs_max`` of ``column`` over ``g``'s rows (nan where it has no value)."""
    ep = _values(g, column)
    if not ep.size:
        return {"epochs_mean": _NAN, "epochs_min": _NAN, "epochs_max": _NAN}
    return {"epochs_mean": float(ep.mean()), "epochs_min": float(ep.min()), "epochs_max": float(ep.max())}


def headline(df: pd.DataFrame | Iterable[Mapping], columns: Sequence[HeadlineColumn] = HEADLINE) -> pd.DataFrame:
    """The SalUn-style headline table: per (dataset, model, regime) with ok rows, a ``GOLD_ROW`` row first (when the
    table has any ``gold_<source>`` value there) and one row per method in order of appearance.

    For each column k: ``k_mean, k_lo, k_hi`` (``mean_ci`` across seeds; ``1 − x`` per row for a complement),
    ``k_n`` (values behind it: 1 means no interval) and ``k_best``. The gold row's values are its ``gold_<source>``
    columns, one value per seed (a seed's rows averaged), or ``gold_defined`` (avg_gap 0, RTE 1) with no interval.
    ``k_best`` marks the best method by the registered direction of ``source`` among the methods that are neither
    ``CONTROLS`` nor the gold: the highest or lowest mean, or for a "closer to the gold" column the mean nearest the
    reference ``k_ref`` (the same on every row of the regime): the gold row's mean, else ``retrain_indep``'s mean
    (``k_ref_from`` says which; "" when neither exists, and then no cell is marked; nan and "" for the other
    columns). Ties within rounding are all marked.
    ``n`` counts the method's seeds (the gold's: seeds with a gold value); ``epochs_mean, epochs_min, epochs_max``
    summarise ``epochs_run`` and ``stop_reason`` counts the ``stop_reason`` values; the gold row's come from
    ``gold_epochs_run`` and ``gold_stop_reason``, one per seed (nan and "" where the rows lack them)."""
    d = _frame(df)
    ok = d[d["status"] == "ok"]
    out = []
    for key, g in ok.groupby(["dataset", "model", "regime"], sort=False):
        coords = dict(zip(("dataset", "model", "regime"), key))
        rows = []
        gold_vals = {c.key: _column_values(g, c, gold=True) for c in columns}
        gold_cols = [f"gold_{c.source}" for c in columns if f"gold_{c.source}" in g]
        gold_seeds = g.loc[g[gold_cols].apply(pd.to_numeric, errors="coerce").notna().any(axis=1), "seed"].nunique()
        if gold_seeds:
            row = {**coords, "method": GOLD_ROW, "n": int(gold_seeds)}
            for c in columns:
                if c.gold_defined is not None:
                    row.update({f"{c.key}_mean": c.gold_defined, f"{c.key}_lo": _NAN, f"{c.key}_hi": _NAN,
                                f"{c.key}_n": int(gold_seeds)})
                else:
                    row.update(_ci_cols(c.key, gold_vals[c.key]), **{f"{c.key}_n": int(gold_vals[c.key].size)})
            per_seed = g.drop_duplicates("seed")  # one gold per seed, shared by every method's row
            rows.append({**row, **_epochs(per_seed, "gold_epochs_run"),
                         "stop_reason": _stop_reasons(per_seed, "gold_stop_reason")})
        for method, m in g.groupby("method", sort=False):
            row = {**coords, "method": method, "n": int(m["seed"].nunique())}
            for c in columns:
                v = _column_values(m, c, gold=False)
                row.update(_ci_cols(c.key, v), **{f"{c.key}_n": int(v.size)})
            row.update(**_epochs(m, "epochs_run"), stop_reason=_stop_reasons(m))
            rows.append(row)
        t = pd.DataFrame(rows)
        for c in columns:
            _mark_best(t, c)
        out.append(t)
    cols = ["dataset", "model", "regime", "method", "n",
            *(f"{c.key}_{s}" for c in columns for s in ("mean", "lo", "hi", "n", "best", "ref", "ref_from")),
            "epochs_mean", "epochs_min", "epochs_max", "stop_reason"]
    return pd.concat(out, ignore_index=True)[cols] if out else pd.DataFrame(columns=cols)


def _mark_best(t: pd.DataFrame, c: HeadlineColumn) -> None:
    """Fill ``<key>_best``, ``<key>_ref`` and ``<key>_ref_from`` of one regime's headline rows in place."""
    mean = t[f"{c.key}_mean"].to_numpy(dtype=np.float64)
    ref, ref_from = _NAN, ""
    for source in (GOLD_ROW, FLOOR_METHOD) if c.direction == "closer_to_gold" else ():
        hit = mean[(t["method"] == source).to_numpy()]  # the gold, else the independent retrain stands in for it
        if hit.size and np.isfinite(hit[0]):
            ref, ref_from = float(hit[0]), source
            break
    t[f"{c.key}_ref"], t[f"{c.key}_ref_from"] = ref, ref_from
    score = {"lower": mean, "higher": -mean, "closer_to_gold": np.abs(mean - ref)}.get(c.direction)
    best = np.zeros(len(t), dtype=bool)
    if score is not None:  # an infinite mean (RTE of a method that took no measurable time) can be the best
        eligible = ~t["method"].isin([*CONTROLS, GOLD_ROW]).to_numpy() & ~np.isnan(score)
        if eligible.any():
            best = eligible & np.isclose(score, np.min(score[eligible]), **_CLOSE)
    t[f"{c.key}_best"] = best


def paired_comparison(df: pd.DataFrame | Iterable[Mapping], a: str = "sragu", b: str = "agu",
                      metrics: Sequence[str] = PAIRED_METRICS) -> pd.DataFrame:
    """Method ``a`` vs ``b`` paired on seed, per (dataset, model, regime, metric) where both were run.

    Pairs are the seeds where both are ok and the metric is not nan (duplicate rows of a seed are averaged).
    ``mean_diff, lo, hi``: mean of a − b and its 95% t interval (``mean_ci``; nan for n_pairs < 2).
    ``wilcoxon_p``: ``scipy.stats.wilcoxon`` (two-sided, zero differences dropped); nan when n_pairs < 2 or every
    difference is zero (scipy would return 1.0 from an empty rank sum). ``sign_p``: ``scipy.stats.binomtest`` of
    the number of positive differences among the non-zero ones (p = ½); nan when none is non-zero.
    ``better``: the method whose mean is better by the metric's direction (the metric registry), "tie" for a zero mean
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
            diff = _paired_diffs(ok, a, b, m)
            mean, _, lo, hi = mean_ci(diff) if diff.size else (_NAN,) * 4
            nonzero = diff[diff != 0]
            with warnings.catch_warnings():  # tiny samples: scipy warns about its normal approximation
                warnings.simplefilter("ignore")
                p_w = float(stats.wilcoxon(diff).pvalue) if diff.size >= 2 and nonzero.size else _NAN
            p_s = float(stats.binomtest(int((nonzero > 0).sum()), nonzero.size).pvalue) if nonzero.size else _NAN
            rows.append({**dict(zip(("dataset", "model", "regime"), key)), "metric": m, "n_pairs": int(diff.size),
                         "mean_diff": mean, "lo": lo, "hi": hi, "wilcoxon_p": p_w, "sign_p": p_s,
                         "better": _better(mean, direction(m), a, b), "ci_excludes_0": bool(lo > 0 or hi < 0)})
    return pd.DataFrame(rows, columns=["dataset", "model", "regime", "metric", "n_pairs", "mean_diff", "lo", "hi",
                                       "wilcoxon_p", "sign_p", "better", "ci_excludes_0"])


def _paired_diffs(ok: pd.DataFrame, a: str, b: str, metric: str) -> np.ndarray:
    """``a − b`` of ``metric`` on the seeds where both methods have a non-nan value in ``ok`` (rows already
    filtered to one (dataset, model, regime) and ``status == "ok"``), in seed order; a seed's duplicate rows are
    averaged first."""
    by = {}
    for name in (a, b):
        s = ok[ok["method"] == name]
        v = pd.to_numeric(s[metric], errors="coerce") if metric in s else pd.Series(_NAN, index=s.index)
        by[name] = v.groupby(s["seed"]).mean()
    both = pd.concat([by[a].rename("a"), by[b].rename("b")], axis=1, join="inner").dropna()
    return (both["a"] - both["b"]).to_numpy(dtype=np.float64)


def _better(mean_diff: float, direction: str, a: str, b: str) -> str:
    if direction not in ("lower", "higher"):
        return "n/a"
    if not mean_diff == mean_diff:
        return ""
    if mean_diff == 0:
        return "tie"
    return a if (mean_diff < 0) == (direction == "lower") else b


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
