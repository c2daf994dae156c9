"""Hard deletions from the literature (docs/design.md §5), registered as forget regimes on import of
:mod:`sragu_core.forget` (which imports this module last).

* ``memorised:<fraction>[:<models>[:<subset>]]`` — the round(fraction·n) training points with the largest
  leave-subset-out memorisation estimate of Feldman & Zhang (2020), "What Neural Networks Memorize and Why:
  Discovering the Long Tail via Influence Estimation" (NeurIPS).  The memorisation of point i by a training
  algorithm A on data S is mem(A, S, i) = P_{h~A(S)}[h(x_i) = y_i] − P_{h~A(S∖{i})}[h(x_i) = y_i]; their
  subsampled estimator trains K = ``mem_models`` models on random subsets S_1..S_K of size
  m = round(``mem_subset``·n) (the paper's 70% by default) and takes

      mem(i) = mean_{k: i ∈ S_k} 1[h_k(x_i) = y_i] − mean_{k: i ∉ S_k} 1[h_k(x_i) = y_i].

  The K models come from the pipeline's ``trainer`` (θ0's recipe on each subset), not from θ0
  (``needs_model=False``: θ0 is trained on all of S, so it is neither an "in" nor an "out" draw of the
  subsampled estimator).  A point in every subset or in none has no estimate (NaN), is never chosen, and
  a request for more points than have an estimate is a ConfigError (raise ``mem_models``).  Subsets are drawn
  from ``seed``.  Held-out non-members: the random fallback — a D_test point is in no subset, so the "in" term
  of its estimate does not exist.
* ``mislabelled:<fraction>`` — corrective deletion of label noise (e.g. Goel et al. 2024, "Corrective Machine
  Unlearning"): ``alter`` flips the labels of round(fraction·n) training points, each to a uniformly drawn
  *other* class, **before θ0 is trained**; the forget set is exactly those points.  The flipped points are the
  ones ``random:<fraction>`` picks for the same seed, so the two regimes delete the same points and differ
  only in their labels.  Held-out non-members: the random fallback (D_test is not altered: no held-out label is
  flipped), scored with D_test's true labels.
* ``duplicates:<fraction>:<one|all>[:<copies>]`` — ``alter`` appends ``copies`` exact copies of round(fraction·n)
  training points (again ``random``'s choice for the seed; n = the original size) to the end of the training
  split: row n + j·k + t is copy j of the t-th chosen point (chosen points in ascending index order, k of
  them).  ``one`` forgets the appended copies only, so every forgotten point's twin stays in D_r and the gold,
  retrained on D_r, still fits it — a method that "forgets" the point outright over-forgets; ``all`` forgets
  the originals and every copy.  Held-out non-members: the random fallback (D_test holds no duplicate; the
  duplicated points are a uniform sample of the training set, so a uniform sample of D_test is their like).
* ``subpopulation:<class>:<clusters>[:<rank>]`` — a sub-mode of one class: k-means (scikit-learn, k =
  ``clusters``, n_init 10, seeded) on θ0's penultimate-layer features (the input of its last ``nn.Linear``,
  eval mode) of the training points of ``classes[0]``; the forget set is the cluster of size rank
  ``cluster_rank`` (0 = the largest; equal sizes ordered by smallest member index).  ``by_class=False``: it is
  part of a class, sized by the clustering.  Held-out non-members: D_test's points of the class whose nearest
  centroid (of the k-means fitted on the training points) is the chosen cluster; the random fallback when
  none is.

The alter regimes' ``select`` runs on the altered split and re-derives the chosen points from ``seed`` and the
original size; ``duplicates`` checks that the appended rows are the copies it expects.
"""

from __future__ import annotations

import torch
from torch import nn

from .data import Split
from .errors import ConfigError, check
from .forget import ForgetConfig, Trainer, _check_classes, _eval_mode, _fraction_label, _logits, _top, register_regime

__all__ = ["memorisation_scores", "subset_draws", "penultimate_features"]


def _seeded_choice(fraction: float, n: int, seed: int) -> torch.Tensor:
    """round(fraction·n) of range(n), the very points ``random:<fraction>`` takes for ``seed``, ascending."""
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:round(fraction * n)]
    return torch.sort(pick).values


def _suffix(cfg: ForgetConfig, *parts: tuple[str, str]) -> str:
    """``_<tag><value>`` for each (field, tag) whose value differs from its default: labels stay distinct."""
    return "".join(f"_{tag}{getattr(cfg, f):g}" for f, tag in parts if getattr(cfg, f) != ForgetConfig.default(f))


def _no_heldout_rule(reason: str):
    def nonmembers(cfg, train, heldout, num_classes, *, seed, model, device) -> tuple[torch.Tensor, str]:
        return torch.empty(0, dtype=torch.int64), f"{cfg.regime}: {reason}"
    return nonmembers


# ------------------------------------------------------------------------------------------- memorised
def subset_draws(n: int, models: int, size: int, seed: int) -> list[torch.Tensor]:
    """``models`` uniform subsets of range(n), each of ``size`` points (sorted int64), drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return [torch.sort(torch.randperm(n, generator=g)[:size]).values for _ in range(models)]


def memorisation_scores(correct: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """Feldman & Zhang's subsampled estimate per point from (K, n) bool matrices — ``correct[k, i]``: model k
    classifies point i correctly; ``member[k, i]``: point i was in model k's subset.  Returns (n,) float64:
    mean correctness over the models that saw i minus over those that did not; NaN where either set is empty."""
    check(correct.shape == member.shape and correct.dim() == 2, "correct", tuple(correct.shape),
          f"a (K, n) matrix shaped like member {tuple(member.shape)}")
    c, m = correct.to(torch.float64), member.to(torch.float64)
    n_in, n_out = m.sum(0), (1 - m).sum(0)
    p_in = (c * m).sum(0) / n_in  # 0/0 = NaN where no model saw i
    p_out = (c * (1 - m)).sum(0) / n_out  # ... and where every model did
    return p_in - p_out


def _memorised_params(rest: list[str]) -> dict:
    fraction, *more = rest
    if len(more) > 2:
        raise ValueError(f"{len(rest)} parameters")
    params = {"fraction": float(fraction)}
    if more:
        params["mem_models"] = int(more[0])
    if len(more) == 2:
        params["mem_subset"] = float(more[1])
    return params


@register_regime("memorised", needs_model=False, needs_trainer=True,
                 syntax="<fraction>[:<models K>[:<subset fraction>]]", example="0.1:16:0.7", parse=_memorised_params,
                 label=lambda cfg: _fraction_label(cfg) + _suffix(cfg, ("mem_models", "k"), ("mem_subset", "s")),
                 nonmembers=_no_heldout_rule("a held-out point is in no subset, so its memorisation estimate (which "
                                             "needs models trained with it) does not exist"))
def _memorised(cfg: ForgetConfig, train: Split, num_classes: int, *, seed: int, model, device,
               trainer: Trainer | None = None) -> torch.Tensor:
    """The round(``fraction``·n) points with the largest leave-subset-out memorisation estimate (module docstring)."""
    check(trainer is not None, "forget.regime", cfg.regime, "a trainer= of subset models (memorised needs one)")
    n, k = len(train), round(cfg.fraction * len(train))
    size = round(cfg.mem_subset * n)
    check(0 < size < n, "forget.mem_subset", cfg.mem_subset,
          f"a fraction whose subsets hold between 1 and {n - 1} of the {n} training points")
    subsets = subset_draws(n, cfg.mem_models, size, seed)
    correct = trainer(subsets)
    if not (isinstance(correct, torch.Tensor) and correct.shape == (cfg.mem_models, n)):
        raise ValueError(f"trainer returned {getattr(correct, 'shape', type(correct))}, expected a "
                         f"({cfg.mem_models}, {n}) bool tensor")
    member = torch.zeros(cfg.mem_models, n, dtype=torch.bool)
    for row, s in enumerate(subsets):
        member[row, s] = True
    scores = memorisation_scores(correct.cpu().bool(), member)
    defined = int(torch.isfinite(scores).sum())
    check(defined >= k, "forget.mem_models", cfg.mem_models,
          f"more models: only {defined}/{n} points were both inside and outside some subset, fewer than "
          f"round(fraction·n) = {k} (or move forget.mem_subset towards 0.5)")
    return _top(torch.nan_to_num(scores, nan=float("-inf")), k)


# ------------------------------------------------------------------------------------------ mislabelled
def _flip_labels(cfg: ForgetConfig, train: Split, num_classes: int, seed: int) -> tuple[Split, dict]:
    """The labels of ``random``'s round(fraction·n) points for ``seed``, each moved to a uniformly drawn other class."""
    check(num_classes >= 2, "num_classes", num_classes, "an integer >= 2 (a flipped label needs another class)")
    g = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(train), generator=g)[:round(cfg.fraction * len(train))]  # _seeded_choice's points
    offset = torch.randint(1, num_classes, (len(chosen),), generator=g)  # uniform over the other classes
    y, chosen = train.y.clone(), chosen.to(train.y.device)
    y[chosen] = (y[chosen] + offset.to(y.device)) % num_classes
    return Split(train.x, y), {"flipped": len(chosen)}


@register_regime("mislabelled", needs_model=False, alter=_flip_labels,
                 nonmembers=_no_heldout_rule("D_test is not altered, so no held-out label is flipped"))
def _mislabelled(cfg: ForgetConfig, train: Split, num_classes: int, *, seed: int, model, device,
                 trainer=None) -> torch.Tensor:
    """Exactly the points whose labels ``_flip_labels`` flipped (``train`` is the altered split; n is unchanged)."""
    return _seeded_choice(cfg.fraction, len(train), seed)


# ------------------------------------------------------------------------------------------- duplicates
def _append_copies(cfg: ForgetConfig, train: Split, num_classes: int, seed: int) -> tuple[Split, dict]:
    """``train`` followed by ``copies`` copies of ``random``'s round(fraction·n) points for ``seed``."""
    chosen = _seeded_choice(cfg.fraction, len(train), seed)
    rows = chosen.repeat(cfg.copies).to(train.y.device)
    altered = Split(torch.cat([train.x, train.x[rows]]), torch.cat([train.y, train.y[rows]]))
    return altered, {"duplicated": chosen.tolist(), "copies": cfg.copies, "appended": len(rows)}


def _original_size(cfg: ForgetConfig, total: int) -> int:
    """n with n + copies·round(fraction·n) = total (that sum grows with n, so there is at most one)."""
    guess = round(total / (1 + cfg.copies * cfg.fraction))
    for n in range(max(1, guess - cfg.copies - 2), guess + cfg.copies + 3):
        if n + cfg.copies * round(cfg.fraction * n) == total:
            return n
    raise ConfigError("train_set", total, f"the split prepare_train made for {cfg.label()} (no original size fits)")


def _duplicates_params(rest: list[str]) -> dict:
    fraction, which, *more = rest
    if len(more) > 1:
        raise ValueError(f"{len(rest)} parameters")
    return {"fraction": float(fraction), "dup_forget": which, **({"copies": int(more[0])} if more else {})}


@register_regime("duplicates", needs_model=False, alter=_append_copies, syntax="<fraction>:<one|all>[:<copies>]",
                 example="0.1:one", parse=_duplicates_params,
                 label=lambda cfg: f"{_fraction_label(cfg)}_{cfg.dup_forget}" + _suffix(cfg, ("copies", "x")),
                 nonmembers=_no_heldout_rule("D_test holds no duplicate; the duplicated points are a uniform sample "
                                             "of the training set, so a uniform sample of D_test stands in"))
def _duplicates(cfg: ForgetConfig, train: Split, num_classes: int, *, seed: int, model, device,
                trainer=None) -> torch.Tensor:
    """``one``: the appended copies; ``all``: the duplicated originals and their copies (``train`` is the altered
    split: its appended rows are checked against the originals)."""
    n = _original_size(cfg, len(train))
    chosen = _seeded_choice(cfg.fraction, n, seed)
    rows = chosen.repeat(cfg.copies).to(train.y.device)
    same = torch.equal(train.x[n:], train.x[rows]) and torch.equal(train.y[n:], train.y[rows])
    check(same, "train_set", len(train), f"the split prepare_train made for {cfg.label()} (its last "
          f"{len(rows)} rows are not copies of the duplicated points)")
    copies = torch.arange(n, len(train))
    return copies if cfg.dup_forget == "one" else torch.cat([chosen, copies])


# ---------------------------------------------------------------------------------------- subpopulation
def penultimate_features(model: nn.Module, x: torch.Tensor, device) -> torch.Tensor:
    """(N, d) float32 on CPU: the input of ``model``'s last ``nn.Linear`` (in ``modules()`` order) for each row of
    ``x``, captured by a forward pre-hook in eval mode; every module's train/eval flag is restored afterwards."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    check(bool(linears), "model", type(model).__name__, "a model whose output layer is an nn.Linear")
    captured: list[torch.Tensor] = []
    hook = linears[-1].register_forward_pre_hook(lambda _, args: captured.append(args[0].detach().flatten(1)
                                                                                 .float().cpu()))
    try:
        with _eval_mode(model):
            _logits(model, x, device)
    finally:
        hook.remove()
    return torch.cat(captured)


def _clusters(cfg: ForgetConfig, train: Split, num_classes: int, *, seed: int, model, device):
    """The k-means of θ0's features of the training points of ``classes[0]``, the chosen cluster's label and
    its members (indices into ``train``)."""
    from sklearn.cluster import KMeans  # lazy: keeps sklearn's import cost off ``import sragu_core``

    _check_classes(cfg, num_classes)
    c = cfg.classes[0]
    of_class = torch.nonzero(train.y.cpu() == c).squeeze(1)
    check(len(of_class) >= cfg.clusters, "forget.clusters", cfg.clusters,
          f"at most the {len(of_class)} training points of class {c}")
    feats = penultimate_features(model, train.x[of_class.to(train.x.device)], device)
    km = KMeans(n_clusters=cfg.clusters, n_init=10, random_state=seed).fit(feats.double().numpy())
    labels = torch.from_numpy(km.labels_).long()
    sizes = torch.bincount(labels, minlength=cfg.clusters).tolist()
    first = [int(torch.nonzero(labels == j)[0]) if sizes[j] else len(labels) for j in range(cfg.clusters)]
    chosen = sorted(range(cfg.clusters), key=lambda j: (-sizes[j], first[j]))[cfg.cluster_rank]
    return km, chosen, of_class[labels == chosen]


def _subpopulation_nonmembers(cfg: ForgetConfig, train: Split, heldout: Split, num_classes: int, *, seed: int,
                              model, device) -> tuple[torch.Tensor, str]:
    """D_test's points of the class nearest (by the training k-means' centroids) to the chosen cluster."""
    km, chosen, _ = _clusters(cfg, train, num_classes, seed=seed, model=model, device=device)
    c = cfg.classes[0]
    of_class = torch.nonzero(heldout.y.cpu() == c).squeeze(1)
    if len(of_class) == 0:
        return of_class, f"subpopulation: no held-out point of class {c}"
    feats = penultimate_features(model, heldout.x[of_class.to(heldout.x.device)], device)
    near = torch.from_numpy(km.predict(feats.double().numpy())).long() == chosen
    return of_class[near], f"subpopulation: no held-out point of class {c} is nearest to the chosen cluster"


def _subpopulation_params(rest: list[str]) -> dict:
    cls, clusters, *more = rest
    if len(more) > 1:
        raise ValueError(f"{len(rest)} parameters")
    return {"classes": (int(cls),), "clusters": int(clusters), **({"cluster_rank": int(more[0])} if more else {})}


@register_regime("subpopulation", needs_model=True, syntax="<class>:<clusters>[:<size rank, 0 = largest>]",
                 example="3:5", parse=_subpopulation_params,
                 label=lambda cfg: f"subpopulation_{cfg.classes[0]}_k{cfg.clusters}"
                                   + _suffix(cfg, ("cluster_rank", "r")),
                 nonmembers=_subpopulation_nonmembers)
def _subpopulation(cfg: ForgetConfig, train: Split, num_classes: int, *, seed: int, model, device,
                   trainer=None) -> torch.Tensor:
    """The ``cluster_rank``-th largest k-means cluster of θ0's penultimate features of class ``classes[0]``."""
    return _clusters(cfg, train, num_classes, seed=seed, model=model, device=device)[2]
