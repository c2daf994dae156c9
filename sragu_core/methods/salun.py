"""SalUn (Fan, Liu, Zhang, Wong, Wei & Liu, "SalUn: Empowering Machine Unlearning via Gradient-based Weight
Saliency in Both Image Classification and Generation", ICLR 2024).

Two stages.

1. Weight saliency, once, at θ0 (eval mode), from the forget loss alone:

       g = Σ_b ∇_θ CE_b(θ0; D_f)        (sum over minibatches b of D_f of the batch-mean gradient)
       m_S = 1( |g| ≥ γ )               γ chosen so that the top ``mask_ratio`` fraction of all entries is kept

   The ranking is *global*: every trainable entry of every layer (weights and biases alike) is ranked together,
   and exactly ⌊N · mask_ratio⌋ entries (N = number of trainable entries) get m_S = 1.

2. Random labelling restricted to the salient weights.  Each epoch runs a pass over D_f with random labels,
   then a pass over D_r with the true labels (``mix="sequential"``); every step descends the cross-entropy of
   its minibatch with the gradient multiplied by the 0/1 mask before the SGD step, so

       θ_u = m_S ⊙ (θ0 + Δθ) + (1 − m_S) ⊙ θ0      (the paper's update: non-salient entries stay at θ0, bit-exact)

Touches D_f (the saliency gradient, the random-label passes, the per-epoch trace) and D_r (the retain passes).

Choices taken from the authors' code (github.com/OPTML-Group/Unlearn-Saliency, ``Classification/``):
- Mask (``generate_mask.py``, ``save_gradient_ratio``): ``model.eval()``; per forget minibatch ``loss =
  -criterion(output, target)``, backward, ``gradients[name] += param.grad``; then ``abs``; all entries
  concatenated (global across layers) and ranked by ``argsort`` of ``-|g|``, ``ranks < int(N * ratio)`` set to 1:
  the *top* fraction is kept; masks are saved for ratios 0.1 … 1.0 as ``with_{ratio}.pt`` and the README's
  SalUn run uses ``mask/with_0.5.pt``: default ``mask_ratio = 0.5``.  (An earlier version of the file ranked
  ``+|g|``, keeping the bottom fraction, and took optimiser steps while accumulating; the later version is
  the one followed here, and it matches the paper.)  The sign of the loss is irrelevant after ``abs``.
  Deviation: their forget loader is shuffled; here the saliency pass walks D_f in order (the sum of batch
  means depends on the batching only through the last, partial batch), so the mask is the same for every seed.
- Training (``unlearn/RL.py`` with ``main_random.py``): for CIFAR-10/SVHN, each epoch is a loop over the
  forget loader with ``target = torch.randint(0, num_classes, ...)`` (a uniform class, which may equal the true
  one), then a loop over the retain loader with true labels, each step ``optimizer.zero_grad(); backward();
  param.grad *= mask[name]; optimizer.step()`` — ``mix="sequential"``, ``random_labels="any"``.  For
  CIFAR-100/TinyImageNet the forget set is relabelled once per epoch and concatenated with the retain set into
  one shuffled loader — ``mix="concat"``.  The authors confirm the sequential update (issue #21: "our model
  updates sequentially, first on the forget data and then on the retain data").
- Optimiser (``unlearn/impl.py``, ``arg_parser.py``): SGD, momentum 0.9, weight decay 5e-4, batch 256; the
  MultiStepLR milestones (91, 136) never fire within 10 epochs, warm-up 0.  README example for ResNet-18 on
  CIFAR-10 with 10% random forgetting: ``--unlearn_epochs 10 --unlearn_lr 0.013 --mask_path mask/with_0.5.pt``.
- Weight decay on non-salient entries: ``torch.optim.SGD`` adds ``wd · θ`` *after* the mask, so the
  original ``RL.py`` lets non-salient weights decay; a later commit of the authors' ``RL.py`` restores them to
  θ0 after every step and zeroes their momentum (``_restore_masked_params``), as the paper's update requires.
  Here the decay term ``wd · θ`` is added to the gradient *before* the mask (through the loss, without changing
  the loss value), which is the same update on salient entries and leaves every non-salient entry untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from .._loop import LoopSpec, MethodResult, minibatches, run_loop, seeded
from ..data import Split, UnlearnData
from ..errors import check
from ..training import SGDConfig
from ._registry import register
from ._shared import epoch_budget, step_size
from .random_label import wrong_labels

__all__ = ["SalUnConfig", "salun", "saliency_mask", "MIXES", "RANDOM_LABELS"]

MIXES = ("sequential", "concat")
RANDOM_LABELS = ("any", "wrong")
Mix = Literal["sequential", "concat"]
RandomLabels = Literal["any", "wrong"]


@dataclass(frozen=True)
class SalUnConfig(SGDConfig):
    # SGD learning rate: the authors' README example for CIFAR-10, 10% random forgetting (``--unlearn_lr 0.013``)
    lr: float = step_size(0.013)
    # ``--momentum`` default
    momentum: float = 0.9
    # ``--weight_decay`` default; applied to salient entries only (see the module docstring)
    weight_decay: float = 5e-4
    # ``--unlearn_epochs 10``: epochs of (forget pass with random labels, then retain pass); on mnist_5k about
    # 0.4 s for the MLP and 30 s for cnn_small, one CPU thread
    epochs: int = epoch_budget(10)
    # ``--batch_size`` default, for the saliency pass and both training passes
    batch_size: int = 256
    # fraction of all trainable entries kept in the saliency mask (largest |∇θ CE(D_f)|, ranked globally);
    # the README's SalUn run uses the mask ``with_0.5.pt``; 1.0 = plain random labelling + retain passes
    mask_ratio: float = field(default=0.5, metadata={"search": ("float", 0.1, 1.0)})
    # how forget (random labels) and retain (true labels) minibatches are combined: "sequential" = a pass over
    # D_f then a pass over D_r every epoch (the authors' CIFAR-10/SVHN branch); "concat" = D_f relabelled once
    # per epoch and shuffled together with D_r (their CIFAR-100/TinyImageNet branch)
    mix: Mix = "sequential"
    # random labels of D_f: "any" = uniform over all classes, the true class included (``torch.randint``, the
    # authors' code); "wrong" = uniform over the other classes (``random_label``'s rule)
    random_labels: RandomLabels = "any"

    def __post_init__(self):
        super().__post_init__()
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0")
        check(0 < self.mask_ratio <= 1, "mask_ratio", self.mask_ratio,
              "a number in (0, 1] (the fraction of weights the saliency mask keeps)")
        check(self.mix in MIXES, "mix", self.mix, f"one of {list(MIXES)}")
        check(self.random_labels in RANDOM_LABELS, "random_labels", self.random_labels,
              f"one of {list(RANDOM_LABELS)}")


def saliency_mask(model: nn.Module, forget: Split, ratio: float, batch_size: int) -> dict[str, torch.Tensor]:
    """The 0/1 SalUn mask of every trainable parameter: the top ``ratio`` fraction of all entries by
    |Σ_b ∇θ CE_b(D_f)|, ranked globally; exactly ⌊N·ratio⌋ ones.  ``model`` is left as it was (weights, mode,
    gradients)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    was = model.training
    model.eval()
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for x, y in minibatches(forget, batch_size, None):
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(params.values()), allow_unused=True)
        for (n, _), g in zip(params.items(), grads):
            if g is not None:
                total[n] += g
    model.train(was)
    scores = torch.cat([g.abs().flatten() for g in total.values()])
    keep = int(scores.numel() * ratio)
    flat = torch.zeros_like(scores)
    flat[torch.argsort(scores, descending=True, stable=True)[:keep]] = 1.0
    mask, start = {}, 0
    for n, p in params.items():
        mask[n] = flat[start:start + p.numel()].view_as(p)
        start += p.numel()
    return mask


@register("salun", SalUnConfig)
def salun(model: nn.Module, data: UnlearnData, cfg: SalUnConfig, *, seed: int, on_epoch=None) -> MethodResult:
    mask = saliency_mask(model, data.forget, cfg.mask_ratio, cfg.batch_size)
    gen = seeded(seed)
    params = [p for p in model.parameters() if p.requires_grad]

    def relabel(y: torch.Tensor) -> torch.Tensor:
        if cfg.random_labels == "wrong":
            return wrong_labels(y, data.num_classes, gen)
        return torch.randint(0, data.num_classes, (len(y),), generator=gen).to(y.device)

    def batches(epoch: int):
        if cfg.mix == "concat":
            both = Split(torch.cat([data.forget.x, data.retain.x]),
                         torch.cat([relabel(data.forget.y), data.retain.y]))
            yield from minibatches(both, cfg.batch_size, gen)
            return
        for x, y in minibatches(data.forget, cfg.batch_size, gen):
            yield x, relabel(y)  # a fresh draw per minibatch, as the authors' loop does
        yield from minibatches(data.retain, cfg.batch_size, gen)

    def loss(m: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        ce = F.cross_entropy(m(x), y)
        if cfg.weight_decay == 0:
            return ce
        # adds wd·θ to the gradient (masked with it by the loop) and 0 to the value
        sq = sum(p.pow(2).sum() for p in params)
        return ce + 0.5 * cfg.weight_decay * (sq - sq.detach())

    spec = LoopSpec(batches=batches, loss=loss, lr=cfg.lr, max_epochs=cfg.epochs, momentum=cfg.momentum,
                    scale=mask, monitor_split=data.forget, on_epoch=on_epoch)
    trace = run_loop(model, spec)
    kept = sum(int(m.sum()) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    trace.extras.update({"mask_kept": kept, "mask_total": total, "mask_ratio_actual": kept / max(total, 1)})
    return MethodResult(model, trace)
