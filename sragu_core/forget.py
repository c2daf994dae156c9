"""Forget-set selection (docs/design.md §5): which training points a deletion request names.

Regimes, each deterministic for (training labels, regime, parameters, seed[, θ0]):

* ``random``: ``fraction`` of the training set, uniformly (1%, 10%, 30%, 50% = "large deletions").
* ``class``: every training point of ``classes``.
* adversarial "hard deletions", scored with the original model θ0 and the top ``fraction`` taken:
  ``top_sensitivity`` (largest per-sample gradient norm ‖∇_θ CE(x, y)‖₂ — the points AGU's sensitivity
  is most driven by), ``high_loss`` (largest per-sample CE — memorised / atypical points),
  ``low_margin`` (smallest logit margin z_y − max_{k≠y} z_k — boundary points),
  ``class_concentrated`` (all of ``classes[0]`` plus ``neighbor_fraction`` of the class θ0 confuses it
  with most, taking the neighbour points θ0 rates most like ``classes[0]``).
* fitted variants ``high_loss_fitted``, ``low_margin_fitted``, ``top_sensitivity_fitted``: the same score,
  restricted to the training points θ0 classifies correctly ("correct but low-confidence"), taking
  round(fraction·n) of them (n = training-set size).  On an under-fit θ0 the plain rules pick points θ0 never
  learned — hard to learn, not hard to unlearn; a θ0 that fits fewer points than that is a ConfigError.

θ0 always scores in eval mode, and every module's train/eval flag is restored afterwards (no BatchNorm
running statistic is touched): selection neither depends on nor changes the model's state.

Returns sorted indices into the training split and a manifest (regime, parameters, seed, size, class
histogram, content hash of the indices) that the pipeline stores next to them.  Given held-out data
(``heldout``, the pipeline passes D_test), the **same rule** is applied to it with θ0, and those points are
the membership attack's non-members (``ForgetSet.nonmember_indices``; ``mia_auc`` in
:mod:`sragu_core.evaluate`): random → a random ``fraction`` of D_test, class → D_test's points of the
classes, high_loss → θ0's highest-loss ``fraction`` of D_test, and so on.  A random sample of D_test would
make the attack measure the selection's shift (a class deletion's gold scored mia_auc 0.045 against it)
instead of membership.  When the rule picks no held-out point (or cannot apply, e.g. θ0 fits too few test
points for a fitted variant), a random sample of |D_f| test points stands in; the manifest's
``nonmember_rule`` says which (``same_selection_on_test`` or ``random_fallback``).

Hard deletions from the literature (``memorised``, ``mislabelled``, ``duplicates``, ``subpopulation``) live in
:mod:`sragu_core.hard_regimes`, imported at the end of this module so that importing it registers them.  Two
of their needs shape the interface here:

* a regime may **change the training data before θ0 is trained** (``RegimeSpec.alter``: mislabelled flips
  labels, duplicates appends copies).  :func:`prepare_train` applies the change; the pipeline trains θ0, the
  gold and every method on that altered split and selects from it.  Held-out data is never altered.
* a regime may need **models trained on subsets of the training data** (``RegimeSpec.needs_trainer``:
  memorised's leave-subset-out estimate).  The pipeline passes ``trainer(subsets) -> (K, n) bool``: whether a
  model trained with θ0's recipe on each index subset classifies each training point correctly.

Where such a regime's rule has no meaning on held-out data it says so (``RegimeSpec.nonmembers``) and the
random fallback applies, with the regime's reason in ``nonmember_fallback_reason``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from .data import Split
from .errors import ConfigError, check
from .metrics import size_matched
from .registry import Registry

__all__ = ["ForgetConfig", "ForgetSet", "RegimeSpec", "REGIMES", "Trainer", "register_regime", "parse_regime",
           "prepare_train", "select_forget", "retain_indices", "request_chunks", "per_sample_scores"]

# trainer(subsets) -> (K, n) bool: for each index subset of the training split, whether a model trained with θ0's
# recipe on that subset classifies each of the n training points correctly (the pipeline supplies it)
Trainer = Callable[[list[torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class RegimeSpec:
    """One forget regime: how its points are chosen, how it is written on the command line and named.

    ``select(cfg, train, num_classes, seed=, model=, device=, trainer=)`` returns the chosen indices (any order);
    ``needs_model``: it scores points with θ0 (so the forget set's content key includes θ0's);
    ``by_class``: it deletes whole classes (or most of one), so evaluation reports per-class accuracy and
    the forget fraction is measured, not configured; ``example``: a valid command-line form (tests parse it).
    ``alter(cfg, train, num_classes, seed) -> (altered_train, info)``: the regime changes the training data
    before θ0 is trained (deterministically; ``info``: small JSON-able facts for the manifest), and ``select``
    is called on the altered split; ``needs_trainer``: ``select`` needs ``trainer=`` (:data:`Trainer`);
    ``nonmembers(cfg, train, heldout, num_classes, seed=, model=, device=) -> (indices into heldout, reason)``:
    the rule on held-out data where it is not ``select`` applied to it (an empty result with its ``reason``
    is the random fallback).
    """

    name: str
    select: Callable[..., torch.Tensor]
    parse: Callable[[list[str]], dict]
    syntax: str
    example: str
    label: Callable[[ForgetConfig], str]
    needs_model: bool
    by_class: bool
    alter: Callable[[ForgetConfig, Split, int, int], tuple[Split, dict]] | None = None
    needs_trainer: bool = False
    nonmembers: Callable[..., tuple[torch.Tensor, str]] | None = None


REGIMES: Registry[RegimeSpec] = Registry("forget.regime")


def _fraction_params(rest: list[str]) -> dict:
    (fraction,) = rest  # a ValueError on a wrong count becomes parse_regime's one-line error
    return {"fraction": float(fraction)}


def _fraction_label(cfg: ForgetConfig) -> str:
    return f"{cfg.regime}_{round(cfg.fraction * 100, 2):g}pct"


def register_regime(name: str, *, needs_model: bool, by_class: bool = False, syntax: str = "<fraction in (0, 1)>",
                    example: str = "0.1", parse: Callable[[list[str]], dict] = _fraction_params,
                    label: Callable[[ForgetConfig], str] = _fraction_label,
                    alter: Callable[[ForgetConfig, Split, int, int], tuple[Split, dict]] | None = None,
                    needs_trainer: bool = False,
                    nonmembers: Callable[..., tuple[torch.Tensor, str]] | None = None) -> Callable:
    """Decorator: ``@register_regime("high_loss", needs_model=True)`` on ``select(cfg, train, num_classes, *,
    seed, model, device, trainer) -> indices``.  ``parse`` turns the words after ``name:`` into ForgetConfig
    fields; ``alter``, ``needs_trainer`` and ``nonmembers``: :class:`RegimeSpec`."""
    def wrap(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        REGIMES.register(name, RegimeSpec(name, fn, parse, f"{name}:{syntax}", f"{name}:{example}", label,
                                          needs_model, by_class, alter, needs_trainer, nonmembers))
        return fn
    return wrap


@dataclass(frozen=True)
class ForgetConfig:
    regime: str = "random"  # a name registered in REGIMES
    fraction: float = 0.1
    classes: tuple[int, ...] = (0,)
    neighbor_fraction: float = 0.5
    mem_models: int = 16  # memorised: K models, each trained on a random subset of the training set
    mem_subset: float = 0.7  # memorised: the fraction of the training set each subset model sees
    copies: int = 1  # duplicates: copies appended per duplicated point
    dup_forget: Literal["one", "all"] = "one"  # duplicates: forget the appended copies, or originals and copies
    clusters: int = 5  # subpopulation: k of the k-means on θ0's penultimate features of classes[0]
    cluster_rank: int = 0  # subpopulation: which cluster by size (0 = the largest)
    steps: int = 1  # sequential deletions: the forget set arrives as this many successive requests (``<regime>@<T>``)

    def __post_init__(self):
        check(self.regime in REGIMES, "forget.regime", self.regime, f"one of {REGIMES.names()}")
        check(0 < self.fraction < 1, "forget.fraction", self.fraction, "a number in (0, 1)")
        check(len(self.classes) >= 1, "forget.classes", self.classes, "one or more class indices")
        check(0 < self.neighbor_fraction <= 1, "forget.neighbor_fraction", self.neighbor_fraction,
              "a number in (0, 1]")
        check(self.mem_models >= 2, "forget.mem_models", self.mem_models, "an integer >= 2")
        check(0 < self.mem_subset < 1, "forget.mem_subset", self.mem_subset, "a number in (0, 1)")
        check(self.copies >= 1, "forget.copies", self.copies, "an integer >= 1")
        check(self.dup_forget in ("one", "all"), "forget.dup_forget", self.dup_forget, "one or all")
        check(self.clusters >= 2, "forget.clusters", self.clusters, "an integer >= 2")
        check(0 <= self.cluster_rank < self.clusters, "forget.cluster_rank", self.cluster_rank,
              f"a size rank in [0, clusters - 1 = {self.clusters - 1}] (0 = the largest cluster)")
        check(isinstance(self.steps, int) and not isinstance(self.steps, bool) and self.steps >= 1, "forget.steps",
              self.steps, "an integer >= 1 (1: one request; T >= 2: T successive requests, written <regime>@<T>)")

    @property
    def spec(self) -> RegimeSpec:
        return REGIMES[self.regime]

    def label(self) -> str:
        """A short human name, e.g. ``random_10pct``, ``class_3``, ``high_loss_10pct``; ``_seq<T>`` is appended
        for T successive requests (``random_20pct_seq4``)."""
        return self.spec.label(self) + (f"_seq{self.steps}" if self.steps > 1 else "")

    @property
    def family(self) -> str:
        """The regime family the report rolls up: the regime's name, or ``sequential`` for T >= 2 requests."""
        return "sequential" if self.steps > 1 else self.regime

    @staticmethod
    def default(name: str):
        """The default of field ``name`` (labels name only the parameters that differ from it)."""
        return next(f.default for f in fields(ForgetConfig) if f.name == name)


def parse_regime(text: str) -> ForgetConfig:
    """``"random:0.1"`` → ForgetConfig(regime="random", fraction=0.1); the form is the regime's ``syntax``,
    optionally followed by ``@<T>``: the same forget set deleted in T successive requests (``random:0.2@4``)."""
    body, at, steps = text.partition("@")
    head, *rest = body.split(":")
    check(head in REGIMES, "regimes", text, f"regime:params with regime one of {REGIMES.names()}")
    spec = REGIMES[head]
    if at:
        check(steps.isdigit() and int(steps) >= 2, "regimes", text,
              f"{spec.syntax}@<T> with T an integer >= 2 (successive requests), e.g. {spec.example}@4")
    try:
        return ForgetConfig(regime=head, **spec.parse(rest), **({"steps": int(steps)} if at else {}))
    except ConfigError as e:
        if e.field.startswith("forget."):  # a value out of range: name the regime string the user wrote
            raise ConfigError("regimes", text, f"{spec.syntax} ({e.allowed})") from None
        raise ConfigError("regimes", text, spec.syntax) from None
    except ValueError:
        raise ConfigError("regimes", text, f"{spec.syntax}, e.g. random:0.1 or class:3") from None


@dataclass(frozen=True)
class ForgetSet:
    indices: torch.Tensor  # sorted int64 indices into the training split
    manifest: dict
    nonmember_indices: torch.Tensor | None = None  # sorted int64 indices into the held-out split (MIA non-members)


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, device, batch_size: int = 1024) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


def _grad_norms(model: nn.Module, train: Split, device, batch_size: int = 256) -> torch.Tensor:
    """Per-sample ‖∇_θ CE‖₂ with torch.func (vmap over a functional gradient)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss(p, x, y):
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(out, y.unsqueeze(0))

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
    norms = []
    for i in range(0, len(train), batch_size):
        g = per_sample(params, train.x[i:i + batch_size].to(device), train.y[i:i + batch_size].to(device))
        norms.append(torch.sqrt(sum((t.flatten(1) ** 2).sum(1) for t in g.values())).cpu())
    return torch.cat(norms)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """θ0 scores points in eval mode; every module's own train/eval flag is restored afterwards (a model in a
    mixed state stays mixed), so selection never changes it."""
    was = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, flag in was.items():
            m.training = flag


def _loss(model: nn.Module, train: Split, device) -> torch.Tensor:
    return F.cross_entropy(_logits(model, train.x, device), train.y.cpu(), reduction="none")


def _neg_margin(model: nn.Module, train: Split, device) -> torch.Tensor:
    logits, y = _logits(model, train.x, device), train.y.cpu()
    true = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    other = logits.scatter(1, y.unsqueeze(1), float("-inf")).max(1).values
    return -(true - other)


_SCORES: dict[str, Callable[[nn.Module, Split, object], torch.Tensor]] = {
    "top_sensitivity": _grad_norms, "high_loss": _loss, "low_margin": _neg_margin}


def per_sample_scores(model: nn.Module, train: Split, regime: str, *, device) -> torch.Tensor:
    """The score a top-k regime ranks by (the *largest* scores are forgotten)."""
    check(regime in _SCORES, "forget.regime", regime, f"one of {sorted(_SCORES)}")
    with _eval_mode(model):
        return _SCORES[regime](model, train, device)


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    # stable sort on −score: ties resolved by index, so selection is deterministic
    return torch.sort(-scores, stable=True).indices[:k]


def _check_classes(cfg: ForgetConfig, num_classes: int) -> None:
    for c in cfg.classes:
        check(0 <= c < num_classes, "forget.classes", c, f"class indices in [0, {num_classes - 1}]")


def _class_list(rest: list[str]) -> dict:
    (classes,) = rest
    return {"classes": tuple(int(c) for c in classes.split("-"))}


def _class_and_neighbour(rest: list[str]) -> dict:
    cls, neighbour = rest
    return {"classes": (int(cls),), "neighbor_fraction": float(neighbour)}


# ------------------------------------------------------------------------------------------ the regimes
@register_regime("random", needs_model=False)
def _random(cfg: ForgetConfig, train: Split, num_classes: int, *, seed: int, model, device,
            trainer=None) -> torch.Tensor:
    """``fraction`` of the training set, uniformly."""
    n = len(train)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:round(cfg.fraction * n)]


@register_regime("class", needs_model=False, by_class=True, syntax="<c> or class:<c1>-<c2>", example="3-5",
                 parse=_class_list,
                 label=lambda cfg: "class_" + "-".join(map(str, cfg.classes)))
def _class(cfg: ForgetConfig, train: Split, num_classes: int, *, seed: int, model, device,
           trainer=None) -> torch.Tensor:
    """Every training point of ``classes``."""
    _check_classes(cfg, num_classes)
    return torch.nonzero(torch.isin(train.y.cpu(), torch.tensor(cfg.classes))).squeeze(1)


def _top_fraction(regime: str):
    def select(cfg: ForgetConfig, train: Split, num_classes: int, *, seed: int, model, device,
               trainer=None) -> torch.Tensor:
        return _top(per_sample_scores(model, train, regime, device=device), round(cfg.fraction * len(train)))
    select.__doc__ = f"The top ``fraction`` of training points by θ0's {regime} score."
    return select


register_regime("top_sensitivity", needs_model=True)(_top_fraction("top_sensitivity"))
register_regime("high_loss", needs_model=True)(_top_fraction("high_loss"))
register_regime("low_margin", needs_model=True)(_top_fraction("low_margin"))


@torch.no_grad()
def _fitted(model: nn.Module, split: Split, device) -> torch.Tensor:
    """Indices of the points θ0 classifies correctly (argmax of its logits, eval mode)."""
    with _eval_mode(model):
        hit = _logits(model, split.x, device).argmax(1) == split.y.cpu()
    return torch.nonzero(hit).squeeze(1)


def _top_fitted_fraction(regime: str):
    def select(cfg: ForgetConfig, train: Split, num_classes: int, *, seed: int, model, device,
               trainer=None) -> torch.Tensor:
        k, fitted = round(cfg.fraction * len(train)), _fitted(model, train, device)
        check(len(fitted) >= k, "forget.fraction", cfg.fraction,
              f"at most {len(fitted)}/{len(train)} for {regime}_fitted: θ0 classifies only {len(fitted)} of the "
              f"{len(train)} points correctly, fewer than round(fraction·n) = {k} (or use {regime})")
        return fitted[_top(per_sample_scores(model, train.subset(fitted), regime, device=device), k)]
    select.__doc__ = (f"round(``fraction``·n) points with θ0's highest {regime} score among those θ0 classifies "
                      "correctly.")
    return select


for _regime in ("high_loss", "low_margin", "top_sensitivity"):
    register_regime(f"{_regime}_fitted", needs_model=True)(_top_fitted_fraction(_regime))


@register_regime("class_concentrated", needs_model=True, by_class=True,
                 syntax="<class>:<neighbour fraction>", example="3:0.5", parse=_class_and_neighbour,
                 label=lambda cfg: f"class_concentrated_{cfg.classes[0]}")
def _class_concentrated(cfg: ForgetConfig, train: Split, num_classes: int, *, seed: int, model, device,
                        trainer=None) -> torch.Tensor:
    """All of ``classes[0]`` plus ``neighbor_fraction`` of the class θ0 confuses it with most (the neighbour
    points θ0 rates most like ``classes[0]``)."""
    _check_classes(cfg, num_classes)
    c = cfg.classes[0]
    y = train.y.cpu()
    check(bool((y == c).any()), "forget.classes", c, "a class with training points (none of this class here)")
    with _eval_mode(model):
        probs = F.softmax(_logits(model, train.x, device), 1)
    confusion = probs[y == c].mean(0)
    confusion[c] = -1.0
    neighbour = int(confusion.argmax())
    nb_idx = torch.nonzero(y == neighbour).squeeze(1)
    k = max(1, round(cfg.neighbor_fraction * len(nb_idx)))
    chosen_nb = nb_idx[_top(probs[nb_idx, c], k)]
    return torch.cat([torch.nonzero(y == c).squeeze(1), chosen_nb])


# ------------------------------------------------------------------------------------------ selection
def _nonmembers(cfg: ForgetConfig, train: Split, heldout: Split, num_classes: int, *, seed: int,
                model: nn.Module | None, device, size: int) -> tuple[torch.Tensor, dict]:
    """The same selection rule on held-out data (the attack's non-members), or ``size`` random held-out points
    when the rule picks none there; returns sorted indices and the manifest entries that say which.  A regime
    with its own held-out rule (``spec.nonmembers``) applies that one, and gives the reason when it picks none."""
    reason = None
    try:
        if cfg.spec.nonmembers is not None:
            idx, reason = cfg.spec.nonmembers(cfg, train, heldout, num_classes, seed=seed, model=model, device=device)
        else:
            idx = cfg.spec.select(cfg, heldout, num_classes, seed=seed, model=model, device=device)
    except ConfigError as e:  # e.g. θ0 fits fewer test points than a fitted variant takes
        idx, reason = torch.empty(0, dtype=torch.int64), str(e)
    info = {"nonmember_rule": "same_selection_on_test"}
    if len(idx) == 0:  # the attack's former non-members: a size-matched random sample of D_test
        idx = size_matched(size, len(heldout), seed)
        info = {"nonmember_rule": "random_fallback",
                "nonmember_fallback_reason": reason or f"regime {cfg.regime} selects no held-out point"}
    idx = torch.sort(idx.to(torch.int64)).values
    return idx, {"nonmember_size": len(idx), **info}


def prepare_train(cfg: ForgetConfig, train: Split, num_classes: int, seed: int) -> tuple[Split, dict]:
    """The training split θ0, the gold and every method train on for ``cfg``, and the facts of the change for the
    manifest: ``spec.alter``'s result for a regime that changes the data (``mislabelled``, ``duplicates``),
    else ``(train, {})`` (the same object)."""
    if cfg.spec.alter is None:
        return train, {}
    return cfg.spec.alter(cfg, train, num_classes, seed)


def select_forget(cfg: ForgetConfig, train: Split, num_classes: int, *, seed: int,
                  model: nn.Module | None = None, device: torch.device | str = "cpu",
                  heldout: Split | None = None, trainer: Trainer | None = None,
                  alteration: dict | None = None) -> ForgetSet:
    """Pick the forget set for ``cfg`` from ``train``; regimes that score with θ0 need it as ``model``, regimes
    that train subset models (``needs_trainer``) need ``trainer``.  For a regime that alters the data, ``train`` is
    :func:`prepare_train`'s split, and ``alteration`` its info (stored in the manifest under ``alteration``).

    With ``heldout`` (D_test), the same rule picks the membership attack's non-members from it too
    (``nonmember_indices``, indices into ``heldout``; module docstring)."""
    spec = cfg.spec
    n = len(train)
    if spec.needs_model and model is None:
        needless = [r for r in REGIMES.names() if not REGIMES[r].needs_model]
        raise ConfigError("forget.regime", cfg.regime, f"{' or '.join(needless)} when no original model is given")
    check(trainer is not None or not spec.needs_trainer, "forget.regime", cfg.regime,
          "a regime that needs no subset-model trainer, or pass trainer= (models trained with θ0's recipe on "
          f"subsets of the training set), which {cfg.regime} needs")
    idx = spec.select(cfg, train, num_classes, seed=seed, model=model, device=device, trainer=trainer)
    idx = torch.sort(idx.to(torch.int64)).values
    check(len(idx) > 0, "forget_set.size", 0, f"at least one sample (regime {cfg.regime} selected none)")
    check(len(idx) < n, "forget_set.size", len(idx),
          f"fewer than the whole training set ({n}); the retain set would be empty")
    hist = torch.bincount(train.y.cpu()[idx], minlength=num_classes).tolist()
    digest = hashlib.sha256(idx.numpy().tobytes()).hexdigest()[:16]
    manifest = {"regime": cfg.regime, "label": cfg.label(), "params": asdict(cfg), "seed": seed,
                "size": len(idx), "train_size": n, "class_histogram": hist, "content_hash": digest}
    if alteration is not None:
        manifest["alteration"] = alteration
    nonmembers = None
    if heldout is not None:
        nonmembers, info = _nonmembers(cfg, train, heldout, num_classes, seed=seed, model=model, device=device,
                                       size=len(idx))
        manifest.update(info)
    return ForgetSet(idx, manifest, nonmembers)


def retain_indices(n: int, forget_idx: torch.Tensor) -> torch.Tensor:
    """The complement of ``forget_idx`` in range(n), sorted."""
    mask = torch.ones(n, dtype=torch.bool)
    mask[forget_idx] = False
    return torch.nonzero(mask).squeeze(1)


def request_chunks(forget_idx: torch.Tensor, steps: int, seed: int) -> list[torch.Tensor]:
    """A forget set split into ``steps`` successive deletion requests: a permutation of ``forget_idx`` drawn from
    ``seed``, cut into ``steps`` parts whose sizes differ by at most one (the first ones larger), each sorted.
    Request t removes its part; after it, the union of parts 1..t is gone.  Random order, so a selection rule's
    ranking (θ0's highest losses first, say) does not decide which request is hard."""
    n = len(forget_idx)
    check(1 <= steps <= n, "forget.steps", steps, f"an integer in [1, {n}] (the forget set has {n} points)")
    perm = forget_idx[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    return [torch.sort(part).values for part in torch.tensor_split(perm, steps)]


# the hard deletions from the literature register themselves (last: they build on the definitions above)
from . import hard_regimes  # noqa: E402, F401
