"""The report's figures: one panel per metric and regime, the deletion-size sweep, and a cell's α/ω table.

Drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas; they are never registered with pyplot, so
there is no global figure state to close. Every figure colours a method the same way (``method_colour``): the
controls (``original``, ``retrain_indep``) in grey, every other method its own colour, fixed by the method registry
so that a method keeps its colour across figures and reports.
"""

from __future__ import annotations

import math
import pkgutil
import re
import textwrap
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

import sragu_core

from .tables import CONTROLS, FLOOR_METHOD, GOLD_DISTANCES, direction

__all__ = ["slug", "method_colour", "plot_regime", "plot_sweep", "alpha_omega_labels", "alpha_reliable",
           "alpha_omega_figure"]

# matplotlib's tab10 then its light tab20 partners, without the two greys (kept for the controls)
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
            "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")
_GREYS = {"original": "#4d4d4d", FLOOR_METHOD: "#a6a6a6"}
# the compared pair first (the two strongest colours), then the method registry's names in its order. A method's
# file stem is its registry key (house style 2), so the names are read off the package folder without importing
# every method (that import costs most of a second, and the console imports this module too).
_REGISTERED = sorted(m.name for m in pkgutil.iter_modules([str(Path(sragu_core.__file__).parent / "methods")])
                     if not m.name.startswith("_"))
_ORDER = tuple(dict.fromkeys(m for m in ("sragu", "agu", *_REGISTERED) if m not in CONTROLS))


def slug(*parts: object) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(str(p) for p in parts)).strip("-")


def method_colour(method: str) -> str:
    """A method's colour in every figure: grey for a control; a registered method's by its place in the registry;
    an unregistered name one of the same colours chosen by a stable hash (it may share one)."""
    if method in _GREYS:
        return _GREYS[method]
    i = _ORDER.index(method) if method in _ORDER else zlib.crc32(method.encode())
    return _COLOURS[i % len(_COLOURS)]


def _yerr(mean: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    err = np.vstack([mean - lo, hi - mean])
    return np.where(np.isfinite(err) & (err >= 0), err, 0.0)


def plot_regime(path: Path, title: str, rows: pd.DataFrame, labels: list[str], floor: pd.Series | None,
                metrics: Sequence[str]):
    """One panel per metric: each method's mean (dot) and 95% CI (bar) in the method's colour; the retrain_indep
    floor as a grey dashed line and band. Saves to ``path`` and returns the Figure."""
    from matplotlib.figure import Figure

    ncols = min(4, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    width = 3.4 * ncols
    fig = Figure(figsize=(width, 3.0 * nrows), dpi=100)
    # fixed margins: a layout engine doubles the drawing time, which is most of the report's runtime; the left one
    # leaves room for the first method's slanted label
    fig.subplots_adjust(left=0.7 / width, right=0.98, top=1 - 0.8 / (3.0 * nrows), bottom=0.9 / (3.0 * nrows),
                        wspace=0.3, hspace=0.9)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    x = np.arange(len(rows))
    colours = [method_colour(m) for m in rows["method"]]
    for ax, m in zip(axes, metrics):
        mean, lo, hi = (rows[f"{m}_{s}"].to_numpy(dtype=np.float64) for s in ("mean", "lo", "hi"))
        mean = np.where(np.isfinite(mean), mean, np.nan)
        err = _yerr(mean, lo, hi)
        # one call per mark kind, coloured per point: per-method errorbar calls would cost ~10x the drawing time
        ax.vlines(x, mean - err[0], mean + err[1], colors=colours, lw=1.2)
        ax.scatter(np.r_[x, x], np.r_[mean - err[0], mean + err[1]], c=colours * 2, marker="_", s=30)
        ax.scatter(x, mean, c=colours, s=22, zorder=3)
        if floor is not None and m in GOLD_DISTANCES and np.isfinite(floor[f"{m}_mean"]):
            ax.axhline(floor[f"{m}_mean"], color="grey", ls="--", lw=1)
            if np.isfinite(floor[f"{m}_lo"]) and np.isfinite(floor[f"{m}_hi"]):
                ax.axhspan(floor[f"{m}_lo"], floor[f"{m}_hi"], color="grey", alpha=0.2, lw=0)
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{m} ({direction(m)})", fontsize=9)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle(textwrap.fill(f"{title}: mean and 95% CI across seeds, one colour per method (controls grey); grey "
                               f"dashed line and band: {FLOOR_METHOD} noise floor (mean, 95% CI)", int(11 * width)),
                 fontsize=10)
    fig.savefig(path)
    return fig


def plot_sweep(path: Path, title: str, rows: pd.DataFrame, label: dict[str, str]):
    """kl_to_gold, test_acc_drop and diverged rate against forget_fraction, one line (and CI band) per method in the
    method's colour. Only meaningful with two or more fractions (the report checks). Saves and returns the Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.3), dpi=100)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.84, bottom=0.15, wspace=0.25)
    axes = fig.subplots(1, 3)
    for ax, m in zip(axes, ("kl_to_gold", "test_acc_drop", "diverged_rate")):
        for method, g in rows.groupby("method", sort=False):
            x = g["forget_fraction"].to_numpy(dtype=np.float64)
            mean, lo, hi = (g[f"{m}_{s}"].to_numpy(dtype=np.float64) for s in ("mean", "lo", "hi"))
            colour = method_colour(method)
            ax.plot(x, np.where(np.isfinite(mean), mean, np.nan), marker="o", color=colour, label=label[method])
            band = np.isfinite(lo) & np.isfinite(hi)
            if band.any():
                ax.fill_between(x[band], lo[band], hi[band], color=colour, alpha=0.15, lw=0)
        ax.set_xlabel("forget_fraction")
        ax.set_title(f"{m} (lower)", fontsize=9)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{title}: random deletions, mean and 95% CI across seeds", fontsize=10)
    fig.savefig(path)
    return fig


# --------------------------------------------------------------------------------------------- α/ω of one cell
def _float(v: object) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def alpha_reliable(row: Mapping) -> bool:
    """Whether a layer's α is a reliable fit: the spectral table's ``status`` is ``ok`` (``small_n``: fewer than 20
    eigenvalues, where weightwatcher would switch estimator; ``too_few_evals``: no α, so SRAGU gave the layer the
    fallback ω), or, in a table without ``status``, α is finite."""
    if "status" in row:
        return row["status"] == "ok"
    return math.isfinite(_float(row.get("alpha")))


def _shape(v: object) -> str:
    """``"256×784"`` from the table's ``"256x784"`` (``LayerAlpha.as_dict``) or a list/tuple of ints."""
    if isinstance(v, (list, tuple)):
        return "×".join(str(int(s)) for s in v)
    return str(v).replace("x", "×") if v not in (None, "") else ""


def alpha_omega_labels(rows: Sequence[Mapping]) -> list[str]:
    """One x label per layer: ``"<name>: <kind> <out×in[×kh×kw]>"`` — the module's name in the model (``1``, ``3``,
    ``5`` in an ``nn.Sequential`` MLP are names, not positions in the table), then its kind and weight shape where
    the table has them (SRAGU's does; a table without them gets the name only), and `` *`` for a layer without a
    reliable α (``alpha_reliable``) when the table has α at all."""
    has_alpha = any("alpha" in r or "status" in r for r in rows)
    out = []
    for i, r in enumerate(rows):
        what = " ".join(p for p in (str(r.get("kind", "")), _shape(r.get("shape"))) if p)
        label = f"{r.get('name', i)}" + (f": {what}" if what else "")
        out.append(label + (" *" if has_alpha and not alpha_reliable(r) else ""))
    return out


def alpha_omega_figure(rows: Sequence[Mapping]):
    """Bars of α (top) and the step multiplier (bottom) per layer from an α/ω table (rows with ``name`` and, from
    SRAGU, ``kind``, ``shape``, ``alpha``, ``status``, ``omega``, ``omega_used``, ``multiplier``). Layers are
    labelled by ``alpha_omega_labels``. A layer whose α is not reliable is marked: its α bar (if any) hatched,
    "no α" where there is none, and its ω bar hatched (ω is then SRAGU's fallback, ``omega_missing``, not read off
    α). Returns the Figure (its x tick labels are the layer labels)."""
    from matplotlib.figure import Figure

    labels = alpha_omega_labels(rows)
    has_alpha = any("alpha" in r or "status" in r for r in rows)
    alpha = np.array([_float(r.get("alpha")) for r in rows], dtype=np.float64)
    reliable = np.array([alpha_reliable(r) for r in rows], dtype=bool) if has_alpha else np.ones(len(rows), bool)
    # the bottom panel: what each layer's step was multiplied by (c·ω after renormalisation and any placebo) where
    # the table has it, else the ω used, else the map's ω
    key = next((k for k in ("multiplier", "omega_used", "omega") if any(k in r for r in rows)), "omega")
    omega = np.array([_float(r.get(key)) for r in rows], dtype=np.float64)
    width = max(6.5, 0.7 * len(rows) + 2)
    fig = Figure(figsize=(width, 5.5), dpi=100)
    fig.subplots_adjust(left=0.8 / width, right=0.98, top=0.82, bottom=0.24, hspace=0.15)
    ax_a, ax_w = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(rows))
    colours = np.where(reliable, "tab:blue", "#a6a6a6")
    ax_a.bar(x, np.where(np.isfinite(alpha), alpha, 0.0), color=colours)
    ax_w.bar(x, np.where(np.isfinite(omega), omega, 0.0), color=np.where(reliable, "tab:orange", "#a6a6a6"))
    for ax in (ax_a, ax_w):
        for bar, ok in zip(ax.patches, reliable):
            if not ok:
                bar.set_hatch("//")
    for i in np.flatnonzero(~np.isfinite(alpha) & has_alpha):
        ax_a.annotate("no α", (i, 0), ha="center", va="bottom", color="tab:red", fontsize=8)
    ax_a.set_ylabel("α (power-law exponent)")
    ax_w.set_ylabel({"multiplier": "step multiplier c·ω", "omega_used": "ω used"}.get(key, "ω (step weight)"))
    ax_w.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    missing, small = int((~np.isfinite(alpha) & has_alpha).sum()), int((~reliable & np.isfinite(alpha)).sum())
    if not has_alpha:
        note = "no α in this table (the method sets its per-layer steps without α)"
        ax_a.text(0.5, 0.5, note, transform=ax_a.transAxes, ha="center", fontsize=8)
    elif missing or small:
        parts = [f"{missing} with no α (too few eigenvalues; its ω is the fallback)" if missing else "",
                 f"{small} with α fitted on < 20 eigenvalues" if small else ""]
        note = "* not a reliable α (grey, hatched): " + "; ".join(p for p in parts if p)
    else:
        note = "every layer's α is a fit on ≥ 20 eigenvalues"
    fig.suptitle(f"Per-layer α and {ax_w.get_ylabel()}\n" + textwrap.fill(note, int(13 * width)), fontsize=9)
    if not rows:
        ax_a.text(0.5, 0.5, "no layers", transform=ax_a.transAxes, ha="center")
    return fig
