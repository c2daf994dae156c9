"""The metrics' formulas (docs/design.md §6): pure functions of tensors and floats, no I/O.

Which metrics a cell reports, with their directions, is the registry in :mod:`sragu_core.evaluate`; this
module holds the mathematics those entries call.  Notation: p_u, p_g, p_0 are softmax outputs (N, C) of
the unlearned, gold (retrained on D_r) and original models; y the int64 labels (N,); D_f forget, D_r
retain, D_val, D_test splits.

Accuracy (``accuracy``, ``per_class_accuracy``; nan for an empty split or absent class)
  forget_acc, retain_acc, test_acc, val_acc = mean[argmax p = y] on D_f, D_r, D_test, D_val.
  *_acc_gap = |acc_u − acc_g| on the same split (lower).
Retrain alignment on a query set Q (default D_f; suffix ``_test`` = Q is D_test). All lower, 0 = gold.
  pd         = mean[argmax p_u ≠ argmax p_g]                                   ∈ [0, 1]
  tv         = mean ½‖p_u − p_g‖₁                                              ∈ [0, 1]
  kl_to_gold = mean Σ_c p_g log(p_g / p_u), both clamped to ≥ eps (no renormalisation)
  js         = mean ½KL(p_u‖m) + ½KL(p_g‖m), m = (p_u + p_g)/2, natural log   ∈ [0, ln 2]
Leakage (membership inference; the forget points are the should-be-forgotten "members")
  mia_auc      = ROC-AUC (sklearn) of score −loss, members D_f (label 1) vs. non-members drawn from D_f's own
                 distribution: the forget set's selection rule applied to D_test with θ0 (``select_forget``'s
                 ``heldout``; a size-matched random sample, ``size_matched``, when it picks none);
                 0.5 = no leakage; closer_to_gold.
  mia_gap      = |mia_auc(u) − mia_auc(gold)| (lower).
  mia_efficacy = SalUn's SVC "confidence" attack (Fan et al., "SalUn: Empowering Machine Unlearning via
                 Gradient-based Weight Saliency", ICLR 2024, ``evaluation/SVC_MIA.py``): feature p[y];
                 SVC(C=3, gamma="auto", rbf) fit on D_r (1, subsampled to |D_test|) vs D_test (0);
                 value = fraction of D_f predicted non-member (higher = more forgotten; closer_to_gold).
Stability
  diverged         = any non-finite weight or loss (lower; 0/1).
  test_acc_drop    = test_acc(θ0) − test_acc(u) (lower).
  layer shift      = ‖θ_ℓ^u − θ_ℓ^0‖ / ‖θ_ℓ^0‖ per parameter tensor (absolute ‖Δ‖ when ‖θ_ℓ^0‖ = 0);
  max_layer_shift  = its max over tensors (n/a: a description of how far the method moved).
  alpha drift      = α_ℓ(u) − α_ℓ(θ0) per layer; mean_alpha_drift = mean |drift| over finite layers (n/a).
  across seeds     = ``mean_ci``: mean, sample std and Student-t confidence interval of any metric.
  avg_gap          = mean |x_u − x_g| over forget_acc, retain_acc, test_acc, mia_efficacy (SalUn; lower).
Efficiency: method_time_s, spectral_time_s, peak_mem_mb (lower); rte = t_gold / t_method (higher).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from sragu_core.data import Split
from sragu_core.errors import check

__all__ = [
    "accuracy",
    "alpha_drift",
    "avg_gap",
    "diverged",
    "js",
    "kl_to_gold",
    "layer_relative_shift",
    "mean_ci",
    "mia_auc",
    "mia_efficacy",
    "pd",
    "per_class_accuracy",
    "predict",
    "rte",
    "size_matched",
    "tv",
]

# --------------------------------------------------------------------------------------------- helpers
def _probs(p: torch.Tensor, field: str) -> torch.Tensor:
    check(isinstance(p, torch.Tensor) and p.dim() == 2 and p.shape[0] > 0, field,
          tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__, "a non-empty (N, C) tensor")
    return p.detach().to("cpu", torch.float64)


def _pair(p_u: torch.Tensor, p_g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p_g = _probs(p_g, "p_g")
    p_u = _probs(p_u, "p_u")
    check(p_u.shape == p_g.shape, "p_u", tuple(p_u.shape), f"same shape as p_g {tuple(p_g.shape)}")
    return p_u, p_g


def _labels(probs: torch.Tensor, y: torch.Tensor, field: str = "y") -> torch.Tensor:
    check(isinstance(y, torch.Tensor) and y.dim() == 1 and y.shape[0] == probs.shape[0], field,
          tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__,
          f"a 1-D label tensor of length {probs.shape[0]}")
    return y.detach().to("cpu", torch.long)


def _kl_rows(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    # xlogy gives 0·log 0 = 0, so zero-probability classes of p contribute nothing.
    return (torch.special.xlogy(p, p) - torch.special.xlogy(p, q)).sum(dim=1)


# --------------------------------------------------------------------------------------------- accuracy
@torch.no_grad()
def predict(model: torch.nn.Module, split_or_x: Split | torch.Tensor, *, device: torch.device | str,
            batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Softmax probabilities (N, C) float32 and per-sample cross-entropy (N,) float32, both on CPU.

    Runs in eval mode (dropout off, batch-norm running stats) and restores ``model.training`` after.
    Given a bare input tensor instead of a ``Split`` there are no labels, so the losses are ``None``.
    """
    check(batch_size >= 1, "batch_size", batch_size, "an integer >= 1")
    x, y = (split_or_x.x, split_or_x.y) if isinstance(split_or_x, Split) else (split_or_x, None)
    was_training = model.training
    model.eval()
    probs, losses = [], []
    try:
        for i in range(0, max(x.shape[0], 1), batch_size):  # an empty split still yields (0, C)
            logits = model(x[i:i + batch_size].to(device)).float()
            probs.append(torch.softmax(logits, dim=1).cpu())
            if y is not None:
                yb = y[i:i + batch_size].to(logits.device)
                losses.append(F.cross_entropy(logits, yb, reduction="none").cpu())
    finally:
        model.train(was_training)
    return torch.cat(probs), (torch.cat(losses) if y is not None else None)


def accuracy(probs: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction with argmax(probs) == y; nan for an empty split. Logits work too (same argmax)."""
    if probs.shape[0] == 0:
        return float("nan")
    probs = _probs(probs, "probs")
    return float((probs.argmax(dim=1) == _labels(probs, y)).double().mean())


def per_class_accuracy(probs: torch.Tensor, y: torch.Tensor, num_classes: int) -> list[float]:
    """Accuracy restricted to each true class 0..num_classes-1; nan where a class has no samples."""
    check(num_classes >= 1, "num_classes", num_classes, "an integer >= 1")
    if probs.shape[0] == 0:
        return [float("nan")] * num_classes
    probs = _probs(probs, "probs")
    y = _labels(probs, y)
    correct = (probs.argmax(dim=1) == y).double()
    count = torch.bincount(y, minlength=num_classes)[:num_classes].double()
    hits = torch.bincount(y, weights=correct, minlength=num_classes)[:num_classes]
    return [float(h / c) if c > 0 else float("nan") for h, c in zip(hits, count)]


# --------------------------------------------------------------------------------------------- alignment
def pd(p_u: torch.Tensor, p_g: torch.Tensor) -> float:
    """Prediction disagreement: fraction of rows where argmax p_u ≠ argmax p_g."""
    p_u, p_g = _pair(p_u, p_g)
    return float((p_u.argmax(dim=1) != p_g.argmax(dim=1)).double().mean())


def tv(p_u: torch.Tensor, p_g: torch.Tensor) -> float:
    """Mean total-variation distance ½‖p_u − p_g‖₁ per row, in [0, 1]."""
    p_u, p_g = _pair(p_u, p_g)
    return float(0.5 * (p_u - p_g).abs().sum(dim=1).mean())


def kl_to_gold(p_u: torch.Tensor, p_g: torch.Tensor, eps: float = 1e-12) -> float:
    """Mean KL(p_g ‖ p_u) in nats; both clamped to ≥ eps so a zero in p_u gives a large finite value."""
    check(eps > 0, "eps", eps, "a float > 0")
    p_u, p_g = _pair(p_u, p_g)
    return float(_kl_rows(p_g.clamp_min(eps), p_u.clamp_min(eps)).mean())


def js(p_u: torch.Tensor, p_g: torch.Tensor) -> float:
    """Mean Jensen–Shannon divergence in nats (bounded by ln 2); the square of scipy's ``jensenshannon``."""
    p_u, p_g = _pair(p_u, p_g)
    m = 0.5 * (p_u + p_g)
    return float((0.5 * _kl_rows(p_u, m) + 0.5 * _kl_rows(p_g, m)).mean())


# --------------------------------------------------------------------------------------------- leakage
def size_matched(n: int, pool_size: int, seed: int) -> torch.Tensor:
    """Sorted int64 indices of min(n, pool_size) distinct rows of a pool, the same for the same seed."""
    check(n >= 0, "n", n, "an integer >= 0")
    check(pool_size >= 0, "pool_size", pool_size, "an integer >= 0")
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(pool_size, generator=gen)[: min(n, pool_size)].sort().values


def mia_auc(forget_losses: torch.Tensor, nonmember_losses: torch.Tensor) -> float:
    """Loss-threshold membership attack: ROC-AUC of score −loss, members (label 1) = D_f.

    0.5 means forget points are indistinguishable from unseen test points; the caller passes test points
    drawn like D_f (the forget rule applied to D_test), or a size-matched random test sample
    (``size_matched``). Non-finite losses (a diverged model) give nan.
    """
    for name, t in (("forget_losses", forget_losses), ("nonmember_losses", nonmember_losses)):
        check(isinstance(t, torch.Tensor) and t.dim() == 1 and t.shape[0] > 0, name,
              tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__, "a non-empty 1-D tensor")
    from sklearn.metrics import roc_auc_score  # lazy: sklearn imports pandas -> pyarrow (docs/design.md §10)

    scores = -torch.cat([forget_losses, nonmember_losses]).detach().to("cpu", torch.float64)
    if not torch.isfinite(scores).all():
        return float("nan")
    labels = np.r_[np.ones(forget_losses.shape[0]), np.zeros(nonmember_losses.shape[0])]
    return float(roc_auc_score(labels, scores.numpy()))


def _confidence(probs: torch.Tensor, y: torch.Tensor, field: str) -> np.ndarray:
    probs = _probs(probs, field)
    y = _labels(probs, y, field.replace("probs", "y"))
    check(bool(((y >= 0) & (y < probs.shape[1])).all()), field.replace("probs", "y"), "out of range",
          f"class indices in [0, {probs.shape[1]})")
    return probs.gather(1, y[:, None]).numpy()  # (N, 1): SalUn's "conf" feature p[y]


def mia_efficacy(retain_probs: torch.Tensor, retain_y: torch.Tensor, test_probs: torch.Tensor,
                 test_y: torch.Tensor, forget_probs: torch.Tensor, forget_y: torch.Tensor,
                 seed: int = 0) -> float:
    """SalUn's MIA-efficacy (``evaluation/SVC_MIA.py``, confidence attack): fraction of D_f called non-member.

    The attack SVC(C=3, gamma="auto", kernel="rbf") learns p[y] of D_r (member, 1) vs D_test (0); like
    SalUn, D_r is cut to |D_test| rows (SalUn takes the first rows, here a seeded sample). Higher = more
    forgotten; the gold model's value is the target. Non-finite probabilities give nan.
    """
    from sklearn.svm import SVC  # lazy, as in mia_auc

    r = _confidence(retain_probs, retain_y, "retain_probs")
    t = _confidence(test_probs, test_y, "test_probs")
    f = _confidence(forget_probs, forget_y, "forget_probs")
    widths = {retain_probs.shape[1], test_probs.shape[1], forget_probs.shape[1]}
    check(len(widths) == 1, "forget_probs", tuple(forget_probs.shape), "the same class count C for all splits")
    if not all(np.isfinite(a).all() for a in (r, t, f)):
        return float("nan")
    r = r[size_matched(t.shape[0], r.shape[0], seed).numpy()]
    x = np.concatenate([r, t])
    labels = np.r_[np.ones(r.shape[0]), np.zeros(t.shape[0])]
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x, labels)
    return float(1.0 - clf.predict(f).mean())


# --------------------------------------------------------------------------------------------- stability
def diverged(model_or_state: torch.nn.Module | Mapping[str, torch.Tensor],
             losses: torch.Tensor | None = None) -> bool:
    """True if any floating parameter/buffer (or state-dict entry) or any given loss is non-finite."""
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    tensors = [t for t in state.values() if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if losses is not None:
        tensors.append(torch.as_tensor(losses, dtype=torch.float64))
    return any(not bool(torch.isfinite(t).all()) for t in tensors)


def layer_relative_shift(before: Mapping[str, torch.Tensor],
                         after: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """‖after − before‖ / ‖before‖ (Frobenius) per floating tensor; the absolute ‖Δ‖ where ‖before‖ = 0."""
    check(set(before) == set(after), "after", sorted(set(after) ^ set(before)), "the same keys as before")
    out: dict[str, float] = {}
    for name, b in before.items():
        if not b.is_floating_point():  # e.g. batch-norm's num_batches_tracked counter
            continue
        a = after[name]
        check(a.shape == b.shape, f"after[{name!r}]", tuple(a.shape), f"shape {tuple(b.shape)} as in before")
        b64 = b.detach().to("cpu", torch.float64)
        delta = float(torch.linalg.vector_norm(a.detach().to("cpu", torch.float64) - b64))
        norm = float(torch.linalg.vector_norm(b64))
        out[name] = delta / norm if norm > 0 else delta
    return out


def _num(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def alpha_drift(alpha_before: Mapping[str, float | None],
                alpha_after: Mapping[str, float | None]) -> dict[str, float]:
    """α_after − α_before for layers present in both; nan where either α is missing (None or nan)."""
    return {k: _num(alpha_after[k]) - _num(alpha_before[k]) for k in alpha_before if k in alpha_after}


def avg_gap(unlearned: Mapping[str, float], gold: Mapping[str, float],
            keys: Iterable[str] = ("forget_acc", "retain_acc", "test_acc", "mia_efficacy")) -> float:
    """SalUn's Avg. Gap: mean |x_u − x_gold| over ``keys`` (same units as given; fractions here)."""
    keys = tuple(keys)
    check(len(keys) > 0, "keys", keys, "at least one metric name")
    for side, d in (("unlearned", unlearned), ("gold", gold)):
        missing = [k for k in keys if k not in d]
        check(not missing, side, missing, f"a dict holding every key of {keys}")
    return float(np.mean([abs(float(unlearned[k]) - float(gold[k])) for k in keys]))


def rte(t_gold: float, t_method: float) -> float:
    """Relative time efficiency t_gold / t_method: > 1 means cheaper than retraining from scratch."""
    check(t_method > 0, "t_method", t_method, "a wall time > 0 seconds")
    check(t_gold >= 0, "t_gold", t_gold, "a wall time >= 0 seconds")
    return float(t_gold) / float(t_method)


# --------------------------------------------------------------------------------------------- seeds
def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, sample std (ddof=1), lo, hi) with the Student-t interval mean ± t·std/√n (scipy.stats.t).

    n = 1: std 0.0 and lo = hi = nan (one seed gives no interval). All values equal: lo = hi = mean.
    nan values are not dropped; they make every output nan.
    """
    v = np.asarray(list(values), dtype=np.float64)
    check(v.ndim == 1 and v.size > 0, "values", v.shape, "a non-empty list of floats")
    check(0 < confidence < 1, "confidence", confidence, "a float in (0, 1)")
    mean = float(v.mean())
    if v.size == 1:
        return mean, 0.0, float("nan"), float("nan")
    std = float(v.std(ddof=1))
    if std == 0.0 or not math.isfinite(std):
        lo_hi = mean if std == 0.0 else float("nan")
        return mean, std, lo_hi, lo_hi
    lo, hi = stats.t.interval(confidence, df=v.size - 1, loc=mean, scale=std / math.sqrt(v.size))
    return mean, std, float(lo), float(hi)
