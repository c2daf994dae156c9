"""Benchmark report (docs/design.md §6-7): statistics on hand cases, and the end-to-end report re-checked from Parquet.

The end-to-end test runs ``pipelines/report.py`` on a synthetic results table and recomputes the numbers it
checks with numpy/scipy directly (not with ``components.report``), formatted as the report formats them:
integral values as integers, others with 4 significant digits, intervals as ``mean [lo, hi]``.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

from components import report as R
from sragu_core.errors import ConfigError
from sragu_core.methods import METHODS

METHOD_NAMES = list(METHODS)

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEEDS = (0, 1, 2, 3, 4)
REGIMES = {"random_10pct": ("random", 0.1, 120), "random_50pct": ("random", 0.5, 600),
           "class_3": ("class", 0.098, 118)}
BASE = {"retrain_indep": 0.05, "agu": 0.31, "sragu": 0.22, "finetune": 0.64}
NOISE = (0.013, -0.021, 0.034, -0.008, 0.017)  # per seed
WOBBLE = (0.061, 0.117, -0.019, 0.004, -0.031)  # per seed, sragu only: sragu - agu varies in size and sign


def _f(x: float) -> str:
    """The report's number format, restated here on purpose (not imported)."""
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:.4g}"


def _ci(v: np.ndarray) -> tuple[float, float, float]:
    n, mean = v.size, float(v.mean())
    half = stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


def _row(regime: str, method: str, seed: int, k: int) -> dict:
    family, frac, size = REGIMES[regime]
    off = {"random_10pct": 0.0, "random_50pct": 0.1, "class_3": 0.2}[regime]
    kl = BASE[method] + off + NOISE[seed] * (1 + 0.5 * k) + (WOBBLE[seed] if method == "sragu" else 0.0)
    tuned = method in ("sragu", "agu")
    return {"dataset": "digits", "model": "mlp", "seed": seed, "regime": regime, "regime_family": family,
            "forget_fraction": frac, "forget_size": size, "method": method, "status": "ok", "error": None,
            "tuned": tuned, "tuned_seed": 100 if tuned else None,
            "kl_to_gold": kl, "pd": kl / 4, "tv": kl / 3, "js": kl / 5, "mia_auc": 0.5 + kl / 10,
            "mia_gap": kl / 10 + 0.001 * seed, "forget_acc_gap": kl / 6, "retain_acc_gap": kl / 20,
            "test_acc_gap": kl / 12, "avg_gap": kl / 8, "rte": 1.0 if method == "retrain_indep" else 4.0 + k + seed,
            "method_time_s": 2.0 + seed, "test_acc_drop": kl / 7,
            "diverged": int(method == "finetune" and regime == "random_50pct" and seed == 1)}


def synthetic_table() -> pd.DataFrame:
    rows = [_row(rg, me, s, k) for rg in REGIMES for k, me in enumerate(BASE) for s in SEEDS]
    for r in rows:  # one failed cell: its metrics are absent and it must not count anywhere
        if (r["regime"], r["method"], r["seed"]) == ("random_10pct", "sragu", 2):
            r.update(status="failed", error="RuntimeError: CUDA out of memory\n  traceback line",
                     **{k: None for k in ("kl_to_gold", "pd", "tv", "js", "mia_gap", "avg_gap", "rte")})
    return pd.DataFrame(rows)


def _section(text: str, heading: str) -> str:
    """The text under ``heading`` (a full heading line) up to the next heading of the same or higher level."""
    level = heading.split(" ")[0]
    start = text.index(heading + "\n") + len(heading)
    stops = [i for i in (text.find("\n" + "#" * n + " ", start) for n in range(1, len(level) + 1)) if i >= 0]
    return text[start:min(stops) if stops else len(text)]


def _line(section: str, prefix: str) -> str:
    hits = [ln for ln in section.splitlines() if ln.startswith(prefix)]
    assert len(hits) == 1, (prefix, section)
    return hits[0]


# --------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    table = tmp / "results.parquet"
    pq.write_table(pa.Table.from_pandas(synthetic_table(), preserve_index=False), table)
    out = tmp / "out"
    proc = subprocess.run([sys.executable, "pipelines/report.py", "--table", str(table), "--out", str(out),
                           "--title", "Synthetic check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return pd.read_parquet(table), out, (out / "report.md").read_text(encoding="utf-8")


def test_summary_numbers_recomputed_from_parquet(built):
    df, _, md = built
    ok = df[df["status"] == "ok"]
    for regime, method, label, n in (("random_50pct", "sragu", "sragu†", 5), ("random_10pct", "sragu", "sragu†", 4),
                                     ("class_3", "finetune", "finetune", 5)):
        v = ok[(ok["regime"] == regime) & (ok["method"] == method)]["kl_to_gold"].to_numpy(float)
        mean, lo, hi = _ci(v)
        row = _line(_section(_section(md, f"### digits / mlp / {regime}"), "#### All metrics"), f"| {label} |")
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == str(n)
        assert cells[2] == f"{_f(mean)} [{_f(lo)}, {_f(hi)}]"  # kl_to_gold is the first metric column
    assert md.startswith("# Synthetic check\n")
    assert f"{len(df)} cells: {len(ok)} ok, 1 failed." in md


def test_paired_numbers_recomputed_from_parquet(built):
    df, _, md = built
    ok = df[(df["status"] == "ok") & (df["regime"] == "random_10pct")]
    a = ok[ok["method"] == "sragu"].set_index("seed")["kl_to_gold"]
    b = ok[ok["method"] == "agu"].set_index("seed")["kl_to_gold"]
    seeds = sorted(set(a.index) & set(b.index))
    assert seeds == [0, 1, 3, 4]  # seed 2 failed for sragu
    diff = (a[seeds] - b[seeds]).to_numpy(float)
    mean, lo, hi = _ci(diff)
    p = stats.wilcoxon(diff).pvalue
    sign_p = stats.binomtest(int((diff > 0).sum()), int((diff != 0).sum())).pvalue
    better = "sragu†" if mean < 0 else "agu†"
    row = _line(_section(md, "## Paired comparison: sragu − agu"), "| digits | mlp | random_10pct | kl_to_gold |")
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4:9] == ["4", f"{_f(mean)} [{_f(lo)}, {_f(hi)}]", _f(p), _f(sign_p), better]
    assert (diff > 0).sum() == 1 and p != sign_p and lo < mean < hi  # mixed signs: the two tests differ


def test_plots_are_real_pngs(built):
    _, out, md = built
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 4  # one per regime (3) + the random-deletion sweep
    for p in pngs:
        data = p.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, p
        assert f"]({p.name})" in md


def test_failed_tuned_metrics_and_sweep_sections(built):
    df, _, md = built
    failed = _section(md, "## Failed cells")
    assert "| digits | mlp | random_10pct | sragu† | 2 | failed | RuntimeError: CUDA out of memory |" in failed
    assert "traceback line" not in md
    tuning = _section(md, "## Tuning")
    assert _line(tuning, "| digits | mlp | sragu† |").split("|")[4].strip() == "100"
    assert "| finetune†" not in md and "| finetune |" in md
    metrics = _section(md, "## Metrics")
    assert "- `kl_to_gold`: mean KL(p_g || p_u), eps-clamped, on Q = D_f; lower is better." in metrics
    assert "- `rte`:" in metrics and "higher is better" in _line(metrics, "- `rte`:")
    sweep = _section(md, "## Deletion-size sweep (random regimes)")
    rate = df[(df["method"] == "finetune") & (df["regime"] == "random_50pct")]["diverged"].to_numpy(float)
    ci = stats.binomtest(int(rate.sum()), rate.size).proportion_ci(0.95, method="wilson")
    row = _line(sweep, "| digits | mlp | finetune | 0.5 | 5 |")
    assert rate.mean() == 0.2 and row.rstrip(" |").endswith(f"{_f(rate.mean())} [{_f(ci.low)}, {_f(ci.high)}]")
    assert "class_3" not in sweep
    floor = _section(md, "## Noise floor")
    v = df[(df["method"] == "retrain_indep") & (df["regime"] == "class_3")]["kl_to_gold"].to_numpy(float)
    mean, lo, hi = _ci(v)
    assert f"| digits | mlp | class_3 | 5 | {_f(mean)} [{_f(lo)}, {_f(hi)}] |" in floor


def test_no_tuned_column_means_no_marks(tmp_path):
    df = synthetic_table().drop(columns=["tuned", "tuned_seed"])
    md = R.write_report(df, tmp_path, "untuned").read_text(encoding="utf-8")
    assert "†" not in md and "## Tuning" not in md
    md = R.write_report(df[df["regime"] == "class_3"], tmp_path / "note", "untuned",
                        tuned_note="Defaults from the papers.")
    assert "Defaults from the papers." in _section(md.read_text(encoding="utf-8"), "## Tuning")


def test_bad_table_path_is_one_error_line(tmp_path):
    bad = tmp_path / "missing.parquet"
    proc = subprocess.run([sys.executable, "pipelines/report.py", "--table", str(bad), "--out", str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --table=") and str(bad) in lines[0]
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match="folder holding"):  # a folder without *.parquet
        R.read_results(tmp_path)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(ConfigError, match="readable Parquet"):
        R.read_results(tmp_path)


def test_read_results_unions_columns_of_a_folder(tmp_path):
    pq.write_table(pa.table({"dataset": ["d"], "seed": pa.array([0], pa.int64()), "kl_to_gold": [0.5]}),
                   tmp_path / "a.parquet")
    pq.write_table(pa.table({"dataset": ["d"], "seed": pa.array([1], pa.int64()), "error": ["boom"],
                             "tuned_seed": pa.array([None], pa.null())}), tmp_path / "b.parquet")
    df = R.read_results(tmp_path)
    assert list(df["seed"]) == [0, 1] and set(df.columns) == {"dataset", "seed", "kl_to_gold", "error", "tuned_seed"}
    assert df["kl_to_gold"].isna().tolist() == [False, True] and df["error"].isna().tolist() == [True, False]


# --------------------------------------------------------------------------------------------- hand cases
def _cells(method: str, values: list[float], seeds: list[int] | None = None, regime: str = "r",
           metric: str = "kl_to_gold") -> list[dict]:
    seeds = list(range(len(values))) if seeds is None else seeds
    return [{"dataset": "d", "model": "m", "seed": s, "regime": regime, "method": method, "status": "ok",
             metric: v} for s, v in zip(seeds, values)]


def test_summary_hand_case():
    rows = _cells("agu", [1.0, 2.0, 3.0]) + _cells("agu", [float("nan")], seeds=[3])
    rows.append({**rows[0], "seed": 9, "status": "failed", "kl_to_gold": 100.0})  # failed rows never count
    s = R.summary(rows, metrics=("kl_to_gold", "pd"))
    assert len(s) == 1 and s.loc[0, "n"] == 4 and not s.loc[0, "tuned"]  # 4 ok seeds; nan dropped per metric
    half = stats.t.ppf(0.975, 2) / math.sqrt(3)
    assert s.loc[0, "kl_to_gold_mean"] == pytest.approx(2.0)
    assert (s.loc[0, "kl_to_gold_lo"], s.loc[0, "kl_to_gold_hi"]) == pytest.approx((2 - half, 2 + half))
    assert math.isnan(s.loc[0, "pd_mean"])  # absent column
    floor = R.noise_floor(R.summary(rows + _cells("retrain_indep", [0.1, 0.3])))
    assert len(floor) == 1 and "method" not in floor and floor.loc[0, "kl_to_gold_mean"] == pytest.approx(0.2)


def test_paired_hand_cases():
    # differences sragu - agu = [1, 2, 3] on seeds 0..2; agu's seed 7 has no partner and is ignored
    rows = _cells("sragu", [2.0, 4.0, 6.0]) + _cells("agu", [1.0, 2.0, 3.0, 50.0], seeds=[0, 1, 2, 7])
    rows += _cells("sragu", [5.0, 6.0, 7.0], metric="rte") + _cells("agu", [4.0, 4.0, 4.0], metric="rte")
    p = R.paired_comparison(rows, metrics=("kl_to_gold", "rte")).set_index("metric")
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    kl = p.loc["kl_to_gold"]
    assert kl["n_pairs"] == 3 and kl["mean_diff"] == pytest.approx(2.0)
    assert (kl["lo"], kl["hi"]) == pytest.approx((2 - half, 2 + half))
    assert kl["wilcoxon_p"] == pytest.approx(0.25) and kl["sign_p"] == pytest.approx(0.25)
    assert kl["better"] == "agu" and not kl["ci_excludes_0"]  # lower is better, sragu is higher; CI [-0.48, 4.48]
    assert p.loc["rte", "better"] == "sragu"  # higher is better
    same = R.paired_comparison(_cells("sragu", [1.0, 2.0]) + _cells("agu", [1.0, 2.0])).set_index("metric")
    assert math.isnan(same.loc["kl_to_gold", "wilcoxon_p"]) and math.isnan(same.loc["kl_to_gold", "sign_p"])
    assert same.loc["kl_to_gold", "better"] == "tie"
    one = R.paired_comparison(_cells("sragu", [1.0]) + _cells("agu", [3.0])).set_index("metric")
    assert one.loc["kl_to_gold", "n_pairs"] == 1 and math.isnan(one.loc["kl_to_gold", "wilcoxon_p"])
    assert math.isnan(one.loc["kl_to_gold", "lo"]) and one.loc["kl_to_gold", "better"] == "sragu"
    assert R.paired_comparison(_cells("sragu", [1.0])).empty  # agu never ran


def test_deletion_sweep_hand_case():
    rows = []
    for frac, divs in ((0.5, [1, 0, 0, 1]), (0.1, [0, 0, 0, 0])):
        for s, dv in enumerate(divs):
            rows.append({"dataset": "d", "model": "m", "seed": s, "regime": f"random_{frac}", "method": "agu",
                         "status": "ok", "regime_family": "random", "forget_fraction": frac, "diverged": dv,
                         "kl_to_gold": 1.0 + s, "test_acc_drop": 0.1})
    rows.append({**rows[0], "regime": "class_3", "regime_family": "class", "forget_fraction": 0.3})
    sw = R.deletion_sweep(rows)
    assert list(sw["forget_fraction"]) == [0.1, 0.5] and list(sw["n"]) == [4, 4]
    assert list(sw["diverged_rate_mean"]) == [0.0, 0.5] and sw.loc[0, "diverged_rate_lo"] == 0.0
    # Wilson 95% interval of 0/4 by hand: z = 1.96, upper = z^2 / (n + z^2)
    z2 = stats.norm.ppf(0.975) ** 2
    assert sw.loc[0, "diverged_rate_hi"] == pytest.approx(z2 / (4 + z2))
    assert sw.loc[1, "kl_to_gold_mean"] == pytest.approx(2.5)
    assert R.deletion_sweep([{k: v for k, v in r.items() if k != "regime_family"} for r in rows]).empty


def test_markdown_table_and_format():
    df = pd.DataFrame({"method": ["a|b", None], "n": [3, 12], "x": [0.123456, float("nan")], "ok": [True, False]})
    assert R.to_markdown_table(df) == ("| method | n | x | ok |\n| --- | ---: | ---: | --- |\n"
                                       "| a\\|b | 3 | 0.1235 | yes |\n|  | 12 | nan | no |")
    assert [R.fmt(x) for x in (2.0, 12345.0, 0.000123456, 1234.56)] == ["2", "12345", "0.0001235", "1235"]
    assert R.fmt_ci(1.0, 0.5, 1.5) == "1 [0.5, 1.5]" and R.fmt_ci(1.0, float("nan"), float("nan")) == "1"


def test_missing_required_column_is_a_clear_error():
    with pytest.raises(ConfigError, match="missing columns \\['status'\\]"):
        R.summary([{"dataset": "d", "model": "m", "seed": 0, "regime": "r", "method": "agu"}])


# --------------------------------------------------------------------------------------------- reference ensembles
ENS_BASES = ("kl_to_gold", "js", "avg_gap")  # gold distances given an ensemble distance and a floor band here
REFERENCE_METHODS = {"retrain_indep": 0.0, "agu": 0.4, "sragu": 0.2, "finetune": 0.9}


def with_reference(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the columns a run with reference ensembles and shadow models adds. The band of a (regime, seed)
    is the same on every method's row; retrain_indep's ``<m>_ens`` lies at the band's mean, every other method's
    well above its top. The failed cell has none of them."""
    df = df.copy()
    shift = df["method"].map(REFERENCE_METHODS)
    bump = df["regime"].map({"random_10pct": 0.0, "random_50pct": 0.05, "class_3": 0.1})
    for i, m in enumerate(ENS_BASES):
        mean = 0.02 * (i + 1) + 0.003 * df["seed"] + bump
        df[f"{m}_floor_mean"], df[f"{m}_floor_lo"], df[f"{m}_floor_hi"] = mean, 0.5 * mean, 1.5 * mean
        df[f"{m}_ens"] = mean + shift * (1 + 0.1 * df["seed"])
        df[f"{m}_ens_sd"] = 0.01
    for c, scale in (("klom_forget", 1.0), ("klom_forget_hi", 3.0), ("klom_retain", 0.2), ("klom_retain_hi", 0.5),
                     ("klom_val", 0.3), ("klom_val_hi", 0.6)):
        df[c] = scale * (0.05 + shift + bump + 0.01 * df["seed"] ** 2)
    df["ulira_auc"] = 0.5 + 0.4 * shift + 0.01 * df["seed"]
    df["ulira_tpr_1pct"] = 0.01 + 0.2 * shift
    df["ulira_tpr_01pct"] = 0.001 + 0.1 * shift + 0.001 * df["seed"]
    df["shadow_time_s"] = 10.0
    new = [c for c in df.columns if c.endswith(("_ens", "_ens_sd", "_lo", "_mean", "_hi")) or
           c.startswith(("klom_", "ulira_", "shadow_"))]
    df.loc[df["status"] != "ok", new] = float("nan")
    return df


REFERENCE_HEADINGS = ("## Against the reference ensemble", "## KLoM", "## U-LiRA")


def test_reference_sections_only_with_their_columns(tmp_path):
    old = synthetic_table()
    md_old = R.write_report(old, tmp_path / "old", "t").read_text(encoding="utf-8")
    assert not any(h in md_old for h in REFERENCE_HEADINGS)
    assert "_ens" not in md_old and "klom" not in md_old and "ulira" not in md_old.lower()
    # the columns present but empty (a run without ensembles, read together with one that had them): same bytes
    empty = with_reference(old)
    new = [c for c in empty.columns if c not in old.columns]
    empty[new] = float("nan")
    md_empty = R.write_report(empty, tmp_path / "empty", "t").read_text(encoding="utf-8")
    assert md_empty == md_old
    assert (tmp_path / "empty" / "verdict.csv").read_bytes() == (tmp_path / "old" / "verdict.csv").read_bytes()

    df = with_reference(old)
    md = R.write_report(df, tmp_path / "new", "t").read_text(encoding="utf-8")
    at = [md.index(h + "\n") for h in ("## Noise floor", *REFERENCE_HEADINGS, "## Deletion-size sweep (random regimes)",
                                       "## Verdict: sragu against each comparison method")]
    assert at == sorted(at)
    assert md.startswith(md_old[:md_old.index("## Metrics\n")])  # overview unchanged
    ok = df[df["status"] == "ok"]
    for heading, metric, col in (("### KLoM: digits / mlp / class_3", "klom_forget", 2),
                                 ("### U-LiRA: digits / mlp / class_3", "ulira_auc", 2),
                                 ("### Ensemble: digits / mlp / class_3", "js_ens", 2)):
        v = ok[(ok["regime"] == "class_3") & (ok["method"] == "finetune")][metric].to_numpy(float)
        mean, lo, hi = _ci(v)
        cells = [c.strip() for c in _line(_section(md, heading), "| finetune |").strip("|").split("|")]
        assert cells[1] == "5" and cells[col] == f"{_f(mean)} [{_f(lo)}, {_f(hi)}]", (heading, cells)
    # the roll-up over the two random regimes: the mean of the two per-regime means
    fam = _section(md, "### KLoM by regime family")
    per = [ok[(ok["regime"] == rg) & (ok["method"] == "agu")]["klom_forget"].mean()
           for rg in ("random_10pct", "random_50pct")]
    row = [c.strip() for c in _line(fam, "| digits | mlp | random | agu† |").strip("|").split("|")]
    assert row[4] == "2" and row[5] == _f(np.mean(per))
    assert "| digits | mlp | class | agu† | 1 |" in fam
    assert "- `klom_forget`:" in _section(md, "## Metrics") and "- `js_ens`:" in _section(md, "## Metrics")
    verdict = _section(md, "## Verdict: sragu against each comparison method")
    assert "`<m>_floor_mean`" in verdict and "KLoM, U-LiRA and sequential (`seq_*`) rows have no margin" in verdict
    assert "`<m>_floor_mean`" not in md_old


def test_floor_band_marks_methods_inside_it(tmp_path):
    # the band of js at seed s: mean 0.1 + 0.01 s in [0.05 + 0.01 s, 0.2 + 0.01 s]; over seeds 0..2 0.11 in [0.06, 0.21]
    rows = []
    for method, js_ens in (("retrain_indep", (0.09, 0.11, 0.13)), ("agu", (0.25, 0.3, 0.35)),
                           ("sragu", (0.2, 0.22, 0.24)), ("original", (0.01, 0.02, 0.03))):
        for s, v in enumerate(js_ens):
            rows.append({"dataset": "d", "model": "m", "seed": s, "regime": "r", "method": method, "status": "ok",
                         "js": 0.1, "js_ens": v, "js_floor_lo": 0.05 + 0.01 * s, "js_floor_mean": 0.1 + 0.01 * s,
                         "js_floor_hi": 0.2 + 0.01 * s})
    md = R.write_report(rows, tmp_path, "band").read_text(encoding="utf-8")
    sec = _section(md, "### Ensemble: d / m / r")
    assert _line(sec, "Floor band") == "Floor band (mean of the band over 3 seeds): `js` 0.11 in [0.06, 0.21]."
    mark = R.FLOOR_MARK

    def cell(method: str) -> str:
        return [c.strip() for c in _line(sec, f"| {method} |").strip("|").split("|")][2]

    assert cell("retrain_indep").endswith(mark)  # mean 0.11, inside the band
    assert cell("original").endswith(mark)  # mean 0.02, below it: at least as close as retraining
    assert not cell("agu").endswith(mark)  # mean 0.3, above
    assert not cell("sragu").endswith(mark)  # mean 0.22, just above the band's top 0.21
    assert "## KLoM" not in md and "## U-LiRA" not in md


def test_verdict_margin_of_ensemble_metrics_is_the_ensembles_floor():
    rows = []
    for method, base in (("sragu", 0.2), ("agu", 0.3), ("retrain_indep", 0.1)):
        for s in range(4):
            rows.append({"dataset": "d", "model": "m", "seed": s, "regime": "r", "method": method, "status": "ok",
                         "js": base + 0.01 * s, "js_ens": base + 0.02 * s * s, "js_floor_mean": 0.05 + 0.01 * s,
                         "avg_gap_ens": base, "avg_gap_floor_mean": 0.4,
                         "klom_forget": base * s, "ulira_auc": 0.5 + base + 0.01 * s * (1 + base)})
    # a failed cell's floor never counts, nor does a second ok row of a seed weigh it twice
    rows.append({**rows[0], "status": "failed", "js_floor_mean": 100.0})
    rows.append({**rows[-2], "method": "finetune"})
    t = R.verdict_table(rows)
    assert list(t["metric"]) == [*R.VERDICT_METRICS, "klom_forget", "ulira_auc", "js_ens", "avg_gap_ens"]
    v = t.set_index("metric")
    assert v.loc["js_ens", "margin"] == pytest.approx(np.mean([0.05 + 0.01 * s for s in range(4)]))
    assert v.loc["avg_gap_ens", "margin"] == pytest.approx(0.4)
    assert v.loc["js", "margin"] == pytest.approx(np.mean([0.1 + 0.01 * s for s in range(4)]))  # retrain_indep
    for m in ("klom_forget", "ulira_auc"):
        assert math.isnan(v.loc[m, "margin"]) and math.isnan(v.loc[m, "tost_p"]) and v.loc[m, "mde"] > 0
        assert v.loc[m, "verdict"] != "equivalent"
    js = v.loc["js_ens"]  # diffs sragu - agu = -0.1 on every seed: sragu better, and TOST vs margin 0.065 fails
    assert js["verdict"] == "sragu better" and js["tost_p"] == 1.0


def test_old_tables_give_the_old_verdicts():
    old = synthetic_table()
    explicit = R.verdict_table(old, metrics=R.VERDICT_METRICS)
    assert R.verdict_table(old).to_csv(index=False) == explicit.to_csv(index=False)
    empty = with_reference(old)
    empty[[c for c in empty.columns if c not in old.columns]] = float("nan")
    assert R.verdict_table(empty).to_csv(index=False) == explicit.to_csv(index=False)
    new = R.verdict_table(with_reference(old))
    assert new[new["metric"].isin(R.VERDICT_METRICS)].reset_index(drop=True).to_csv(index=False) == \
        explicit.to_csv(index=False)


def test_sequential_section_per_request_and_in_the_verdict(tmp_path):
    """A sequential regime's rows carry seq_t<t>_avg_gap per request; the section tabulates them per method (mean [t
    CI] over seeds), and the verdict compares sragu's worst request with no margin."""
    df = synthetic_table()
    seq = df[df["regime"] == "random_10pct"].copy()
    seq["regime"], seq["regime_family"] = "random_10pct_seq3", "sequential"
    shift = seq["method"].map(REFERENCE_METHODS)
    for t in (1, 2, 3):
        seq[f"seq_t{t}_avg_gap"] = 0.01 * t * (1 + shift) + 0.001 * seq["seed"]
    seq["seq_avg_gap_max"] = seq["seq_t3_avg_gap"]
    seq["seq_avg_gap_mean"] = seq["seq_t2_avg_gap"]
    seq["seq_js_max"] = 0.5 * seq["seq_t3_avg_gap"]
    seq["seq_steps"] = 3
    seq.loc[seq["status"] != "ok", [c for c in seq.columns if c.startswith("seq_")]] = float("nan")
    md_old = R.write_report(df, tmp_path / "old", "t").read_text(encoding="utf-8")
    assert "## Sequential deletions" not in md_old
    both = pd.concat([df, seq], ignore_index=True)
    md = R.write_report(both, tmp_path / "new", "t").read_text(encoding="utf-8")
    assert md.index("## Noise floor\n") < md.index("## Sequential deletions\n") < md.index("## Verdict")
    table = _section(md, "### Sequential: digits / mlp / random_10pct_seq3")
    ok = seq[seq["status"] == "ok"]
    head = [c.strip() for c in _line(table, "| method |").strip("|").split("|")]
    assert head[2:] == ["seq_t1_avg_gap", "seq_t2_avg_gap", "seq_t3_avg_gap", "seq_avg_gap_max ↓",
                        "seq_avg_gap_mean ↓", "seq_js_max ↓"]
    cells = [c.strip() for c in _line(table, "| finetune |").strip("|").split("|")]
    for i, t in enumerate((1, 2, 3)):
        v = ok[ok["method"] == "finetune"][f"seq_t{t}_avg_gap"].to_numpy(float)
        assert cells[2 + i] == "{} [{}, {}]".format(*map(_f, _ci(v)))
    assert "### Sequential: digits / mlp / random_10pct\n" not in md  # one-request regimes have no such table
    v = R.verdict_table(both)
    row = v[(v["regime"] == "random_10pct_seq3") & (v["metric"] == "seq_avg_gap_max") & (v["against"] == "agu")]
    assert len(row) == 1 and math.isnan(row.iloc[0]["margin"])
    assert row.iloc[0]["mean_diff"] == pytest.approx(0.03 * (0.2 - 0.4), abs=1e-12)  # sragu − agu, exact per seed
    assert not (v[v["regime"] == "random_10pct"]["metric"] == "seq_avg_gap_max").any()


# --------------------------------------------------------------------------------------------- headline table
GOLD = {"gold_forget_acc": (0.40, 0.42, 0.44), "gold_retain_acc": (0.99, 0.99, 0.99),
        "gold_test_acc": (0.90, 0.91, 0.92), "gold_mia_efficacy": (0.70, 0.72, 0.74),
        "gold_epochs_run": (20, 20, 14), "gold_stop_reason": ("max_iters", "max_iters", "param_change")}
# method: seeds, forget_acc, retain_acc, mia_efficacy, avg_gap, rte per seed. Built so that a wrong rule picks a
# different "best": agu has the highest UA (wrong if UA were "higher is better"), retrain_indep sits exactly on the
# gold's UA and original on its MIA-efficacy, lowest avg_gap and highest RTE (wrong if controls could win); salun
# misses seed 2, so averaging the gold over rows instead of seeds moves the gold's mean.
HAND = {
    "retrain_indep": ((0, 1, 2), (0.42, 0.42, 0.42), (0.99, 0.99, 0.99), (0.62,) * 3, (0.01,) * 3, (1.0,) * 3),
    "original": ((0, 1, 2), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (0.72, 0.72, 0.72), (0.0,) * 3, (1000.0,) * 3),
    "agu": ((0, 1, 2), (0.10, 0.12, 0.14), (0.95, 0.95, 0.95), (0.9, 0.9, 0.9), (0.2,) * 3, (5.0,) * 3),
    "sragu": ((0, 1, 2), (0.50, 0.52, 0.54), (0.97, 0.97, 0.97), (0.75, 0.75, 0.75), (0.05,) * 3, (4.0,) * 3),
    "salun": ((0, 1), (0.31, 0.35), (0.97, 0.97), (0.70, 0.70), (0.08,) * 2, (6.0,) * 2),
    "finetune": ((0,), (0.9,), (0.96,), (0.5,), (0.3,), (3.0,)),
}


def hand_headline_rows(regime: str = "high_loss_10pct", family: str | None = "high_loss", gold: bool = True) -> list:
    rows = []
    for method, (seeds, fa, ra, me, gap, rte) in HAND.items():
        for i, s in enumerate(seeds):
            row = {"dataset": "d", "model": "m", "seed": s, "regime": regime, "method": method, "status": "ok",
                   "forget_acc": fa[i], "retain_acc": ra[i], "test_acc": 0.9, "mia_efficacy": me[i],
                   "avg_gap": gap[i], "rte": rte[i], "epochs_run": (3, 5, 4)[s],
                   "stop_reason": ("max_iters", "param_change", "max_iters")[s]}
            if family:
                row["regime_family"] = family
            if gold:
                row.update({k: v[s] for k, v in GOLD.items()})
            rows.append(row)
    rows.append({**rows[-1], "seed": 5, "status": "failed", "forget_acc": 0.0})  # never counts
    return rows


def _cells_of(section: str, label: str) -> list[str]:
    return [c.strip() for c in _line(section, f"| {label} |").strip("|").split("|")]


def test_headline_numbers_gold_row_and_best_marks(tmp_path):
    h = R.headline(hand_headline_rows()).set_index("method")
    assert list(h.index) == [R.GOLD_ROW, *HAND]  # the gold first, then the methods as they appear
    # UA = 1 − forget_acc per seed, then mean and t interval; the gold's from gold_forget_acc, one value per seed
    ua = 1 - np.array(HAND["sragu"][1])
    assert (h.loc["sragu", "UA_mean"], h.loc["sragu", "UA_lo"], h.loc["sragu", "UA_hi"]) == pytest.approx(_ci(ua))
    gold_ua = 1 - np.array(GOLD["gold_forget_acc"])
    assert h.loc[R.GOLD_ROW, "UA_mean"] == pytest.approx(0.58, abs=1e-12)  # per seed, not per row (0.5814)
    assert (h.loc[R.GOLD_ROW, "UA_lo"], h.loc[R.GOLD_ROW, "UA_hi"]) == pytest.approx(_ci(gold_ua)[1:])
    assert h.loc[R.GOLD_ROW, "MIA-efficacy_mean"] == pytest.approx(0.72)
    assert h.loc[R.GOLD_ROW, "avg_gap_mean"] == 0 and h.loc[R.GOLD_ROW, "RTE_mean"] == 1  # by definition
    assert h.loc[R.GOLD_ROW, "n"] == 3 and h.loc["salun", "n"] == 2 and h.loc["finetune", "UA_n"] == 1
    best = {k: sorted(h.index[h[f"{k}_best"]]) for k in ("UA", "RA", "MIA-efficacy", "avg_gap", "RTE")}
    assert best == {"UA": ["salun"],  # |0.67 − 0.58| = 0.09 beats sragu's 0.10; agu (0.88) is the highest
                    "RA": ["salun", "sragu"],  # a tie at 0.97: both marked; original's 1.0 is a control
                    "MIA-efficacy": ["salun"],  # 0.70 is 0.02 from 0.72; original sits on it but is a control
                    "avg_gap": ["sragu"], "RTE": ["salun"]}
    assert h.loc["agu", "UA_ref"] == pytest.approx(0.58) and h.loc["agu", "UA_ref_from"] == R.GOLD_ROW
    assert (h.loc["sragu", "epochs_mean"], h.loc["sragu", "epochs_min"], h.loc["sragu", "epochs_max"]) == (4, 3, 5)
    assert h.loc["sragu", "stop_reason"] == "max_iters ×2, param_change ×1"
    assert h.loc["finetune", "stop_reason"] == "max_iters"
    # the gold's trace, one per seed (seed 2 has fewer rows: counting rows would give 18 and "max_iters ×9, …")
    assert (h.loc[R.GOLD_ROW, "epochs_mean"], h.loc[R.GOLD_ROW, "epochs_min"]) == (18, 14)
    assert h.loc[R.GOLD_ROW, "stop_reason"] == "max_iters ×2, param_change ×1"

    md = R.write_report(hand_headline_rows(), tmp_path, "headline").read_text(encoding="utf-8")
    sec = _section(md, "#### Headline: d / m / high_loss_10pct")
    head = [c.strip() for c in _line(sec, "| method |").strip("|").split("|")]
    assert head == ["method", "n", "UA → gold", "RA ↑", "TA ↑", "MIA-efficacy → gold", "avg_gap ↓", "RTE ↑",
                    "epochs run", "stop reason"]
    gold = _cells_of(sec, R.GOLD_LABEL)
    assert gold[2] == "{} [{}, {}]".format(*map(_f, _ci(gold_ua)))
    assert gold[6:] == ["0 (by definition)", "1 (by definition)", "18 (14–20)", "max_iters ×2, param_change ×1"]
    assert "not in these results rows" not in sec
    salun = _cells_of(sec, "salun")
    assert salun[2] == "**{} [{}, {}]**".format(*map(_f, _ci(1 - np.array(HAND["salun"][1]))))
    assert salun[3].startswith("**0.97") and _cells_of(sec, "sragu")[3].startswith("**0.97")
    assert not _cells_of(sec, "agu")[2].startswith("**") and not _cells_of(sec, "original")[6].startswith("**")
    assert _cells_of(sec, "sragu")[8:] == ["4 (3–5)", "max_iters ×2, param_change ×1"]
    fine = _cells_of(sec, "finetune")
    assert fine[2] == f"{_f(1 - 0.9)} ({R.NO_INFERENCE})" and fine[8] == "3"
    assert sum(R.NO_INFERENCE in c for c in fine) == 6  # every metric cell of the one-seed method
    assert R.NO_INFERENCE not in "".join(salun)  # two seeds give an interval
    # the headline comes before the table of every metric, inside the regime's section
    regime = _section(md, "### d / m / high_loss_10pct")
    assert regime.index("#### Headline: d / m / high_loss_10pct") < regime.index("#### All metrics")


def test_headline_without_gold_columns_measures_against_retrain_indep(tmp_path):
    h = R.headline(hand_headline_rows(gold=False)).set_index("method")
    assert R.GOLD_ROW not in h.index
    # retrain_indep's UA 0.58 and MIA-efficacy 0.62 are the stand-in references: sragu (UA 0.48, 0.10 away) loses
    # to salun (0.67, 0.09 away); on MIA-efficacy salun's 0.70 (0.08 away) beats finetune's 0.5 and sragu's 0.75
    assert h.loc["agu", "UA_ref_from"] == R.FLOOR_METHOD and h.loc["agu", "UA_ref"] == pytest.approx(0.58)
    assert sorted(h.index[h["UA_best"]]) == ["salun"] and sorted(h.index[h["MIA-efficacy_best"]]) == ["salun"]
    assert h.loc["agu", "RA_ref_from"] == "" and math.isnan(h.loc["agu", "RA_ref"])  # only "→ gold" columns
    md = R.write_report(hand_headline_rows(gold=False), tmp_path, "no gold").read_text(encoding="utf-8")
    sec = _section(md, "#### Headline: d / m / high_loss_10pct")
    assert R.GOLD_LABEL not in sec and "UA (`gold_forget_acc`)" in sec and "stand-in for the gold" in sec
    # no headline column at all (an old table): no headline, the regime's table as before
    md_old = R.write_report(_cells("agu", [1.0, 2.0]), tmp_path / "old", "old").read_text(encoding="utf-8")
    assert "#### Headline" not in md_old and "#### All metrics" not in md_old and "SalUn" not in md_old


def test_readings_follow_the_regime(tmp_path):
    rows = hand_headline_rows() + hand_headline_rows("class_3", "class")
    md = R.write_report(rows, tmp_path, "readings").read_text(encoding="utf-8")
    for rg, specific in (("high_loss_10pct", "atypical, ambiguous or mislabelled points, some θ0 never fitted"),
                         ("class_3", "near 1, and here 1 is the target")):
        sec = _section(md, f"#### Headline: d / m / {rg}")
        bullets = [ln for ln in sec.splitlines() if ln.startswith("- **")]
        assert [b.split("**")[1] for b in bullets] == ["UA", "RA", "TA", "MIA-efficacy", "avg_gap", "RTE"]
        assert specific in sec
        ua = _line(sec, "- **UA**")
        assert "0: every forget point still classified as labelled; 1: none; 0.5: half" in ua
    assert "here 1 is the target" not in _section(md, "#### Headline: d / m / high_loss_10pct")
    assert "forgotten class's test points" in _line(_section(md, "#### Headline: d / m / class_3"), "- **TA**")
    # mia_auc's reading names the regime's non-members and explains a value far below 0.5 where the gold shows it;
    # a sequential regime reads as its one-request regime
    rule = R.readings("high_loss", "high_loss_10pct", ["mia_auc"])[2]
    assert "the test points θ0 ranks top by the same rule" in rule
    assert "in 93% of (forget, non-member) pairs the forget point has the higher loss" in rule
    assert "93%" not in R.readings("random", "random_10pct", ["mia_auc"])[2]
    seq = R.readings("sequential", "mislabelled_5pct_seq3", ["mia_auc"])
    assert "as `mislabelled`" in seq[0] and "random sample of D_test" in seq[2] and "the gold sits near 0" in seq[2]
    assert "D_test's points of the same class(es)" in R.readings("class", "class_3", ["mia_auc"])[2]
    one, every = (R.readings("duplicates", f"duplicates_5pct_{w}", ["UA"])[2] for w in ("one", "all"))
    assert "twins stay in D_r" in one and "twins" not in every
    assert "0.5: their losses cannot be told apart" in R.readings("", "some_new_regime", ["mia_auc"])[2]


# --------------------------------------------------------------------------------------------- figures
def _sweep_rows(fractions: tuple[float, ...]) -> list[dict]:
    return [{"dataset": "d", "model": "m", "seed": s, "regime": f"random_{f}", "regime_family": "random",
             "forget_fraction": f, "method": me, "status": "ok", "kl_to_gold": 0.1 * s + f, "test_acc_drop": 0.01,
             "diverged": 0} for f in fractions for me in ("agu", "sragu") for s in range(3)]


def test_sweep_figure_only_with_two_fractions(tmp_path):
    md = R.write_report(_sweep_rows((0.1,)), tmp_path / "one", "t").read_text(encoding="utf-8")
    sweep = _section(md, "## Deletion-size sweep (random regimes)")
    assert _line(sweep, "No sweep figure") == ("No sweep figure for d / m: its random regimes have one forget fraction "
                                               "(0.1); a curve needs at least two.")
    assert "sweep" not in " ".join(p.name for p in (tmp_path / "one").glob("*.png"))
    assert "| d | m | agu | 0.1 | 3 |" in sweep  # the table stays
    md = R.write_report(_sweep_rows((0.1, 0.3)), tmp_path / "two", "t").read_text(encoding="utf-8")
    pngs = [p.name for p in (tmp_path / "two").glob("*sweep*.png")]
    assert len(pngs) == 1 and f"]({pngs[0]})" in md and "No sweep figure" not in md


def test_method_colours_are_one_per_method_controls_grey(tmp_path):
    from matplotlib.colors import to_hex

    from components.report import plots

    registered = [m for m in METHOD_NAMES if m not in R.CONTROLS]
    assert set(plots._ORDER) == set(registered)  # the palette reads the registry's names off the package folder
    colours = [R.method_colour(m) for m in registered]
    assert len(set(colours)) == len(colours)  # every registered method its own colour
    for c in R.CONTROLS:  # grey: r = g = b, and not a method's colour
        h = R.method_colour(c)
        assert h[1:3] == h[3:5] == h[5:7] and h not in colours
    assert R.method_colour("not_registered") == R.method_colour("not_registered")
    # a figure colours each method's dot by method, whatever the order, and the same method alike across figures
    summ = R.summary(_cells("agu", [1.0, 2.0]) + _cells("original", [3.0, 4.0]) + _cells("sragu", [0.5, 0.7]))
    dots = []
    for order in (["agu", "original", "sragu"], ["sragu", "agu", "original"]):
        rows = summ.set_index("method").loc[order].reset_index()
        fig = plots.plot_regime(tmp_path / f"{order[0]}.png", "t", rows, order, None, ["kl_to_gold"])
        dot = fig.axes[0].collections[-1]  # the means, drawn last
        dots.append(dict(zip(order, (to_hex(c) for c in dot.get_facecolors()))))
        assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == order
    assert dots[0] == dots[1] == {m: R.method_colour(m) for m in ("agu", "original", "sragu")}
    assert len(set(dots[0].values())) == 3


SRAGU_TABLE = [{"name": "1", "kind": "linear", "shape": "256x784", "alpha": 2.4, "status": "ok", "omega": 1.3,
                "omega_used": 1.3, "multiplier": 1.1},
               {"name": "3", "kind": "linear", "shape": "256x256", "alpha": 9.5, "status": "ok", "omega": 0.3,
                "omega_used": 0.3, "multiplier": 0.2},
               {"name": "5", "kind": "linear", "shape": "10x256", "alpha": float("nan"), "status": "too_few_evals",
                "omega": 0.8, "omega_used": 0.8, "multiplier": 0.7}]


def test_alpha_omega_bars_named_by_layer_and_shape():
    want = ["1: linear 256×784", "3: linear 256×256", "5: linear 10×256 *"]  # not 0, 1, 2; the α-less layer marked
    assert R.alpha_omega_labels(SRAGU_TABLE) == want
    fig = R.alpha_omega_figure(SRAGU_TABLE)
    ax_a, ax_w = fig.axes
    assert [t.get_text() for t in ax_w.get_xticklabels()] == want
    assert [bool(b.get_hatch()) for b in ax_w.patches] == [False, False, True]  # the fallback ω is marked
    assert [b.get_height() for b in ax_w.patches] == pytest.approx([1.1, 0.2, 0.7])  # the multiplier is drawn
    assert "no α" in [t.get_text() for t in ax_a.texts] and "1 with no α" in fig.get_suptitle()
    small = [{**SRAGU_TABLE[1], "status": "small_n"}]  # a finite α on too few eigenvalues is not reliable either
    assert R.alpha_omega_labels(small) == ["3: linear 256×256 *"] and not R.alpha_reliable(small[0])
    assert R.alpha_reliable({"alpha": 3.0}) and not R.alpha_reliable({"alpha": None})  # no status: finite α
    # agu_layerwise's table has names and steps only: names, no α mark, and the figure says there is no α
    layerwise = [{"name": "fc1", "omega_used": 1.0, "multiplier": 1.0}, {"name": "fc2", "omega_used": 0.5,
                                                                        "multiplier": 0.5}]
    assert R.alpha_omega_labels(layerwise) == ["fc1", "fc2"]
    assert "no α in this table" in R.alpha_omega_figure(layerwise).get_suptitle()
