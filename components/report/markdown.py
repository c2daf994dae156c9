"""The report as Markdown: number formatting, pipe tables and ``write_report`` (one function per section).

Numbers in ``report.md`` are formatted by ``fmt``: integral values as integers, all others with 4 significant
digits (``f"{x:.4g}"``); an interval is ``"mean [lo, hi]"``, or just ``"mean"`` when it is undefined (n = 1).
Every number in the report is computed from the table passed in.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sragu_core.evaluate import METRICS

from .plots import plot_regime, plot_sweep, slug
from .readings import family_of, readings
from .tables import (
    CONTROLS,
    FLOOR_METHOD,
    GOLD_DISTANCES,
    GOLD_ROW,
    HEADLINE,
    PLOT_METRICS,
    REPORT_METRICS,
    _ci_names,
    _frame,
    _values,
    deletion_sweep,
    direction,
    ensemble_floor,
    family_means,
    headline,
    noise_floor,
    paired_comparison,
    summary,
)
from .verdict import verdict_table

__all__ = ["fmt", "fmt_ci", "to_markdown_table", "write_report", "readings", "DAGGER", "FLOOR_MARK",
           "ENSEMBLE_HEADLINE", "KLOM_METRICS", "ULIRA_METRICS", "GOLD_LABEL", "NO_INFERENCE"]

DAGGER = "†"
_ARROW = {"lower": " ↓", "higher": " ↑"}
_DIRECTION_TEXT = {"lower": "lower is better", "higher": "higher is better",
                   "closer_to_gold": "closer to the gold (retrained) model's value is better",
                   "n/a": "descriptive, no better direction"}
# the columns of the reference-ensemble, KLoM and U-LiRA sections (those with a value in an ok row are shown;
# a run without reference ensembles or shadow models has none, and its report has none of these sections)
ENSEMBLE_HEADLINE = ("js_ens", "kl_to_gold_ens", "pd_ens", "mia_gap_ens", "avg_gap_ens")
KLOM_METRICS = ("klom_forget", "klom_forget_hi", "klom_retain", "klom_val")
ULIRA_METRICS = ("ulira_auc", "ulira_tpr_1pct", "ulira_tpr_01pct")
SEQ_HEADLINE = ("seq_avg_gap_max", "seq_avg_gap_mean", "seq_js_max")  # after the per-request avg_gap columns
FLOOR_MARK = "≤ floor"
GOLD_LABEL = "gold (retrained)"  # the headline table's first row
NO_INFERENCE = "n=1: no inference"  # a headline cell resting on one seed: no interval, nothing to test
_HEAD_ARROW = {"lower": " ↓", "higher": " ↑", "closer_to_gold": " → gold"}


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


# --------------------------------------------------------------------------------------------- report
def _ci_table(rows: pd.DataFrame, metrics: Sequence[str], lead: dict[str, list]) -> pd.DataFrame:
    cols = dict(lead)
    for m in metrics:
        cols[m + _ARROW.get(direction(m), "")] = [fmt_ci(*r) for r in rows[_ci_names([m])].to_numpy()]
    return pd.DataFrame(cols)


def _listing(values: Iterable[object]) -> str:
    return ", ".join(fmt(v) for v in dict.fromkeys(values)) or "none"


@dataclass
class _Report:
    """What every section reads: the table, its derived statistics, and the figure counter."""

    d: pd.DataFrame
    out_dir: Path
    ok: pd.DataFrame
    failed: pd.DataFrame
    metrics: list[str]
    summ: pd.DataFrame
    floor: pd.DataFrame
    sweep: pd.DataFrame
    paired: pd.DataFrame
    verdict: pd.DataFrame
    tuned: pd.DataFrame
    marked: set
    head: pd.DataFrame
    fig_no: int = 0

    @classmethod
    def of(cls, df: pd.DataFrame | Iterable[Mapping], out_dir: Path) -> _Report:
        d = _frame(df)
        ok, failed = d[d["status"] == "ok"], d[d["status"] != "ok"]
        metrics = [m for m in REPORT_METRICS if _values(ok, m).size]
        summ = summary(d, metrics)
        tuned = d[d["tuned"]]
        return cls(d, out_dir, ok, failed, metrics, summ, noise_floor(summ), deletion_sweep(d), paired_comparison(d),
                   verdict_table(d), tuned, set(zip(tuned["dataset"], tuned["model"], tuned["method"])), headline(d))

    def lab(self, ds: str, mo: str, me: str) -> str:
        """A method's label: tuned methods carry a dagger."""
        return me + DAGGER if (ds, mo, me) in self.marked else me

    def figure(self, stem: str) -> str:
        self.fig_no += 1
        return f"fig{self.fig_no:02d}_{stem}.png"

    def present(self, metrics: Sequence[str]) -> list[str]:
        """The registered ``metrics`` with a value in some ok row."""
        return [m for m in metrics if m in METRICS and _values(self.ok, m).size]


def _overview(r: _Report, title: str) -> list[str]:
    d = r.d
    counts = ", ".join(f"{n} {st}" for st, n in d["status"].value_counts(sort=False).items()) or "none"
    return [f"# {title}", "",
            f"{len(d)} cells: {counts}. Datasets: {_listing(d['dataset'])}. "
            f"Models: {_listing(d['model'])}. Regimes: {_listing(d['regime'])}. Methods: {_listing(d['method'])}. "
            f"Seeds: {_listing(sorted(d['seed'].unique()))}.", "",
            "Intervals are 95% Student-t confidence intervals across seeds, written `mean [lo, hi]` (just `mean` "
            "for a single seed); statistics use the ok cells only."]


def _metric_definitions(r: _Report) -> list[str]:
    md = ["## Metrics", ""]
    described = dict.fromkeys([*r.metrics, *(["test_acc_drop", "diverged"] if len(r.sweep) else []),
                               *r.present((*ENSEMBLE_HEADLINE, *KLOM_METRICS, *ULIRA_METRICS)),
                               *(r.paired["metric"] if len(r.paired) else []),
                               *(r.verdict["metric"] if len(r.verdict) else [])])
    for m in described:
        spec = METRICS[m] if m in METRICS else None
        text = spec.formula if spec else "not a registered metric"
        md.append(f"- `{m}`: {text}; {_DIRECTION_TEXT.get(direction(m), direction(m))}.")
    return md


def _tuning(r: _Report, tuned_note: str | None) -> list[str]:
    if not (len(r.tuned) or tuned_note):
        return []
    md = ["## Tuning", ""]
    if len(r.tuned):
        md.append(f"Methods marked {DAGGER} had their configuration tuned (column `tuned`), on the seed in "
                  "`tuned_seed`, and frozen for the evaluation seeds (docs/design.md §7).")
        md.append("")
        rows = []
        ok = r.ok
        for (ds, mo, me), g in r.tuned.groupby(["dataset", "model", "method"], sort=False):
            tseeds = sorted(int(s) for s in g["tuned_seed"].dropna().unique())
            evaluated = sorted(ok[(ok["dataset"] == ds) & (ok["model"] == mo) & (ok["method"] == me)]["seed"]
                               .unique())
            overlap = sorted(set(tseeds) & set(evaluated))
            rows.append({"dataset": ds, "model": mo, "method": r.lab(ds, mo, me),
                         "tuned on seed": _listing(tseeds) if tseeds else "unknown",
                         "evaluation seeds": _listing(evaluated),
                         "note": f"tuning seed {_listing(overlap)} is also evaluated" if overlap else ""})
        md.append(to_markdown_table(pd.DataFrame(rows)))
    if tuned_note:
        md += ["", tuned_note]
    return md


_HEADLINE_INTRO = (
    "Each regime opens with a **headline** table in the style of SalUn (Fan et al., ICLR 2024, Table 1): UA "
    "(unlearning accuracy, 1 − `forget_acc`), RA (`retain_acc`), TA (`test_acc`), MIA-efficacy (`mia_efficacy`), "
    "the loss attack's `mia_auc`, `avg_gap` and RTE (`rte`), each the mean [95% t CI] over seeds. Its first row is "
    f"the **gold**, `{GOLD_LABEL}`: the model retrained without D_f, whose own values the rows carry as `gold_*`; "
    "for avg_gap (its distance to itself, 0) and RTE (t_gold / t_gold, 1) they hold by definition. `epochs run` is "
    "the mean (min–max) over seeds and `stop reason` counts why the method stopped. **Bold** marks the best method "
    "of a column by its direction (↑ highest, ↓ lowest, → gold the mean closest to the gold's), among the methods "
    f"other than the controls ({', '.join(f'`{c}`' for c in CONTROLS)}) and the gold; it compares means and is not "
    f"a test (the Verdict section tests). A cell resting on one seed has no interval: `{NO_INFERENCE}`. Under each "
    "headline table, what 0, 0.5 and 1 of each column mean in that regime; then every metric of the report with "
    "its plot.")


def _per_regime(r: _Report) -> list[str]:
    md = ["## Summary per regime", ""]
    if r.summ.empty:
        md.append("No ok cells.")
    elif (r.head.loc[r.head["method"] != GOLD_ROW, [f"{c.key}_n" for c in HEADLINE]].to_numpy() > 0).any():
        md += [_HEADLINE_INTRO, ""]  # some regime has a headline table
    plot_metrics = [m for m in PLOT_METRICS if m in r.metrics]
    ok, floor = r.ok, r.floor
    for (ds, mo, rg), rows in r.summ.groupby(["dataset", "model", "regime"], sort=False):
        md += [f"### {ds} / {mo} / {rg}", ""]
        cells = ok[(ok["dataset"] == ds) & (ok["model"] == mo) & (ok["regime"] == rg)]
        facts = [f"`{c}` = {_listing(sorted(cells[c].dropna().unique()))}"
                 for c in ("regime_family", "forget_fraction", "forget_size") if c in cells and cells[c].notna().any()]
        if facts:
            md += ["; ".join(facts) + ".", ""]
        head = _headline(r, ds, mo, rg, cells)
        if head:
            md += head + ["#### All metrics", ""]
        labels = [r.lab(ds, mo, me) for me in rows["method"]]
        md.append(to_markdown_table(_ci_table(rows, r.metrics, {"method": labels, "n": list(rows["n"])})))
        if plot_metrics:
            name = r.figure(slug(ds, mo, rg))
            fl = floor[(floor["dataset"] == ds) & (floor["model"] == mo) & (floor["regime"] == rg)]
            plot_regime(r.out_dir / name, f"{ds} / {mo} / {rg}", rows, labels, fl.iloc[0] if len(fl) else None,
                        plot_metrics)
            md += ["", f"![{ds} / {mo} / {rg}]({name})"]
        md.append("")
    return md


def _headline_cell(row: pd.Series, key: str, defined: float | None) -> str:
    n = int(row[f"{key}_n"])
    if row["method"] == GOLD_ROW and defined is not None:
        text = f"{fmt(defined)} (by definition)"
    elif n == 0:
        text = "n/a"
    elif n == 1:
        text = f"{fmt(row[f'{key}_mean'])} ({NO_INFERENCE})"
    else:
        text = fmt_ci(row[f"{key}_mean"], row[f"{key}_lo"], row[f"{key}_hi"])
    return f"**{text}**" if row[f"{key}_best"] else text


def _epochs_cell(row: pd.Series) -> str:
    lo, hi = row["epochs_min"], row["epochs_max"]
    if lo != lo:
        return "—"
    return fmt(lo) if lo == hi else f"{fmt(row['epochs_mean'])} ({fmt(lo)}–{fmt(hi)})"


def _headline(r: _Report, ds: str, mo: str, rg: str, cells: pd.DataFrame) -> list[str]:
    """``#### Headline``: the SalUn-style table of one regime (``tables.headline``), its notes and its readings."""
    h = r.head[(r.head["dataset"] == ds) & (r.head["model"] == mo) & (r.head["regime"] == rg)]
    methods = h["method"] != GOLD_ROW
    cols = [c for c in HEADLINE if h.loc[methods, f"{c.key}_n"].sum() > 0]  # a column some method has values in
    if not cols:
        return []
    table = {"method": [GOLD_LABEL if me == GOLD_ROW else r.lab(ds, mo, me) for me in h["method"]], "n": list(h["n"])}
    for c in cols:
        table[c.key + _HEAD_ARROW.get(c.direction, "")] = [_headline_cell(row, c.key, c.gold_defined)
                                                          for _, row in h.iterrows()]
    if h["epochs_mean"].notna().any():
        table["epochs run"] = [_epochs_cell(row) for _, row in h.iterrows()]
    if (h["stop_reason"].fillna("") != "").any():
        table["stop reason"] = [x or "—" for x in h["stop_reason"].fillna("")]
    notes = []
    first = h.iloc[0]
    stand_in = [c for c in cols if first[f"{c.key}_ref_from"] == FLOOR_METHOD]
    if stand_in:
        notes.append("The rows carry no gold value for " + ", ".join(f"{c.key} (`gold_{c.source}`)" for c in stand_in)
                     + f", so the gold's is not shown and **best** there is the mean closest to `{FLOOR_METHOD}`'s "
                     "(another retrained model: a stand-in for the gold, not the gold).")
    gold = h[h["method"] == GOLD_ROW]
    if len(gold) and ("epochs run" in table or "stop reason" in table) and gold["epochs_mean"].isna().all():
        notes.append("The gold's epochs and stop reason are not in these results rows (`gold_epochs_run`, "
                     "`gold_stop_reason`; rows from before they were recorded): `—`.")
    family = family_of(cells, rg)
    lines = [f"#### Headline: {ds} / {mo} / {rg}", "", to_markdown_table(pd.DataFrame(table)), ""]
    if notes:
        lines += [" ".join(notes), ""]
    return lines + readings(family, rg, [c.key for c in cols]) + [""]


def _noise_floor(r: _Report) -> list[str]:
    floor = r.floor
    floor_metrics = [m for m in r.metrics if m in GOLD_DISTANCES]
    md = ["## Noise floor", "",
          f"`{FLOOR_METHOD}` is a second retrain on the retain set, scored against the gold like any method: "
          "its distance to the gold is the floor below which a method cannot be told apart from retraining "
          "(grey line and band in the plots).", ""]
    if len(floor) and floor_metrics:
        md.append(to_markdown_table(_ci_table(floor, floor_metrics, {
            "dataset": list(floor["dataset"]), "model": list(floor["model"]), "regime": list(floor["regime"]),
            "n": list(floor["n"])})))
    else:
        md.append(f"No ok `{FLOOR_METHOD}` cells, so no noise floor.")
    return md


def _regime_tables(r: _Report, metrics: Sequence[str], name: str, band=None) -> list[str]:
    """Per (dataset, model, regime): a ``### <name>: …`` table of methods (those with a value) × ``metrics`` (mean
    [95% t CI] over seeds). ``band(ds, mo, rg, rows, table)`` may append lines and mark cells."""
    summ = summary(r.ok, metrics)
    summ = summ[summ[[f"{m}_mean" for m in metrics]].notna().any(axis=1)]
    md = []
    for (ds, mo, rg), rows in summ.groupby(["dataset", "model", "regime"], sort=False):
        table = _ci_table(rows, metrics, {"method": [r.lab(ds, mo, me) for me in rows["method"]],
                                          "n": list(rows["n"])})
        notes = band(ds, mo, rg, rows, table) if band else []
        md += [f"### {name}: {ds} / {mo} / {rg}", "", *notes, to_markdown_table(table), ""]
    return md


def _family_rollup(r: _Report, metrics: Sequence[str], name: str) -> list[str]:
    """``### <name> by regime family``: the mean over a family's regimes of each method's per-regime mean."""
    fam = family_means(summary(r.ok, metrics), r.ok, metrics)
    fam = fam[fam[[f"{m}_mean" for m in metrics]].notna().any(axis=1)]
    if not len(fam):
        return []
    table = pd.DataFrame({"dataset": list(fam["dataset"]), "model": list(fam["model"]),
                          "regime_family": list(fam["regime_family"]),
                          "method": [r.lab(ds, mo, me) for ds, mo, me in zip(fam["dataset"], fam["model"],
                                                                            fam["method"])],
                          "regimes": list(fam["regimes"]),
                          **{m + _ARROW.get(direction(m), ""): list(fam[f"{m}_mean"]) for m in metrics}})
    return [f"### {name} by regime family", "",
            "The mean over the family's regimes (`regime_family`) of each method's mean over seeds; `regimes` is "
            "how many regimes it averages. No interval: regimes are not samples of one quantity.", "",
            to_markdown_table(table), ""]


def _ensemble(r: _Report) -> list[str]:
    metrics = r.present(ENSEMBLE_HEADLINE)
    if not metrics:
        return []
    floor = ensemble_floor(r.ok, [m[:-len("_ens")] for m in metrics])

    def band(ds: str, mo: str, rg: str, rows: pd.DataFrame, table: pd.DataFrame) -> list[str]:
        fl = floor[(floor["dataset"] == ds) & (floor["model"] == mo) & (floor["regime"] == rg)]
        parts = []
        for m in metrics:
            base = m[:-len("_ens")]
            mean, lo, hi = (fl.iloc[0][f"{base}_floor_{e}"] if len(fl) else float("nan") for e in ("mean", "lo", "hi"))
            if mean != mean:
                continue
            parts.append(f"`{base}` {fmt(mean)} in [{fmt(lo)}, {fmt(hi)}]")
            col = m + _ARROW.get(direction(m), "")
            table[col] = [f"{cell} {FLOOR_MARK}" if v <= hi else cell
                          for cell, v in zip(table[col], rows[f"{m}_mean"])]  # nan compares False
        if not parts:
            return ["Floor band: none recorded.", ""]
        return [f"Floor band (mean of the band over {int(fl.iloc[0]['n'])} seeds): " + "; ".join(parts) + ".", ""]

    return ["", "## Against the reference ensemble", "",
            "Each unlearned model u is also compared with every one of the gold.k independent retrains r_1 … r_k "
            "on the retain set (each with its own initialisation and batch order): `<m>_ens` is the mean over the "
            "members of m(u, r_i), a distance to the distribution of retrained models rather than to one draw "
            "from it. The floor band is the same metric between pairs of the retrains themselves, m(r_i, r_j) "
            "over i < j: how far two models retrained without the data lie from each other. It is written "
            "`mean in [lo, hi]` (the mean and the low and high quantiles over pairs, `gold.floor_quantiles`), each "
            "averaged over seeds; it is a spread of retrains, not a confidence interval. A method whose mean "
            f"`<m>_ens` lies inside the band or below it is marked `{FLOOR_MARK}`: it is as close to \"retrained\" "
            "as retraining is. Method cells are the mean [95% t CI] over seeds.", "",
            *_regime_tables(r, metrics, "Ensemble", band)][:-1]


def _klom(r: _Report) -> list[str]:
    metrics = r.present(KLOM_METRICS)
    if not metrics:
        return []
    return ["", "## KLoM", "",
            "KLoM (KL divergence of margins; Georgiev et al. 2024) asks whether the method's unlearned models are "
            "distributed like retrained ones, point by point: for each query point, the KL divergence between the "
            "histogram of its margin (z_y − logsumexp_{j≠y} z_j) over the shadow.n unlearned models (the method "
            "applied to shadow.n originals) and over the gold.k retrained models. `klom_forget`, `klom_retain` and "
            "`klom_val` are its mean over the query points of D_f, D_r and D_val; `klom_forget_hi` a high "
            "percentile over the forget points (`shadow.klom_percentile`), the worst-served points. Lower is "
            "better; about 0 means like retraining, up to the estimator's bias: with few models the histograms "
            f"are noisy and KLoM is above 0 even between two sets of retrains. `{FLOOR_METHOD}` (itself a "
            "retrain) is the control whose KLoM shows that bias at this n; `original`, the no-op, shows the value "
            "for not unlearning at all. Cells are the mean [95% t CI] over seeds.", "",
            *_regime_tables(r, metrics, "KLoM"), *_family_rollup(r, metrics, "KLoM")][:-1]


def _ulira(r: _Report) -> list[str]:
    metrics = r.present(ULIRA_METRICS)
    if not metrics:
        return []
    return ["", "## U-LiRA", "",
            "U-LiRA (Hayes et al. 2024) attacks each forget point with a per-example Gaussian likelihood-ratio "
            "test: did this model's margin on the point come from the unlearned or from the retrained "
            "distribution? The attack's shadow models are the run's own: the shadow.n unlearned models and the "
            "gold.k retrained ones. `ulira_auc` is its ROC AUC, `ulira_tpr_1pct` and `ulira_tpr_01pct` its "
            "true-positive rate at 1% and 0.1% false-positive rate. Chance — unlearned models indistinguishable "
            "from retrained ones — is 0.5, 0.01 and 0.001; lower is better down to those values. "
            f"`{FLOOR_METHOD}` shows the attack where there is nothing to find, `original` where nothing was "
            "forgotten. Cells are the mean [95% t CI] over seeds.", "",
            *_regime_tables(r, metrics, "U-LiRA"), *_family_rollup(r, metrics, "U-LiRA")][:-1]


def _sequential(r: _Report) -> list[str]:
    metrics = r.present(SEQ_HEADLINE)
    if not metrics:
        return []
    steps = int(pd.to_numeric(r.ok.get("seq_steps"), errors="coerce").max())
    per = [c for c in (f"seq_t{t}_avg_gap" for t in range(1, steps + 1)) if c in r.ok and r.ok[c].notna().any()]
    return ["", "## Sequential deletions", "",
            "A regime written `<regime>@<T>` (label `…_seq<T>`) deletes the same forget set in T successive "
            "requests on one model: request t removes its part of D_f from the model request t − 1 left, and the "
            "model is then compared with a retrain on D minus everything removed so far. `seq_t<t>_avg_gap` is "
            "that comparison after request t; `seq_avg_gap_max` and `seq_avg_gap_mean` its worst and mean over "
            "the requests, `seq_js_max` the worst forget-set JS. The cell's other columns (all sections above) "
            "score the model after the last request, against the same gold as the one-request regime. A method "
            "whose error builds up over requests shows a rising row. Lower is better; cells are the mean [95% t "
            "CI] over seeds.", "",
            *_regime_tables(r, [*per, *metrics], "Sequential")][:-1]


def _deletion_sweep(r: _Report) -> list[str]:
    sweep = r.sweep
    if not len(sweep):
        return []
    md = ["", "## Deletion-size sweep (random regimes)", "",
          "Stability under growing random deletions; `diverged_rate` is the fraction of ok cells that "
          "diverged, with a 95% Wilson score interval.", ""]
    labels = [r.lab(ds, mo, me) for ds, mo, me in zip(sweep["dataset"], sweep["model"], sweep["method"])]
    md.append(to_markdown_table(_ci_table(sweep, ("kl_to_gold", "test_acc_drop", "diverged_rate"), {
        "dataset": list(sweep["dataset"]), "model": list(sweep["model"]), "method": labels,
        "forget_fraction": list(sweep["forget_fraction"]), "n": list(sweep["n"])})))
    for (ds, mo), rows in sweep.groupby(["dataset", "model"], sort=False):
        fractions = sorted(rows["forget_fraction"].unique())
        if len(fractions) < 2:  # one point per method is not a curve
            md += ["", f"No sweep figure for {ds} / {mo}: its random regimes have one forget fraction "
                   f"({_listing(fractions)}); a curve needs at least two."]
            continue
        name = r.figure(f"sweep_{slug(ds, mo)}")
        plot_sweep(r.out_dir / name, f"{ds} / {mo}", rows, {me: r.lab(ds, mo, me) for me in rows["method"]})
        md += ["", f"![sweep {ds} / {mo}]({name})"]
    return md


def _paired(r: _Report) -> list[str]:
    paired = r.paired
    md = ["", "## Paired comparison: sragu − agu", ""]
    if not len(paired):
        return md + ["No (dataset, model, regime) has both sragu and agu cells."]
    md += ["Pairs are seeds where both methods are ok. Difference = sragu − agu; `better` names the method "
           "whose mean is better by the metric's direction (for a lower-is-better metric a negative difference "
           "favours sragu), `CI excludes 0` whether the 95% t interval of the difference excludes zero. Wilcoxon "
           "signed-rank p (zero differences dropped) is "
           "nan for fewer than 2 pairs or all-zero differences; the sign-test p is a binomial test of the "
           "positive differences among the non-zero ones. With n pairs neither rank test can go below "
           "p = 2/2^n (0.25 at n = 3, 0.0625 at n = 5); read the Verdict section for what the data can decide.", ""]
    md.append(to_markdown_table(pd.DataFrame({
        "dataset": paired["dataset"], "model": paired["model"], "regime": paired["regime"],
        "metric": paired["metric"], "n_pairs": paired["n_pairs"],
        "sragu − agu": [fmt_ci(*row) for row in paired[["mean_diff", "lo", "hi"]].to_numpy()],
        "Wilcoxon p": paired["wilcoxon_p"], "sign-test p": paired["sign_p"],
        "better": [r.lab(ds, mo, me) if me in ("sragu", "agu") else me
                   for ds, mo, me in zip(paired["dataset"], paired["model"], paired["better"])],
        "CI excludes 0": paired["ci_excludes_0"]})))
    return md


def _verdict(r: _Report) -> list[str]:
    v = r.verdict
    if not len(v):
        return []
    counts = v["verdict"].value_counts(sort=False)
    md = ["", "## Verdict: sragu against each comparison method", "",
          "Each row pairs sragu with one other method on the seeds where both are ok; the difference is "
          "sragu − other, so for a lower-is-better metric (↓) a negative difference favours sragu. `n` is the "
          "number of paired seeds. The t interval is the 95% Student-t interval of the mean difference; the "
          "bootstrap interval (BCa, 10,000 resamples) is shown beside it and is too narrow with few seeds. "
          f"The margin is the noise floor: the mean distance of `{FLOOR_METHOD}` (a second retrain) to the gold "
          "in the same regime; TOST (two one-sided t tests) p < 0.05 means the mean difference is shown to lie "
          "within ± that margin, i.e. the two methods are equivalent up to retraining noise. "
          "The MDE (minimum detectable effect) is the smallest true mean difference a two-sided paired t test "
          "at this n would detect with 80% power at α = 0.05: an `inconclusive` row says nothing about "
          "differences smaller than its MDE. Verdict: `<method> better` when the t interval excludes 0, else "
          "`equivalent` when TOST passes, else `inconclusive`; a metric with no noise floor (not a distance to "
          f"the gold, or no ok `{FLOOR_METHOD}` cells) can never be `equivalent`. See docs/statistics.md."
          + _reference_margins(v), "",
          "Verdicts: " + ", ".join(f"{n} {name}" for name, n in counts.items()) + ".", "", *_glance(r, v)]
    for (ds, mo, rg), rows in v.groupby(["dataset", "model", "regime"], sort=False):
        md += [f"### Verdict: {ds} / {mo} / {rg}", ""]
        boot = [f"[{fmt(lo)}, {fmt(hi)}]" if lo == lo and hi == hi else "nan"
                for lo, hi in zip(rows["boot_lo"], rows["boot_hi"])]
        tost = [f"{fmt(p)} (±{fmt(mg)})" if mg == mg and mg > 0 else "no floor"
                for p, mg in zip(rows["tost_p"], rows["margin"])]
        md.append(to_markdown_table(pd.DataFrame({
            "against": [r.lab(ds, mo, me) for me in rows["against"]],
            "metric": [m + _ARROW.get(direction(m), "") for m in rows["metric"]],
            "n": list(rows["n_pairs"]),
            "sragu − other [95% t CI]": [fmt_ci(*x) for x in rows[["mean_diff", "t_lo", "t_hi"]].to_numpy()],
            "median diff": list(rows["median_diff"]), "bootstrap CI": boot, "t p": list(rows["t_p"]),
            "TOST p (±margin)": tost, "MDE": list(rows["mde"]), "verdict": list(rows["verdict"])})))
        md.append("")
    return md[:-1]


def _reference_margins(v: pd.DataFrame) -> str:
    """The verdict text's note on the margins of reference-ensemble metrics, when the verdict has any."""
    ens = any(m.endswith("_ens") for m in v["metric"])
    shadow = any(m.startswith(("klom_", "ulira_", "seq_")) for m in v["metric"])
    text = (" For a distance to the reference ensemble (`<m>_ens`) the margin is the ensemble's own noise floor "
            "instead, the mean over seeds of `<m>_floor_mean` (see Against the reference ensemble).") if ens else ""
    if shadow:
        text += (" KLoM, U-LiRA and sequential (`seq_*`) rows have no margin (`no floor`): no equivalence claim, "
                 "only the MDE.")
    return text


GLANCE_METRIC = "js"  # the tuning objective's distance: bounded, so one diverged seed cannot decide a mean


def _glance(r: _Report, v: pd.DataFrame) -> list[str]:
    """One line per (dataset, model, regime), one column per comparison method: the verdict on ``GLANCE_METRIC``
    with its mean difference and 95% t interval, and the MDE where the verdict is not a difference."""
    v = v[v["metric"] == GLANCE_METRIC]
    if not len(v):
        return []
    against = list(dict.fromkeys(v["against"]))
    rows = []
    for (ds, mo, rg), g in v.groupby(["dataset", "model", "regime"], sort=False):
        row = {"dataset / model / regime": f"{ds} / {mo} / {rg}", "n": int(g["n_pairs"].max())}
        for a in against:
            hit = g[g["against"] == a]
            if not len(hit):
                row[a] = ""
                continue
            x = hit.iloc[0]
            text = f"{x['verdict']}: {fmt_ci(x['mean_diff'], x['t_lo'], x['t_hi'])}"
            if x["verdict"] in ("inconclusive", "equivalent"):
                text += f", MDE {fmt(x['mde'])}"
            row[a] = text
        rows.append(row)
    return [f"At a glance, on `{GLANCE_METRIC}` (sragu − other, 95% t interval; negative favours sragu):", "",
            to_markdown_table(pd.DataFrame(rows)), ""]


def _failed(r: _Report) -> list[str]:
    failed = r.failed
    if not len(failed):
        return []
    errors = [(e.strip().splitlines() or [""])[0][:200] for e in failed["error"]]
    return ["", "## Failed cells", "", to_markdown_table(pd.DataFrame({
        "dataset": list(failed["dataset"]), "model": list(failed["model"]), "regime": list(failed["regime"]),
        "method": [r.lab(ds, mo, me) for ds, mo, me in zip(failed["dataset"], failed["model"], failed["method"])],
        "seed": list(failed["seed"]), "status": list(failed["status"]), "error": errors}))]


def write_report(df: pd.DataFrame | Iterable[Mapping], out_dir: Path, title: str,
                 tuned_note: str | None = None) -> Path:
    """Write ``report.md`` and its PNG plots into ``out_dir``; return the path of ``report.md``.

    Sections: overview, metric definitions and directions, tuning (when any row is tuned or a note is given;
    tuned methods carry a † everywhere), per regime the SalUn-style headline table (``tables.headline``: the gold
    row, best marks, epochs and stop reasons) with each column's reading for the regime, then the summary table of
    every report metric with its plot, the retrain_indep noise floor,
    when the table has their columns the distances to the reference ensemble against its own floor band, KLoM and
    U-LiRA (per regime, and per regime family) and sequential deletions (per request), the random-deletion sweep
    (its figure only for a (dataset, model) with two or more forget fractions; else one line says why),
    the verdict of sragu against each method of ``VERDICT_AGAINST`` that was run (``verdict_table``; when any
    was), the paired sragu − agu comparison, and the failed cells (when any). The full verdict table also goes to
    ``verdict.csv`` when it has rows.
    ``report.md`` is written last, through a temporary file, so a crash never leaves a half-written report.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    r = _Report.of(df, out_dir)
    tuning = _tuning(r, tuned_note)
    md = [*_overview(r, title), "", *_metric_definitions(r), *([""] + tuning if tuning else []), "",
          *_per_regime(r), *_noise_floor(r), *_ensemble(r), *_klom(r), *_ulira(r), *_sequential(r),
          *_deletion_sweep(r),
          *_verdict(r), *_paired(r), *_failed(r)]
    if len(r.verdict):  # every verdict row with all its columns, for readers who want more than the tables
        tmp_csv = out_dir / ".verdict.csv.tmp"
        r.verdict.to_csv(tmp_csv, index=False)
        os.replace(tmp_csv, out_dir / "verdict.csv")
    report = out_dir / "report.md"
    tmp = out_dir / ".report.md.tmp"
    tmp.write_text("\n".join(md) + "\n", encoding="utf-8")
    os.replace(tmp, report)
    return report
