"""Paired verdicts a reviewer can check: is the target method better than, worse than, or equivalent to each other
method, or can the data not tell? (docs/statistics.md explains every number in plain words.)

Pairing is on seed, like ``tables.paired_comparison``: a seed counts when both methods are ``status == "ok"`` in the
same (dataset, model, regime) and the metric is not nan there. On the differences d = target − other (one per seed):

- Student t 95% interval of the mean and the two-sided one-sample t test of mean(d) = 0;
- a bootstrap interval of the mean (BCa, percentile when BCa is undefined; descriptive only);
- TOST equivalence within ±margin, the margin being the noise floor: the mean value of the metric for the
  independent retrain (``retrain_indep``) in the same (dataset, model, regime), for the registered gold distances;
  for a distance to the reference ensemble ``<m>_ens``, the ensemble's own band centre (mean of ``<m>_floor_mean``);
  none (nan) for KLoM, U-LiRA and a sequence's worst request (``seq_avg_gap_max``), which have no equivalence
  claim;
- the minimum detectable effect (MDE) of a two-sided paired t test at this n, alpha and power.

Rank tests are not used for the verdict: with n pairs the smallest two-sided Wilcoxon or sign-test p is 2/2^n
(0.25 at n = 3), so they cannot reject at 0.05 below n = 6.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from sragu_core.evaluate import METRICS

from .tables import FLOOR_METHOD, GOLD_DISTANCES, PAIRED_METRICS, _frame, _paired_diffs, _seed_mean, _values, direction

__all__ = ["VERDICT_AGAINST", "VERDICT_METRICS", "VERDICT_REFERENCE_METRICS", "VERDICT_COLUMNS", "paired_stats",
           "verdict_table"]

# the methods the target is compared with, when they were run (the ablations of SRAGU, AGU, and θ0 unchanged)
VERDICT_AGAINST = ("agu", "agu_layerwise", "sragu_permuted", "sragu_random", "sragu_uniform", "original")
# the "paired" view of the metric registry, plus js and avg_gap where registered (avg_gap is already paired today)
VERDICT_METRICS = (*PAIRED_METRICS, *(m for m in ("js", "avg_gap") if m in METRICS and m not in PAIRED_METRICS))
# added to the default metrics when the table has values for them (runs with reference ensembles and shadow models)
VERDICT_REFERENCE_METRICS = tuple(m for m in ("klom_forget", "ulira_auc", "js_ens", "avg_gap_ens", "seq_avg_gap_max")
                                  if m in METRICS)
VERDICT_COLUMNS = ("dataset", "model", "regime", "regime_family", "against", "metric", "n_pairs", "mean_diff",
                   "median_diff", "t_lo", "t_hi", "boot_lo", "boot_hi", "t_p", "margin", "tost_p", "mde", "verdict")
_NAN = float("nan")


def paired_stats(diff: Sequence[float] | np.ndarray, margin: float, *, alpha: float = 0.05, power: float = 0.8,
                 n_boot: int = 10_000, seed: int = 0) -> dict:
    """Statistics of paired differences ``diff`` (a − b, one per seed; nan entries are dropped).

    Returns ``n, mean, median, sd`` (ddof 1), and, for n ≥ 2 finite differences (nan otherwise):

    - ``t_lo, t_hi``: the Student t interval mean ± t_{1−α/2, n−1}·sd/√n (95% at the default alpha);
      ``t_p``: the two-sided one-sample t test of mean = 0.
    - ``boot_lo, boot_hi``: ``scipy.stats.bootstrap`` interval of the mean at the same level, one-sample
      resampling of the differences (that is the paired bootstrap), ``n_boot`` resamples from ``seed``; BCa, and
      the percentile interval where BCa is undefined (scipy returns nan for some tiny samples). With a handful of
      seeds it is narrower than the t interval and under-covers, so it is shown beside it, never used for a verdict.
    - ``tost_p``: two one-sided t tests for equivalence within ±margin, the larger of the p-values of
      H0: mean ≤ −margin and H0: mean ≥ +margin (equivalently: the 1 − 2α t interval lies inside ±margin);
      nan when margin is nan or ≤ 0. ``equivalent``: tost_p < alpha.
    - ``mde``: the minimum detectable effect of a two-sided paired t test at this n, alpha and power,
      (t_{1−α/2, n−1} + t_{power, n−1})·sd/√n. This is the standard approximation (it ignores the far rejection
      tail and uses the central t for the alternative). It is optimistic for small n: at α = 0.05 and power 0.8 the
      exact power at effect = mde (noncentral t) is 0.77 at n = 3, 0.79 at n = 5 and 0.80 from n = 10, so at three
      seeds the true MDE is somewhat larger; the error grows for a smaller α or a higher power.

    All differences equal (sd = 0; n ≥ 2): the limits of the formulas as sd → 0 — the intervals collapse to the
    mean, t_p is 0 for a non-zero mean and 1 for a zero one, tost_p is 0 when |mean| < margin and 1 otherwise,
    mde is 0. An infinite difference leaves only n, mean and median.
    """
    d = np.asarray(diff, dtype=np.float64).ravel()
    d = d[~np.isnan(d)]
    n = int(d.size)
    out = {"n": n, "mean": _NAN, "median": _NAN, "sd": _NAN, "t_lo": _NAN, "t_hi": _NAN, "t_p": _NAN,
           "boot_lo": _NAN, "boot_hi": _NAN, "tost_p": _NAN, "equivalent": False, "mde": _NAN}
    if n == 0:
        return out
    mean = float(d.mean())
    out.update(mean=mean, median=float(np.median(d)))
    if n < 2 or not np.isfinite(d).all():
        return out
    constant = bool(np.ptp(d) == 0)
    sd = 0.0 if constant else float(d.std(ddof=1))
    se, df = sd / math.sqrt(n), n - 1
    t_crit = float(stats.t.ppf(1 - alpha / 2, df))
    if constant:
        t_p = 0.0 if mean != 0 else 1.0
    else:
        t_p = float(2 * stats.t.sf(abs(mean) / se, df))
    tost_p = _tost(mean, se, df, margin)
    boot_lo, boot_hi = (mean, mean) if constant else _bootstrap(d, alpha, n_boot, seed)
    out.update(sd=sd, t_lo=mean - t_crit * se, t_hi=mean + t_crit * se, t_p=t_p, boot_lo=boot_lo, boot_hi=boot_hi,
               tost_p=tost_p, equivalent=bool(tost_p < alpha),
               mde=(t_crit + float(stats.t.ppf(power, df))) * se)
    return out


def _tost(mean: float, se: float, df: int, margin: float) -> float:
    if not margin > 0:  # also nan
        return _NAN
    if se == 0:
        return 0.0 if abs(mean) < margin else 1.0
    p_low = stats.t.sf((mean + margin) / se, df)  # H0: mean <= -margin, H1: mean > -margin
    p_high = stats.t.cdf((mean - margin) / se, df)  # H0: mean >= +margin, H1: mean < +margin
    return float(max(p_low, p_high))


_BOOT_BATCH_VALUES = 2**20  # resampled values held at once (8 MB); the same interval as one batch, same seed


def _bootstrap(d: np.ndarray, alpha: float, n_boot: int, seed: int) -> tuple[float, float]:
    # in batches: all n_boot resamples at once of a 5,000-seed grid's differences is 400 MB per comparison
    batch = max(1, _BOOT_BATCH_VALUES // max(1, d.size))
    with warnings.catch_warnings():  # tiny samples: scipy warns that BCa is degenerate; we fall back below
        warnings.simplefilter("ignore")
        for method in ("BCa", "percentile"):
            ci = stats.bootstrap((d,), np.mean, n_resamples=n_boot, confidence_level=1 - alpha, method=method,
                                 batch=batch, rng=np.random.default_rng(seed)).confidence_interval
            if np.isfinite(ci.low) and np.isfinite(ci.high):
                return float(ci.low), float(ci.high)
    return _NAN, _NAN


def _verdict(s: dict, direction_: str, target: str, against: str) -> str:
    """"<x> better" (lower/higher metrics) or "differs" when the t interval excludes 0; else "equivalent" ("no
    difference" for metrics with no better direction) when TOST passes; else "inconclusive"."""
    ranked = direction_ in ("lower", "higher")
    if s["t_lo"] > 0 or s["t_hi"] < 0:  # nan compares False
        if not ranked:
            return "differs"
        return f"{target} better" if (s["mean"] < 0) == (direction_ == "lower") else f"{against} better"
    if s["equivalent"]:
        return "equivalent" if ranked else "no difference"
    return "inconclusive"


def _margin(ok: pd.DataFrame, floor_rows: pd.DataFrame, metric: str) -> float:
    """The noise floor of a gold-distance metric: the mean over the ok retrain_indep rows; of its distance to the
    reference ensemble ``<m>_ens``: the mean over seeds of the ok rows' ``<m>_floor_mean``; nan otherwise."""
    if metric.endswith("_ens") and metric[:-4] in GOLD_DISTANCES:
        return _seed_mean(ok, f"{metric[:-4]}_floor_mean")
    v = _values(floor_rows, metric) if metric in GOLD_DISTANCES else np.empty(0)
    return float(v.mean()) if v.size else _NAN


def verdict_table(df: pd.DataFrame | Iterable[Mapping], target: str = "sragu",
                  against: Sequence[str] = VERDICT_AGAINST, metrics: Sequence[str] | None = None,
                  alpha: float = 0.05) -> pd.DataFrame:
    """One row per (dataset, model, regime) × method of ``against`` run there beside ``target`` × metric.

    ``metrics`` defaults to ``VERDICT_METRICS`` followed by those of ``VERDICT_REFERENCE_METRICS`` (``klom_forget,
    ulira_auc, js_ens, avg_gap_ens, seq_avg_gap_max``) that have a non-nan value in some ok row, so a table from a
    run without reference ensembles, shadow models or sequences gives exactly the verdicts of
    ``metrics=VERDICT_METRICS``.

    ``n_pairs, mean_diff, median_diff, t_lo, t_hi, boot_lo, boot_hi, t_p, tost_p, mde`` are ``paired_stats`` of
    target − against on seed (ok rows, non-nan metric; bootstrap seed 0), with ``margin`` = the noise floor: the
    mean of the ``retrain_indep`` ok rows' metric in the same (dataset, model, regime) for a registered gold
    distance; for a distance to the reference ensemble ``<m>_ens``, the ensemble's own floor: the mean over seeds of
    ``<m>_floor_mean`` in the (dataset, model, regime)'s ok rows (the mean distance between two of its independent
    retrains; a seed's rows, identical across methods, are averaged first); nan for any other metric — KLoM and
    U-LiRA make no equivalence claim, only their MDE is reported — or when there is no floor value (then the
    verdict is never "equivalent"). ``verdict``: "<target> better" / "<against> better" when the t interval
    excludes 0 (the side from the metric's registered direction), "equivalent" when TOST passes at the margin,
    "inconclusive" otherwise; for a metric whose direction is not lower/higher, "differs" / "no difference" /
    "inconclusive". ``regime_family`` is a column only when the input has one. Rows follow the table's order of
    (dataset, model, regime), then ``against``, then ``metrics``; a metric of ``VERDICT_REFERENCE_METRICS`` gets no
    row in a regime where no ok row has a value of it.
    """
    d = _frame(df)
    if metrics is None:
        ok_all = d[d["status"] == "ok"]
        metrics = (*VERDICT_METRICS, *(m for m in VERDICT_REFERENCE_METRICS
                                       if m not in VERDICT_METRICS and _values(ok_all, m).size))
    family = "regime_family" in d
    cols = [c for c in VERDICT_COLUMNS if family or c != "regime_family"]
    rows = []
    for (ds, mo, rg), g in d.groupby(["dataset", "model", "regime"], sort=False):
        ran = set(g["method"])
        if target not in ran:
            continue
        ok = g[g["status"] == "ok"]
        floor_rows = ok[ok["method"] == FLOOR_METHOD]
        lead = {"dataset": ds, "model": mo, "regime": rg}
        if family:
            fam = g["regime_family"].dropna()
            lead["regime_family"] = fam.iloc[0] if len(fam) else None
        for other in against:
            if other not in ran or other == target:
                continue
            for m in metrics:
                if m in VERDICT_REFERENCE_METRICS and not _values(ok, m).size:
                    continue  # a reference metric this regime has no value of (a sequence's, on a one-request regime)
                margin = _margin(ok, floor_rows, m)
                s = paired_stats(_paired_diffs(ok, target, other, m), margin, alpha=alpha)
                rows.append({**lead, "against": other, "metric": m, "n_pairs": s["n"], "mean_diff": s["mean"],
                             "median_diff": s["median"], "t_lo": s["t_lo"], "t_hi": s["t_hi"],
                             "boot_lo": s["boot_lo"], "boot_hi": s["boot_hi"], "t_p": s["t_p"], "margin": margin,
                             "tost_p": s["tost_p"], "mde": s["mde"],
                             "verdict": _verdict(s, direction(m), target, other)})
    return pd.DataFrame(rows, columns=cols)
