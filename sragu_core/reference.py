"""Metrics against distributions of models (docs/design.md §6, docs/reference_metrics.md): pure functions, no I/O.

A single retrained model is one draw from the distribution of "models trained without D_f"; these metrics compare
*sets* of models instead.  Inputs are per-example margins of shape (models, points), one row per model, from
``margins`` below; the points are any split (forget, retain, val) the caller chooses.

Margin (Georgiev et al. 2024, App. E.1; also LiRA's "logit-scaled confidence", Carlini et al. 2022)
  m(x, y) = z_y − logsumexp_{k≠y} z_k = log p_y − log(1 − p_y) = logit(p_y),   computed from logits, never from p.
KLoM — Georgiev, Rinberg, Park, Garg, Ilyas, Mądry, Neel, "Attribute-to-Delete: Machine Unlearning via Datamodel
  Matching", ICLR 2025, arXiv 2410.23232, App. E.1; estimator as in the authors' code (RoyRin/data-unlearning-bench
  ``src/eval.py:compute_binned_KL_div``, easydub/EasyDUB-code ``easydub/eval.py:binned_kl_divergence``):
  per point x, KLoM(x) = KL(P̂_unlearned(x) ‖ P̂_retrained(x)) between histograms of the margins of the N unlearned
  and the M retrained models on ``bins`` equal-width bins spanning the pooled range of both samples (clipped to
  ±``clip``); retrained bin masses are floored at ``eps`` where the unlearned histogram has mass.  Lower is better;
  0 = same histogram; at most log(1/eps) (disjoint supports).  Summaries: mean, median and the 95th percentile.
U-LiRA — Hayes, Shumailov, Triantafillou, Khalifa, Papernot, "Inexact Unlearning Needs More Careful Evaluations to
  Avoid a False Sense of Privacy", SaTML 2025, arXiv 2403.01218 (per-example U-MIA), built on LiRA (Carlini,
  Chien, Nasr, Song, Terzis, Tramèr, "Membership Inference Attacks From First Principles", S&P 2022):
  per point, Gaussians N(μ_u, σ_u²) and N(μ_r, σ_r²) fitted to the margins of unlearned and retrained models; a model's
  margin m is scored by Λ = log N(m; μ_u, σ_u²) − log N(m; μ_r, σ_r²), leave-one-out (a model is never scored with a
  Gaussian fitted on itself).  Positives = unlearned models, negatives = retrained ones, pooled over points;
  ROC-AUC and TPR at 1% / 0.1% FPR (sklearn).  AUC 0.5 = unlearned and retrained indistinguishable (the target).
Noise-floor band — pairwise distances inside an ensemble of independent retrains: how far apart two draws of "the
  gold" already are, against which a candidate's distance to the members is read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import torch

from sragu_core.errors import check

__all__ = ["auto_bins", "against_members", "klom", "klom_summary", "margins", "pairwise_band", "ulira", "ulira_scores"]

T = TypeVar("T")


# --------------------------------------------------------------------------------------------- margins
def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Correct-class margins z_y − logsumexp_{k≠y} z_k, shape (..., n), for logits (..., n, C) and labels (n,).

    Equal to log p_y − log(1 − p_y), but computed from logits with the true class masked to −inf inside the
    logsumexp, so it stays finite (e.g. 200.0 for logits [200, 0]) where p_y rounds to 1 and log(1 − p_y) = −inf.
    Leading dimensions are models (or anything else): labels broadcast over them.  Half precision is upcast to
    float32; float32/float64 keep their dtype.  Differentiable; no detach.
    """
    check(isinstance(logits, torch.Tensor) and logits.dim() >= 2, "logits",
          tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__,
          "a tensor of shape (..., n, C)")
    n, c = logits.shape[-2], logits.shape[-1]
    check(c >= 2, "logits", tuple(logits.shape), "at least 2 classes (the margin needs an incorrect class)")
    check(isinstance(y, torch.Tensor) and y.dim() == 1 and y.shape[0] == n, "y",
          tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__, f"a 1-D label tensor of length {n}")
    y = y.to(device=logits.device, dtype=torch.long)
    check(bool(((y >= 0) & (y < c)).all()), "y", "out of range", f"class indices in [0, {c})")
    z = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    idx = y.expand(*z.shape[:-1]).unsqueeze(-1)  # (..., n, 1): the same labels for every leading index
    correct = z.gather(-1, idx).squeeze(-1)
    is_true = torch.zeros_like(z, dtype=torch.bool).scatter_(-1, idx, True)
    return correct - torch.logsumexp(z.masked_fill(is_true, float("-inf")), dim=-1)


# --------------------------------------------------------------------------------------------- inputs
def _as_margins(a: np.ndarray | torch.Tensor, field: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().to("cpu", torch.float64).numpy()
    a = np.asarray(a, dtype=np.float64)
    check(a.ndim == 2, field, a.shape, "a 2-D array of margins (models, points)")
    return a


def _margin_pair(unlearned, retrained, min_models: int) -> tuple[np.ndarray, np.ndarray]:
    u = _as_margins(unlearned, "unlearned")
    r = _as_margins(retrained, "retrained")
    for field, a in (("unlearned", u), ("retrained", r)):
        check(a.shape[0] >= min_models, field, a.shape, f"at least {min_models} models (rows)")
    check(u.shape[1] == r.shape[1], "retrained", r.shape, f"the same number of points (columns) as unlearned {u.shape}")
    return u, r


# --------------------------------------------------------------------------------------------- KLoM
def klom(unlearned: np.ndarray, retrained: np.ndarray, *, bins: int = 20, eps: float = 1e-5,
         clip: float = 100.0) -> np.ndarray:
    """Per-point KL(unlearned ‖ retrained) of binned margin distributions, shape (points,), in nats.

    ``unlearned`` (N, P) and ``retrained`` (M, P) margins; N and M may differ (histograms are normalised per side).
    Per point: both samples clipped to [−clip, clip]; ``bins`` equal-width bins from the pooled min to the pooled
    max (width 1 when all 2·N values are equal); p, q = bin fractions of the unlearned and retrained samples;
    q floored at ``eps`` where p > 0 (not renormalised); KLoM = Σ_{p>0} p log(p / q).  Range [0, log(1/eps)].
    Defaults are the reference code's (20 bins, eps 1e-5, clip ±100).  One deviation: ``np.digitize`` on
    ``linspace`` edges there drops the sample(s) equal to the pooled maximum; here the last bin is closed so
    every sample counts (np.histogram's convention).  A point with a nan margin on either side gives nan; ±inf is
    clipped like any large margin.  Finite-sample bias: for two samples of one distribution the estimate is not
    0 — about 0.36 mean / 0.68 p95 at N = M = 100 with the defaults, ~0.15 at 200, ~3.0 at 20 (Gaussian margins,
    docs/reference_metrics.md) — so compare against the same estimator on retrains vs retrains, not against 0.
    """
    check(isinstance(bins, int) and not isinstance(bins, bool) and bins >= 1, "bins", bins, "an integer >= 1")
    check(isinstance(eps, (int, float)) and 0 < eps < 1, "eps", eps, "a float in (0, 1)")
    check(isinstance(clip, (int, float)) and clip > 0, "clip", clip, "a float > 0")
    u, r = _margin_pair(unlearned, retrained, min_models=2)
    bad = np.isnan(u).any(axis=0) | np.isnan(r).any(axis=0)
    u = np.clip(np.where(np.isnan(u), 0.0, u), -clip, clip)  # nan columns are binned harmlessly, then set to nan
    r = np.clip(np.where(np.isnan(r), 0.0, r), -clip, clip)
    lo = np.minimum(u.min(axis=0), r.min(axis=0))
    hi = np.maximum(u.max(axis=0), r.max(axis=0))
    width = np.where(hi > lo, hi - lo, 1.0)
    n_points = u.shape[1]
    offset = bins * np.arange(n_points)

    def fractions(a: np.ndarray) -> np.ndarray:  # (models, P) -> (P, bins) fraction of models in each bin
        idx = np.clip(np.floor((a - lo) / width * bins).astype(np.int64), 0, bins - 1)
        counts = np.bincount((idx + offset).ravel(), minlength=n_points * bins).reshape(n_points, bins)
        return counts / a.shape[0]

    p, q = fractions(u), fractions(r)
    q = np.where(p > 0, np.maximum(q, eps), q)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / q), 0.0)
    out = terms.sum(axis=1)
    out[bad] = np.nan
    return out


def auto_bins(n: int, m: int) -> int:
    """KLoM's bin count when none is given: ⌈√min(N, M)⌉, within [2, 20] (20 = the reference code's, chosen for
    N = M = 100 models).  With few models the reference's 20 bins leave most bins holding one sample each, and
    the eps floor on empty retrained bins (log 1/eps ≈ 11.5 nats) swamps the signal.  Measured on Gaussian
    margins, mean KLoM of an identical / a 1-sd-shifted / a 3-sd-shifted pair at N = M = 8: 20 bins 6.42 / 6.98 /
    9.27 (shift-to-null ratio 1.09), 3 bins 0.72 / 1.90 / 7.72 (2.65); at N = M = 16: 20 bins ratio 1.21,
    4 bins 3.97 (docs/reference_metrics.md)."""
    return int(min(20, max(2, math.ceil(math.sqrt(min(n, m))))))


def klom_summary(per_point: np.ndarray, percentile: float = 95.0) -> dict[str, float]:
    """Mean, median and the ``percentile``-th percentile (key ``hi``; numpy's linear method) of per-point KLoM.

    Georgiev et al. report the 95th percentile per split (forget / retain / val): a method that is right on
    average but badly wrong on a tail of points is still visible.  Any nan point makes every statistic nan.
    Keys: ``mean``, ``median``, ``hi``, ``percentile`` (echoed), ``n_points``.
    """
    v = np.asarray(per_point, dtype=np.float64)
    check(v.ndim == 1 and v.size > 0, "per_point", v.shape, "a non-empty 1-D array of per-point KLoM values")
    check(isinstance(percentile, (int, float)) and 0 <= percentile <= 100, "percentile", percentile,
          "a float in [0, 100]")
    if np.isnan(v).any():
        mean = median = hi = float("nan")
    else:
        mean, median, hi = float(v.mean()), float(np.median(v)), float(np.percentile(v, percentile))
    return {"mean": mean, "median": median, "hi": hi, "percentile": float(percentile), "n_points": int(v.size)}


# --------------------------------------------------------------------------------------------- U-LiRA
def _loo_moments(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-point mean and sum of squared deviations over all rows, and the same with each row left out.

    With d_i = a_i − mean: mean_{−i} = mean − d_i/(n−1) and SSD_{−i} = SSD − d_i²·n/(n−1) (exact), so the n
    leave-one-out fits cost one pass instead of n.
    """
    n = a.shape[0]
    mean = a.mean(axis=0)
    d = a - mean
    ssd = (d * d).sum(axis=0)
    return mean, ssd, mean - d / (n - 1), np.maximum(ssd - d * d * (n / (n - 1)), 0.0)


def _log_normal(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return -0.5 * np.log(2 * math.pi * var) - (x - mean) ** 2 / (2 * var)


def ulira_scores(unlearned: np.ndarray, retrained: np.ndarray, *, fixed_variance: bool = False,
                 var_floor: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out U-LiRA log likelihood ratios: (positives (N, P), negatives (M, P)); higher = "unlearned".

    Λ = log N(m; μ_u, σ_u²) − log N(m; μ_r, σ_r²) per model and point.  Unlearned model i is scored with μ_u, σ_u
    fitted on the other N−1 unlearned models and μ_r, σ_r on all M retrained; retrained model j with all N unlearned
    and the other M−1 retrained.  Fits are the MLE (mean, variance with ddof 0), as np.std / scipy's norm.fit in the
    reference attacks (LiRA's ``generate_ours`` uses the median; the mean is used here because its leave-one-out
    update is exact and cheap).  Variances are floored at ``var_floor`` (margin units², i.e. σ ≥ 0.01 by
    default; a point where every model gives the same margin would otherwise give ±inf).
    ``fixed_variance`` (LiRA's "fixed variance" variant, for few models): one σ² shared by all points and both
    sides, the pooled within-side variance Σ_points (SSD_u + SSD_r) / (P·(N+M−1)), also computed without the scored
    model.  Non-finite margins propagate to nan scores.
    """
    check(isinstance(var_floor, (int, float)) and var_floor > 0, "var_floor", var_floor, "a float > 0")
    u, r = _margin_pair(unlearned, retrained, min_models=2)
    n, m, n_points = u.shape[0], r.shape[0], u.shape[1]
    mu_u, ssd_u, mu_u_loo, ssd_u_loo = _loo_moments(u)
    mu_r, ssd_r, mu_r_loo, ssd_r_loo = _loo_moments(r)
    if fixed_variance:
        denom = max(n_points, 1) * (n + m - 1)
        var_pos = np.maximum((ssd_u_loo.sum(axis=1) + ssd_r.sum()) / denom, var_floor)[:, None]  # (N, 1)
        var_neg = np.maximum((ssd_u.sum() + ssd_r_loo.sum(axis=1)) / denom, var_floor)[:, None]  # (M, 1)
        pos = _log_normal(u, mu_u_loo, var_pos) - _log_normal(u, mu_r, var_pos)
        neg = _log_normal(r, mu_u, var_neg) - _log_normal(r, mu_r_loo, var_neg)
    else:
        pos = (_log_normal(u, mu_u_loo, np.maximum(ssd_u_loo / (n - 1), var_floor))
               - _log_normal(u, mu_r, np.maximum(ssd_r / m, var_floor)))
        neg = (_log_normal(r, mu_u, np.maximum(ssd_u / n, var_floor))
               - _log_normal(r, mu_r_loo, np.maximum(ssd_r_loo / (m - 1), var_floor)))
    return pos, neg


def ulira(unlearned: np.ndarray, retrained: np.ndarray, *, fixed_variance: bool = False,
          var_floor: float = 1e-4) -> dict[str, float | int]:
    """U-LiRA attack quality over all (model, point) pairs: ROC-AUC and TPR at low FPR (sklearn).

    Scores from ``ulira_scores`` (leave-one-out); label 1 = unlearned model, 0 = retrained model, all points
    pooled as LiRA pools target examples.  ``tpr_at_1pct`` / ``tpr_at_01pct`` = the largest TPR on the ROC curve
    with FPR ≤ 1% / 0.1%; with fewer than 100 / 1000 negative scores (M·P) that is the TPR at FPR = 0.
    AUC 0.5 and TPR ≈ FPR mean the attack cannot tell unlearned from retrained models (the target); AUC ≫ 0.5
    means the forget points are still recognisable.  With very few models the leave-one-out fits bias the AUC
    *below* 0.5 for identical distributions (≈0.34 at 3+3 models, 0.46 at 5+5, 0.49 at 10+10); report the
    same attack on retrains-vs-retrains beside it.  Non-finite margins give nan for the rates.
    Keys: ``auc``, ``tpr_at_1pct``, ``tpr_at_01pct``, ``n_unlearned``, ``n_retrained``, ``n_points``.
    """
    pos, neg = ulira_scores(unlearned, retrained, fixed_variance=fixed_variance, var_floor=var_floor)
    out: dict[str, float | int] = {"auc": float("nan"), "tpr_at_1pct": float("nan"), "tpr_at_01pct": float("nan"),
                                   "n_unlearned": int(pos.shape[0]), "n_retrained": int(neg.shape[0]),
                                   "n_points": int(pos.shape[1])}
    scores = np.concatenate([pos.ravel(), neg.ravel()])
    if scores.size == 0 or not np.isfinite(scores).all():
        return out
    from sklearn.metrics import roc_auc_score, roc_curve  # lazy: sklearn imports pandas -> pyarrow (design §10)

    labels = np.r_[np.ones(pos.size), np.zeros(neg.size)]
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    out["auc"] = float(roc_auc_score(labels, scores))
    out["tpr_at_1pct"] = float(tpr[fpr <= 0.01].max())  # fpr[0] == 0, so never empty
    out["tpr_at_01pct"] = float(tpr[fpr <= 0.001].max())
    return out


# --------------------------------------------------------------------------------------------- noise floor
def _spread(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def pairwise_band(members: Sequence[T], distance: Callable[[T, T], float], *,
                  quantiles: tuple[float, float] = (0.05, 0.95), asymmetric: bool = False) -> dict[str, float | int]:
    """Distribution of distances between members of a reference ensemble (e.g. ``gold.k`` independent retrains).

    Symmetric distances (``asymmetric=False``): each unordered pair once, as ``distance(members[i], members[j])``
    for i < j — k(k−1)/2 values.  Asymmetric ones such as KL (``asymmetric=True``): both orders, each its own
    value — k(k−1) values — so the band is the null distribution of ``distance(candidate, member)`` when the
    candidate is itself a member, the quantity ``against_members`` measures.  (Averaging the two directions
    instead would narrow the band below the spread of a one-directional distance.)
    Keys: ``mean``, ``sd`` (ddof 1; 0.0 for a single pair), ``lo``, ``hi`` (``quantiles``, numpy's default linear
    method), ``n_pairs``.  Non-finite distances propagate to nan.
    """
    check(len(members) >= 2, "members", len(members), "at least 2 ensemble members")
    check(len(quantiles) == 2 and all(isinstance(q, (int, float)) and 0 <= q <= 1 for q in quantiles)
          and quantiles[0] <= quantiles[1], "quantiles", quantiles, "two floats 0 <= lo <= hi <= 1")
    k = len(members)
    pairs = [(i, j) for i in range(k) for j in range(k) if (i != j if asymmetric else i < j)]
    d = [float(distance(members[i], members[j])) for i, j in pairs]
    mean, sd = _spread(d)
    lo, hi = (float(x) for x in np.quantile(np.asarray(d, dtype=np.float64), list(quantiles)))
    return {"mean": mean, "sd": sd, "lo": lo, "hi": hi, "n_pairs": len(d)}


def against_members(x: T, members: Sequence[T], distance: Callable[[T, T], float]) -> dict[str, float | int]:
    """Mean and sd (ddof 1; 0.0 for one member) of ``distance(x, member)`` over the members; key ``n_members``.

    Read against ``pairwise_band`` of the same members: a candidate whose mean lies inside [lo, hi] is as far from
    the ensemble as one retrain is from another.
    """
    check(len(members) >= 1, "members", len(members), "at least 1 ensemble member")
    mean, sd = _spread([float(distance(x, m)) for m in members])
    return {"mean": mean, "sd": sd, "n_members": len(members)}
