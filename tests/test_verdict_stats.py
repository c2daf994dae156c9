"""Report verdicts (components/report/verdict.py, docs/statistics.md): paired_stats cross-checked against scipy's own
tests, and verdict_table on synthetic tables whose truth is known. Fast: no Ray, no subprocess."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from components import report as R
from components.report.verdict import _BOOT_BATCH_VALUES
from sragu_core.evaluate import METRICS, metrics_in

NAN = float("nan")
SAMPLES = {"n3": [0.1, -0.3, 0.25], "n5": [0.012, 0.031, -0.004, 0.022, 0.017],
           "n12": list(np.random.default_rng(7).normal(0.4, 1.3, 12))}


# --------------------------------------------------------------------------------------------- paired_stats
@pytest.mark.parametrize("name", SAMPLES)
def test_t_interval_and_p_match_ttest_1samp(name):
    d = np.asarray(SAMPLES[name])
    s = R.paired_stats(d, NAN)
    ref = stats.ttest_1samp(d, 0.0)
    ci = ref.confidence_interval(0.95)
    assert s["n"] == d.size and s["mean"] == pytest.approx(d.mean()) and s["median"] == pytest.approx(np.median(d))
    assert s["sd"] == pytest.approx(d.std(ddof=1))
    assert (s["t_lo"], s["t_hi"]) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert s["t_p"] == pytest.approx(ref.pvalue, rel=1e-10)
    ci90 = stats.ttest_1samp(d, 0.0).confidence_interval(0.90)  # alpha moves the interval level
    s90 = R.paired_stats(d, NAN, alpha=0.10)
    assert (s90["t_lo"], s90["t_hi"]) == pytest.approx((ci90.low, ci90.high), rel=1e-12)


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("margin", [0.01, 0.05, 0.5, 3.0])
def test_tost_is_two_one_sided_ttests(name, margin):
    d = np.asarray(SAMPLES[name])
    p_low = stats.ttest_1samp(d, -margin, alternative="greater").pvalue  # H0: mean <= -margin
    p_high = stats.ttest_1samp(d, margin, alternative="less").pvalue  # H0: mean >= +margin
    s = R.paired_stats(d, margin)
    assert s["tost_p"] == pytest.approx(max(p_low, p_high), rel=1e-10)
    assert s["equivalent"] == (max(p_low, p_high) < 0.05)
    # TOST at alpha is the (1 - 2 alpha) t interval lying inside the margin
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(0.90)
    assert s["equivalent"] == (-margin < ci.low and ci.high < margin)


def test_tost_needs_a_positive_margin():
    for margin in (NAN, 0.0, -1.0):
        s = R.paired_stats([0.0, 0.001, -0.001], margin)
        assert math.isnan(s["tost_p"]) and s["equivalent"] is False


def _power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Exact power of the two-sided one-sample t test (noncentral t)."""
    df, crit = n - 1, stats.t.ppf(1 - alpha / 2, n - 1)
    nc = effect / (sd / math.sqrt(n))
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


@pytest.mark.parametrize("n", [5, 10, 30])
def test_mde_has_the_asked_power(n):
    d = np.random.default_rng(n).normal(0.0, 2.0, n)
    s = R.paired_stats(d, NAN)
    sd = d.std(ddof=1)
    assert s["mde"] == pytest.approx((stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * sd / math.sqrt(n))
    assert _power(s["mde"], sd, n) == pytest.approx(0.8, abs=0.02)
    # a stricter alpha and a higher power ask for a larger effect; the approximation then errs on the optimistic
    # side (exact power below the asked 0.9: 0.83 at n = 5, 0.88 at n = 10, 0.895 at n = 30)
    s9 = R.paired_stats(d, NAN, alpha=0.01, power=0.9)
    exact = _power(s9["mde"], sd, n, alpha=0.01)
    assert s9["mde"] > s["mde"] and 0.8 < exact < 0.9
    assert exact == pytest.approx(0.9, abs=0.01) or n < 30


def test_mde_at_three_seeds_by_hand_and_its_known_optimism():
    d = np.array([1.0, 2.0, 4.0])  # sd = sqrt(7/3)
    s = R.paired_stats(d, NAN)
    by_hand = (4.302652729749464 + 1.0606601717798212) * math.sqrt(7 / 3) / math.sqrt(3)  # t_.975,2 + t_.8,2
    assert s["mde"] == pytest.approx(by_hand, rel=1e-9)
    # the standard approximation is optimistic at n = 3 (docstring): the exact power at the MDE is ~0.77
    assert 0.75 < _power(s["mde"], math.sqrt(7 / 3), 3) < 0.79
    # and a simulation agrees with the noncentral t
    rng = np.random.default_rng(0)
    x = rng.normal(s["mde"], math.sqrt(7 / 3), (40_000, 3))
    p = stats.ttest_1samp(x, 0.0, axis=1).pvalue
    assert (p < 0.05).mean() == pytest.approx(_power(s["mde"], math.sqrt(7 / 3), 3), abs=0.01)


def test_bootstrap_is_scipy_bca_with_a_fixed_seed():
    d = np.asarray(SAMPLES["n12"])
    s = R.paired_stats(d, NAN, n_boot=2000, seed=3)
    ref = stats.bootstrap((d,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(3))
    assert (s["boot_lo"], s["boot_hi"]) == (ref.confidence_interval.low, ref.confidence_interval.high)
    assert s["boot_lo"] < d.mean() < s["boot_hi"]
    assert R.paired_stats(d, NAN, n_boot=2000, seed=3) == s  # deterministic
    small = R.paired_stats(SAMPLES["n3"], NAN)  # tiny n: finite, and narrower than the t interval
    assert small["t_lo"] < small["boot_lo"] < small["boot_hi"] < small["t_hi"]


def test_a_large_sample_is_resampled_in_batches_with_the_same_interval():
    """5,000 differences: resampled a few hundred at a time (bounded memory), the interval scipy gives for all
    resamples at once from the same seed."""
    d = np.random.default_rng(11).normal(0.1, 1.0, 5000)
    s = R.paired_stats(d, NAN, n_boot=2000, seed=3)
    ref = stats.bootstrap((d,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(3))
    assert _BOOT_BATCH_VALUES // d.size < 2000  # batched here
    assert (s["boot_lo"], s["boot_hi"]) == (ref.confidence_interval.low, ref.confidence_interval.high)


def test_degenerate_inputs():
    same = R.paired_stats([0.0, 0.0, 0.0], 0.1)  # identical on every seed: the sd -> 0 limits
    assert (same["sd"], same["t_lo"], same["t_hi"], same["boot_lo"], same["boot_hi"], same["mde"]) == (0, 0, 0, 0, 0, 0)
    assert same["t_p"] == 1.0 and same["tost_p"] == 0.0 and same["equivalent"]
    shifted = R.paired_stats([0.3, 0.3, 0.3], 0.1)
    assert shifted["t_p"] == 0.0 and shifted["tost_p"] == 1.0 and shifted["t_lo"] == shifted["t_hi"] == 0.3
    one = R.paired_stats([2.0, NAN], 0.1)  # nan dropped, n = 1: no inference
    assert one["n"] == 1 and one["mean"] == 2.0
    assert all(math.isnan(one[k]) for k in ("sd", "t_lo", "t_p", "boot_lo", "tost_p", "mde"))
    assert R.paired_stats([], 0.1)["n"] == 0 and math.isnan(R.paired_stats([], 0.1)["mean"])
    inf = R.paired_stats([1.0, math.inf], 0.1)
    assert inf["mean"] == math.inf and math.isnan(inf["t_lo"]) and not inf["equivalent"]


# --------------------------------------------------------------------------------------------- verdict_table
def _rows(method, values, regime="r", metric="kl_to_gold", status="ok", family="random"):
    return [{"dataset": "d", "model": "m", "seed": s, "regime": regime, "regime_family": family, "method": method,
             "status": status, metric: v} for s, v in enumerate(values)]


def _one(table, against="agu", metric="kl_to_gold"):
    hit = table[(table["against"] == against) & (table["metric"] == metric)]
    assert len(hit) == 1, table
    return hit.iloc[0]


def test_default_metrics_and_columns():
    assert R.VERDICT_METRICS[:len(metrics_in("paired"))] == metrics_in("paired")
    assert {"js", "avg_gap"} <= set(R.VERDICT_METRICS) and set(R.VERDICT_METRICS) <= set(METRICS)
    rng = np.random.default_rng(1)
    rows = _rows("sragu", rng.normal(0.2, 0.01, 5)) + _rows("agu", rng.normal(0.5, 0.01, 5))
    t = R.verdict_table(rows)
    assert list(t.columns) == list(R.VERDICT_COLUMNS)
    assert list(t["metric"]) == list(R.VERDICT_METRICS) and set(t["against"]) == {"agu"}
    no_family = R.verdict_table([{k: v for k, v in r.items() if k != "regime_family"} for r in rows])
    assert list(no_family.columns) == [c for c in R.VERDICT_COLUMNS if c != "regime_family"]


def test_large_effect_is_target_better_and_matches_paired_stats():
    rng = np.random.default_rng(2)
    sragu, agu, floor = rng.normal(0.1, 0.02, 5), rng.normal(0.5, 0.02, 5), [0.04, 0.06, 0.05, 0.05, 0.05]
    rows = _rows("sragu", sragu) + _rows("agu", agu) + _rows("retrain_indep", floor)
    rows += _rows("retrain_indep", [9.0], status="failed")  # a failed floor row never counts
    row = _one(R.verdict_table(rows, metrics=("kl_to_gold",)))
    s = R.paired_stats(sragu - agu, 0.05)
    assert row["verdict"] == "sragu better" and row["margin"] == pytest.approx(0.05)
    assert row["n_pairs"] == 5 and row["regime_family"] == "random"
    for col, key in (("mean_diff", "mean"), ("median_diff", "median"), ("t_lo", "t_lo"), ("t_hi", "t_hi"),
                     ("boot_lo", "boot_lo"), ("boot_hi", "boot_hi"), ("t_p", "t_p"), ("tost_p", "tost_p"),
                     ("mde", "mde")):
        assert row[col] == pytest.approx(s[key], rel=1e-12), col
    flipped = _one(R.verdict_table(rows, target="agu", against=("sragu",), metrics=("kl_to_gold",)), "sragu")
    assert flipped["verdict"] == "sragu better"  # the better method is named from either side


def test_equal_methods_with_a_wide_floor_are_equivalent():
    rng = np.random.default_rng(3)
    base = rng.normal(0.3, 0.05, 5)
    rows = (_rows("sragu", base + rng.normal(0, 1e-4, 5)) + _rows("agu", base)
            + _rows("retrain_indep", [0.2, 0.21, 0.19, 0.2, 0.2]))
    row = _one(R.verdict_table(rows, metrics=("kl_to_gold",)))
    assert row["verdict"] == "equivalent" and row["tost_p"] < 1e-6 and row["margin"] == pytest.approx(0.2)


def test_three_noisy_seeds_are_inconclusive_with_a_finite_mde():
    rows = (_rows("sragu", [0.31, 0.22, 0.40]) + _rows("agu", [0.30, 0.29, 0.33])
            + _rows("retrain_indep", [0.02, 0.03, 0.025]))
    row = _one(R.verdict_table(rows, metrics=("kl_to_gold",)))
    assert row["n_pairs"] == 3 and row["verdict"] == "inconclusive"
    assert math.isfinite(row["mde"]) and row["mde"] > abs(row["mean_diff"])
    assert row["t_lo"] < 0 < row["t_hi"] and row["tost_p"] > 0.05


def test_higher_is_better_flips_the_verdict():
    assert METRICS["kl_to_gold"].direction == "lower" and METRICS["rte"].direction == "higher"
    sragu, agu = [5.0, 5.2, 4.9, 5.1], [3.0, 3.1, 2.8, 3.2]  # sragu clearly larger
    for metric, expected in (("kl_to_gold", "agu better"), ("rte", "sragu better")):
        rows = _rows("sragu", sragu, metric=metric) + _rows("agu", agu, metric=metric)
        row = _one(R.verdict_table(rows, metrics=(metric,)), metric=metric)
        assert row["verdict"] == expected, metric
        assert math.isnan(row["margin"])  # no retrain_indep rows (rte is not a gold distance anyway)
    nd = _rows("sragu", sragu, metric="max_layer_shift") + _rows("agu", agu, metric="max_layer_shift")
    assert METRICS["max_layer_shift"].direction == "n/a"
    assert _one(R.verdict_table(nd, metrics=("max_layer_shift",)), metric="max_layer_shift")["verdict"] == "differs"


def test_no_floor_is_never_equivalent():
    same = [0.3, 0.31, 0.29, 0.3, 0.3]
    rows = _rows("sragu", same) + _rows("agu", same)  # identical, but no retrain_indep
    row = _one(R.verdict_table(rows, metrics=("kl_to_gold",)))
    assert math.isnan(row["margin"]) and math.isnan(row["tost_p"]) and row["verdict"] == "inconclusive"
    # a floor on a metric that is not a gold distance is not a margin either
    rte = (_rows("sragu", same, metric="rte") + _rows("agu", same, metric="rte")
           + _rows("retrain_indep", [1.0] * 5, metric="rte"))
    assert math.isnan(_one(R.verdict_table(rte, metrics=("rte",)), metric="rte")["margin"])
    with_floor = _one(R.verdict_table(rows + _rows("retrain_indep", [0.1] * 5), metrics=("kl_to_gold",)))
    assert with_floor["verdict"] == "equivalent"  # the same data with a floor


def test_only_methods_run_there_and_only_ok_pairs():
    rows = (_rows("sragu", [0.1, 0.2, 0.3, 0.4]) + _rows("agu", [0.2, 0.2, 0.2, 0.2])
            + _rows("sragu_uniform", [1.0, 1.0], status="failed") + _rows("original", [0.9] * 4, regime="other"))
    rows[1]["status"] = "failed"  # sragu seed 1
    t = R.verdict_table(rows, metrics=("kl_to_gold",))
    assert list(t["against"]) == ["agu", "sragu_uniform"]  # agu_layerwise never ran; original ran elsewhere only
    assert _one(t)["n_pairs"] == 3
    none = _one(t, "sragu_uniform")
    assert none["n_pairs"] == 0 and none["verdict"] == "inconclusive" and math.isnan(none["mde"])
    assert R.verdict_table(_rows("agu", [0.1, 0.2])).empty  # the target never ran


# --------------------------------------------------------------------------------------------- summary, report
def test_summary_gains_medians_after_the_intervals():
    rows = _rows("agu", [1.0, 2.0, 30.0, NAN])
    s = R.summary(rows, metrics=("kl_to_gold", "pd"))
    assert list(s.columns) == ["dataset", "model", "regime", "method", "n", "tuned",
                               "kl_to_gold_mean", "kl_to_gold_lo", "kl_to_gold_hi", "pd_mean", "pd_lo", "pd_hi",
                               "kl_to_gold_median", "pd_median"]
    assert s.loc[0, "kl_to_gold_median"] == 2.0 and s.loc[0, "kl_to_gold_mean"] == 11.0
    assert math.isnan(s.loc[0, "pd_median"])


def test_report_verdict_section(tmp_path):
    rng = np.random.default_rng(4)
    rows = (_rows("sragu", rng.normal(0.3, 0.05, 3)) + _rows("agu", rng.normal(0.3, 0.05, 3))
            + _rows("retrain_indep", [0.01, 0.012, 0.011]))
    md = R.write_report(rows, tmp_path, "verdict").read_text(encoding="utf-8")
    section = md[md.index("## Verdict: sragu against each comparison method\n"):md.index("## Paired comparison")]
    assert "### Verdict: d / m / r" in section and "MDE" in section and "noise floor" in section
    header = next(ln for ln in section.splitlines() if ln.startswith("| against"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[-2:] == ["MDE", "verdict"]  # the MDE sits next to every verdict
    row = next(ln for ln in section.splitlines() if ln.startswith("| agu | kl_to_gold"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    v = _one(R.verdict_table(rows, metrics=("kl_to_gold",)))
    assert cells[-1] == v["verdict"] == "inconclusive" and cells[-2] == R.fmt(v["mde"])
    assert cells[7] == f"{R.fmt(v['tost_p'])} (±{R.fmt(v['margin'])})"
    # the whole verdict table, every column, next to the report
    csv = pd.read_csv(tmp_path / "verdict.csv")
    assert len(csv) == len(R.verdict_table(rows)) and "mde" in csv.columns
    alone = R.write_report(_rows("sragu", [0.1, 0.2]), tmp_path / "alone", "alone").read_text(encoding="utf-8")
    assert "## Verdict" not in alone and not (tmp_path / "alone" / "verdict.csv").exists()


def test_report_at_a_glance_line_per_regime(tmp_path):
    """The report's first verdict table: per regime, the js verdict against each method, MDE where not a difference."""
    rng = np.random.default_rng(5)
    rows = (_rows("sragu", rng.normal(0.10, 0.01, 10), metric="js")
            + _rows("agu", rng.normal(0.30, 0.01, 10), metric="js")
            + _rows("original", rng.normal(0.10, 0.01, 10), metric="js")
            + _rows("retrain_indep", [0.05] * 10, metric="js"))
    md = R.write_report(rows, tmp_path, "glance").read_text(encoding="utf-8")
    glance = md[md.index("At a glance, on `js`"):md.index("### Verdict: d / m / r")]
    line = next(ln for ln in glance.splitlines() if ln.startswith("| d / m / r"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    v_agu, v_orig = (_one(R.verdict_table(rows, metrics=("js",)), against=a, metric="js") for a in ("agu", "original"))
    assert v_agu["verdict"] == "sragu better" and cells[2].startswith("sragu better: ") and "MDE" not in cells[2]
    ci = R.fmt_ci(v_orig["mean_diff"], v_orig["t_lo"], v_orig["t_hi"])
    assert v_orig["verdict"] == "equivalent" and cells[3] == f"equivalent: {ci}, MDE {R.fmt(v_orig['mde'])}"
