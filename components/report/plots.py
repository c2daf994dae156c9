"""The report's figures: one panel per metric and regime, and the deletion-size sweep.

Drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas; they are never registered with pyplot, so
there is no global figure state to close.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .tables import FLOOR_METHOD, GOLD_DISTANCES, direction

__all__ = ["slug", "plot_regime", "plot_sweep"]


def slug(*parts: object) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(str(p) for p in parts)).strip("-")


def _yerr(mean: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    err = np.vstack([mean - lo, hi - mean])
    return np.where(np.isfinite(err) & (err >= 0), err, 0.0)


def plot_regime(path: Path, title: str, rows: pd.DataFrame, labels: list[str], floor: pd.Series | None,
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
        ax.set_title(f"{m} ({direction(m)})", fontsize=9)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle(f"{title}: mean and 95% CI across seeds; grey dashed line and band: {FLOOR_METHOD} "
                 "noise floor (mean, 95% CI)", fontsize=10)
    fig.savefig(path)


def plot_sweep(path: Path, title: str, rows: pd.DataFrame, label: dict[str, str]) -> None:
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
