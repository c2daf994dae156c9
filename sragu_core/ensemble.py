"""Train and evaluate K models of one architecture at once, vectorised over the members with ``torch.func``.

Several measurements need many models trained by the original's recipe (:func:`sragu_core.training.train`)
from different seeds or on different subsets of the training set: reference ensembles of models retrained
without D_f, the shadow models of U-LiRA (Hayes et al. 2024, "Inexact unlearning needs more careful
evaluations": IN/OUT models on random halves of D), and memorisation estimates (Feldman & Zhang 2020:
models trained on random subsets, then each point's accuracy with vs without it).  For small models
one such model leaves a CPU or GPU mostly idle and spends its time in per-step Python/autograd/optimiser
overhead; :func:`train_ensemble` trains K members in one vectorised loop instead:

* the members' freshly built models are stacked (``torch.func.stack_module_state``: each parameter becomes
  one (K, ...) tensor) and run through a parameter-less copy of the architecture on the ``meta`` device with
  ``functional_call`` inside ``vmap``; ``vmap(grad_and_value(loss))`` gives each member the gradient of its
  *own* mean cross-entropy over its *own* minibatch (members never share a reduction, so one member's
  batch or a non-finite value never reaches another's gradient);
* member k draws its batch order from its own ``seeded(order_seed)`` generator, one ``randperm`` per epoch,
  exactly as :func:`sragu_core._loop.minibatches` does inside ``train`` — batch b of epoch e is the same
  data as in the member's sequential run (indices into its ``subset`` when it has one);
* the update is ``torch.optim.SGD``'s single-tensor step written out with the same in-place ops, so it
  rounds the same way: g ← g + wd·θ; buf ← g on the first step, then buf ← m·buf + g; θ ← θ − lr·buf
  (dampening 0, no Nesterov);
* parameters named in ``model.held_at_init`` (``mlp_planted``) and parameters with ``requires_grad`` off are
  passed to the loss as constants and never updated, as ``train`` leaves them, so they stay bit-identical
  to the member's initialisation.

Tolerance.  Each member's result equals the sequential reference
``m = build(init_seed).to(device); train(m, data.subset(subset), cfg, seed=order_seed)`` (``data`` when
``subset`` is None) up to
float32 rounding, not necessarily bit for bit: the vmapped forward and backward run batched matmuls (``bmm``
over the K members, bias added separately) where the sequential run uses ``addmm``/``mm``, and the BLAS
kernels may sum in a different order; the SGD ops are the same ops, in the same order.  Measured on this
2-core CPU (torch 2.13, MKL, one thread): the tests' digits MLP (64-32-10, 3 epochs of lr 0.05, momentum
0.9, weight decay 5e-4) comes out bit-identical (max |Δθ| = 0), and ``tests/test_ensemble.py`` asserts
max |Δθ| ≤ 1e-5, while the same member with another batch order, or without momentum, lands > 1e-2 away.
On the default 784-128-64-10 MLP on mnist_5k a first step differs by ~4e-9, five epochs (275 steps) by
~1e-7 for most members — but a rounding-level difference can flip a ReLU near zero and training then
carries it: one of 16 members ended 3.6e-5 apart (test logits 2.5e-3 apart; ``bench/ensemble.py``).
Compare members by their predictions rather than their weights when that matters.

Speed (``bench/ensemble.py``, same run, one thread each side): 16 default MLPs on mnist_5k train at ~1.5x the
sequential models/s on this CPU.  Both sides do the same matmul FLOPs, which already take ~40 % of a
sequential batch-64 step here (≈ 0.45 of ≈ 1.1 ms), so the vectorised loop can at most remove the rest
(≤ ~2.4x); the gain should be larger where per-step overhead dominates more (small models, GPUs: not
measured here).

Members must have training sets of equal size to share a vmapped loop (their minibatches have the same
shapes); members of different sizes are grouped by size and each group runs its own loop; ``chunk`` caps the
members per loop (memory grows linearly with it: K copies of weights, momentum buffers, gradients and
activations).  Results come back in the order of ``members``.

Fallback to the sequential reference (documented behaviour, not an error):

* models with buffers (BatchNorm's running statistics: ``resnet18``) — a vmapped forward in training mode
  would have to write K sets of running statistics in place, which ``functional_call`` under ``vmap`` does
  not do the way ``train`` does; such models, and models with dropout (whose noise comes from the global
  RNG, member after member), are trained one by one with ``train`` itself;
* a member whose loss went non-finite or whose weights ended non-finite is retrained with ``train`` (which
  stops at the first non-finite loss), so even a diverged member matches the reference.

:func:`predict_ensemble` returns the stacked eval-mode logits of K trained members, vmapped the same way
(sequential for models with buffers or dropout).  Pure: tensors in, tensors out; the device comes in.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap
from torch.nn.modules.dropout import _DropoutNd

from ._loop import seeded
from .data import Split
from .errors import check
from .training import TrainConfig, train

__all__ = ["Member", "train_ensemble", "predict_ensemble"]

State = dict[str, torch.Tensor]


@dataclass(frozen=True, eq=False)  # eq=False: dataclass equality would compare the subset tensors with ==
class Member:
    """One ensemble member: ``build(init_seed)`` gives its initial weights, ``seeded(order_seed)`` its batch
    order (as ``train(..., seed=order_seed)``), ``subset`` (1-D integer indices into the training split, or
    None for all of it) its training set."""

    init_seed: int
    order_seed: int
    subset: torch.Tensor | None = None

    def __post_init__(self):
        for name in ("init_seed", "order_seed"):
            value = getattr(self, name)
            check(isinstance(value, numbers.Integral) and not isinstance(value, bool), f"member.{name}", value,
                  "an integer")
        s = self.subset
        if s is not None:
            ok = isinstance(s, torch.Tensor) and s.dim() == 1 and s.numel() >= 1 and not s.is_floating_point() \
                and s.dtype != torch.bool and not s.is_complex()
            check(ok, "member.subset", _describe(s), "None or a non-empty 1-D integer index tensor")


def _describe(t: object) -> object:
    return f"tensor(shape={tuple(t.shape)}, dtype={t.dtype})" if isinstance(t, torch.Tensor) else t


def _vmappable(model: nn.Module) -> bool:
    """Whether a vmapped functional forward reproduces ``model``'s training: no buffers, no dropout."""
    return next(model.buffers(), None) is None and not any(isinstance(m, _DropoutNd) for m in model.modules())


def _to_cpu(state: State) -> State:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _train_one(build: Callable[[int], nn.Module], data: Split, cfg: TrainConfig, member: Member,
               device: torch.device) -> State:
    """The sequential reference: ``train`` on the member's data from ``build(init_seed)``."""
    model = build(member.init_seed).to(device)
    split = data if member.subset is None else data.subset(member.subset.to(device))
    train(model, split, cfg, seed=member.order_seed)
    return _to_cpu(model.state_dict())


def _held_names(model: nn.Module) -> set[str]:
    names = tuple(getattr(model, "held_at_init", ()))
    params = dict(model.named_parameters())
    unknown = [n for n in names if n not in params]
    check(not unknown, "model.held_at_init", unknown, f"parameter names of the model, e.g. {list(params)[:4]}")
    return set(names)


def _check_same_architecture(models: Sequence[nn.Module]) -> None:
    ref = [(n, p.shape) for n, p in models[0].named_parameters()]
    for m in models[1:]:
        got = [(n, p.shape) for n, p in m.named_parameters()]
        check(got == ref, "build", f"{len(got)} parameters unlike the first member's {len(ref)}",
              "a function returning the same architecture (parameter names and shapes) for every seed")


def _orders(members: Sequence[Member], gens: Sequence[torch.Generator], n: int) -> torch.Tensor:
    """This epoch's (K, n) training-set indices: member k's ``randperm(n)`` from its generator, mapped through
    its subset — the order ``minibatches`` gives ``train`` on ``data.subset(subset)``."""
    rows = []
    for m, g in zip(members, gens):
        order = torch.randperm(n, generator=g)
        rows.append(order if m.subset is None else m.subset[order])
    return torch.stack(rows)


def _mean_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``F.cross_entropy(logits, y)`` (mean over the batch) spelt with log_softmax and gather: the same gradient,
    op for op (−1/n at each target, through the same log_softmax backward), but vmap batches it in one call
    where ``nll_loss`` falls back to a slow per-member path (~0.4 ms per step for 16 members on a CPU)."""
    return -torch.log_softmax(logits, -1).gather(-1, y.unsqueeze(-1)).mean()


def _train_vmapped(build: Callable[[int], nn.Module], data: Split, cfg: TrainConfig, members: Sequence[Member],
                   device: torch.device) -> list[State]:
    """Train ``members`` (training sets of one size) in one vmapped loop; see the module docstring."""
    models = [build(m.init_seed) for m in members]
    _check_same_architecture(models)
    held = _held_names(models[0])
    keys = list(models[0].state_dict())  # the order state_dict() gives (no buffers here)
    trained = [n for n, p in models[0].named_parameters() if p.requires_grad and n not in held]
    stacked, _ = stack_module_state(models)
    stacked = {n: p.detach().to(device).contiguous() for n, p in stacked.items()}
    params = {n: stacked[n] for n in trained}
    const = {n: p for n, p in stacked.items() if n not in params}
    base = copy.deepcopy(models[0]).to("meta")  # the architecture only; weights come from `stacked`
    base.train()
    del models

    def loss(p: State, c: State, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _mean_cross_entropy(functional_call(base, (p, c), (x,)), y)

    step = vmap(grad_and_value(loss))  # per member: (its gradient dict, its mean CE)
    k = len(members)
    n = len(data) if members[0].subset is None else members[0].subset.numel()
    gens = [seeded(m.order_seed) for m in members]
    flat_x = data.x.reshape(len(data), -1)  # index_select on rows is ~4x faster than x[idx] for (K, b) indices
    finite = torch.ones(k, dtype=torch.bool, device=device)
    bufs: dict[str, torch.Tensor] = {}  # momentum buffers, created on the first step as SGD does
    lr, mom, wd = cfg.lr, cfg.momentum, cfg.weight_decay
    for _ in range(cfg.epochs):
        order = _orders(members, gens, n).to(device)
        for start in range(0, n, cfg.batch_size):
            idx = order[:, start:start + cfg.batch_size]  # (K, b)
            xb = flat_x.index_select(0, idx.reshape(-1)).view(*idx.shape, *data.x.shape[1:])
            grads, value = step(params, const, xb, data.y[idx])
            finite &= torch.isfinite(value)
            # torch.optim.SGD's single-tensor step (dampening 0, no Nesterov), op for op
            for name, p in params.items():
                g = grads[name]
                if wd != 0:
                    g = g.add(p, alpha=wd)
                if mom != 0:
                    if name not in bufs:
                        bufs[name] = g.detach().clone()
                    else:
                        bufs[name].mul_(mom).add_(g, alpha=1)
                    g = bufs[name]
                p.add_(g, alpha=-lr)
    for p in params.values():
        finite &= torch.isfinite(p.reshape(k, -1)).all(1)
    ok = finite.tolist()
    return [_to_cpu({name: stacked[name][i] for name in keys}) if ok[i]
            else _train_one(build, data, cfg, members[i], device)  # diverged: the reference's own stopping rule
            for i in range(k)]


def train_ensemble(build: Callable[[int], nn.Module], data: Split, cfg: TrainConfig, members: Sequence[Member],
                   *, device: str | torch.device = "cpu", chunk: int | None = None) -> list[State]:
    """Train every member with the original's recipe ``cfg``; return one CPU ``state_dict`` per member, in order.

    ``build(seed)`` must return a freshly initialised model (same architecture for every seed), e.g.
    ``lambda s: build_model(model_cfg, input_shape, num_classes, seed=s)``.  ``data`` is the full training
    split (moved to ``device`` here); a member's ``subset`` indexes into it.  Members with training sets of
    equal size run in vmapped loops of at most ``chunk`` members (None: all of them); the result equals the
    sequential ``train`` per member within float32 rounding (module docstring: tolerance, fallbacks).
    """
    members = list(members)
    check(len(members) >= 1, "members", len(members), "at least one Member")
    check(all(isinstance(m, Member) for m in members), "members",
          sorted({type(m).__name__ for m in members}), "a sequence of sragu_core.ensemble.Member")
    check(chunk is None or (isinstance(chunk, int) and not isinstance(chunk, bool) and chunk >= 1),
          "chunk", chunk, "None or an integer >= 1")
    n_data = len(data)
    check(n_data > 0, "train_set", 0, "at least one sample")
    for i, m in enumerate(members):
        if m.subset is not None:
            lo, hi = int(m.subset.min()), int(m.subset.max())
            check(lo >= 0 and hi < n_data, f"members[{i}].subset", f"indices in [{lo}, {hi}]",
                  f"indices in [0, {n_data - 1}] (the training split has {n_data} samples)")
    device = torch.device(device)
    data = data.to(device)
    if not _vmappable(build(members[0].init_seed)):
        return [_train_one(build, data, cfg, m, device) for m in members]
    members = [m if m.subset is None else Member(m.init_seed, m.order_seed, m.subset.to("cpu", torch.int64))
               for m in members]  # indices on the CPU, beside the CPU generators' permutations
    groups: dict[int, list[int]] = {}
    for i, m in enumerate(members):
        groups.setdefault(n_data if m.subset is None else m.subset.numel(), []).append(i)
    out: list[State | None] = [None] * len(members)
    for idxs in groups.values():
        size = chunk or len(idxs)
        for start in range(0, len(idxs), size):
            part = idxs[start:start + size]
            for i, state in zip(part, _train_vmapped(build, data, cfg, [members[i] for i in part], device)):
                out[i] = state
    return out  # type: ignore[return-value]


@torch.no_grad()
def predict_ensemble(build: Callable[[int], nn.Module], states: Sequence[State], x: torch.Tensor, *,
                     device: str | torch.device = "cpu", batch_size: int = 1024) -> torch.Tensor:
    """Eval-mode logits of every member on ``x`` (N, ...): a CPU tensor (K, N, C), member k = ``states[k]``.

    ``build`` gives the architecture (``build(0)`` is built once and its weights replaced); one vmapped
    ``functional_call`` per batch of ``batch_size`` inputs, shared by all members; models with buffers or
    dropout run member by member (``load_state_dict``, ``eval()``).
    """
    states = list(states)
    check(len(states) >= 1, "states", len(states), "at least one state_dict")
    check(isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1,
          "batch_size", batch_size, "an integer >= 1")
    check(x.dim() >= 1 and x.shape[0] >= 1, "x", _describe(x), "a tensor (N, ...) with N >= 1 inputs")
    device = torch.device(device)
    model = build(0)
    ref = {k: v.shape for k, v in model.state_dict().items()}
    for i, s in enumerate(states):
        got = {k: v.shape for k, v in s.items()}
        check(got == ref, f"states[{i}]", f"{len(got)} tensors", f"the {len(ref)} tensors (names and shapes) of "
              f"build(0).state_dict(), e.g. {list(ref)[:3]}")
    batches = range(0, x.shape[0], batch_size)
    if not _vmappable(model):
        out = []
        for s in states:
            model.load_state_dict(s)
            model.to(device).eval()
            out.append(torch.cat([model(x[b:b + batch_size].to(device)).cpu() for b in batches]))
        return torch.stack(out)
    stacked = {k: torch.stack([s[k] for s in states]).to(device) for k in ref}
    base = model.to("meta").eval()
    forward = vmap(lambda p, xb: functional_call(base, p, (xb,)), in_dims=(0, None))
    return torch.cat([forward(stacked, x[b:b + batch_size].to(device)).cpu() for b in batches], dim=1)
