"""SCRUB (Kurmanji, Triantafillou, Hayes & Triantafillou, "Towards Unbounded Machine Unlearning", NeurIPS 2023).

Teacher–student distillation.  The teacher is θ0, a frozen copy of the input model, always in eval mode; the
student starts at θ0 and is trained.  With the distillation divergence at temperature T (the authors'
``DistillKL``, from RepDistiller)

    d(x) = T² · KL( softmax(f_θ0(x)/T) ‖ softmax(f_θ(x)/T) )        (teacher ‖ student, mean over the batch)

each epoch e = 1..``epochs`` runs, in this order and with one shared SGD optimiser:

    if e ≤ msteps:  a pass over D_f, descending −d   (max-step: push the student away from the teacher on D_f)
    always:         a pass over D_r, descending γ·CE(f_θ(x), y) + α·d(x)   (min-step: stay close, keep the task)

Touches D_f (max-steps, and the per-epoch trace) and D_r (min-steps).

Choices taken from the authors' code (github.com/meghdadk/SCRUB):
- KL direction and scaling: ``DistillKL.forward(y_s, y_t)`` is ``kl_div(log_softmax(y_s/T), softmax(y_t/T),
  sum) · T² / batch`` = KL(teacher ‖ student) · T², mean over the batch (``helper/KD.py``).
- Loop order: epochs count from 1, ``if epoch <= msteps: train_distill(forget_loader, "maximize")`` then
  ``train_distill(retain_loader, "minimize")`` — max pass first, then min pass, in the same epoch
  (``large_scale_unlearning.ipynb``, ``small_scale_unlearning.ipynb``); the loss of a max-step is ``-loss_div``,
  of a min-step ``gamma * loss_cls + alpha * loss_div + beta * loss_kd`` with ``beta = 0`` (plain KD, no
  feature distillation) (``thirdparty/repdistiller/helper/loops.py``).
- The student trains in train mode (BatchNorm statistics update), the teacher in eval mode; the teacher is
  frozen, so its logits are computed once here instead of once per batch (same numbers, fewer passes).
- Defaults: the SGD recipe of the authors' large-scale (CIFAR-10) SCRUB cell — ``optim='sgd'``,
  ``sgda_learning_rate=0.0005``, ``sgda_momentum=0.9``, ``sgda_weight_decay=5e-4``, ``sgda_epochs=3``,
  ``msteps=2``, ``alpha=0.001``, ``gamma=0.99``, ``kd_T=4``, forget loader batch 512, retain loader batch 256.
  Their small-scale (CIFAR-5/Lacuna-5) cell uses Adam instead (lr 5e-4, weight decay 0.1, 10 epochs,
  msteps 3, α 0.5, γ 1); the shared loop here is SGD, so the SGD recipe is the default.
- Not reproduced: the step learning-rate decay (``lr_decay_epochs=[3,5,9]``, ×0.1 once ``epoch > 3``), which
  never fires within the recipe's 3 epochs (it would only matter for ``epochs`` > 3 in a sweep); the SWA
  "smoothing" model, which the authors build but do not pass to the loop (``swa_model=None``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from .._loop import LoopSpec, MethodResult, run_loop, seeded
from ..data import Split, UnlearnData
from ..errors import check
from ..training import SGDConfig
from ._registry import register
from ._shared import epoch_budget, step_size

__all__ = ["ScrubConfig", "scrub", "distill_kl"]


@dataclass(frozen=True)
class ScrubConfig(SGDConfig):
    # SGD learning rate of both passes; the authors' ``sgda_learning_rate`` (large-scale cell).
    lr: float = step_size(5e-4)
    # ``sgda_momentum``
    momentum: float = 0.9
    # ``sgda_weight_decay`` (large-scale cell; their small-scale Adam cell uses 0.1)
    weight_decay: float = 5e-4
    # ``sgda_epochs``: epochs of (max pass if epoch <= msteps) + min pass
    epochs: int = epoch_budget(3)
    # ``msteps``: epochs 1..msteps include a max pass over D_f; msteps >= epochs means every epoch does
    msteps: int = field(default=2, metadata={"search": ("int", 1, 10)})
    # retain (min-step) batch size: the authors' retain loader, batch 256 (large-scale cell)
    batch_size: int = 256
    # forget (max-step) batch size: the authors' forget loader, batch 512 (large-scale cell)
    forget_batch_size: int = 512
    # α: weight of the KL term in the min-step (``args.alpha``)
    alpha: float = field(default=1e-3, metadata={"search": ("log", 1e-4, 1.0)})
    # γ: weight of the cross-entropy term in the min-step (``args.gamma``)
    gamma: float = field(default=0.99, metadata={"search": ("float", 0.1, 1.0)})
    # T: distillation temperature of both KL terms (``args.kd_T``)
    kd_T: float = 4.0

    def __post_init__(self):
        super().__post_init__()
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0")
        check(self.msteps >= 0, "msteps", self.msteps, "an integer >= 0 (epochs with a max pass over D_f)")
        check(self.forget_batch_size >= 1, "forget_batch_size", self.forget_batch_size, "an integer >= 1")
        check(self.alpha >= 0, "alpha", self.alpha, "a number >= 0")
        check(self.gamma >= 0, "gamma", self.gamma, "a number >= 0")
        check(self.kd_T > 0, "kd_T", self.kd_T, "a number > 0 (a temperature)")


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """T² · KL(softmax(teacher/T) ‖ softmax(student/T)), mean over the batch (the authors' ``DistillKL``)."""
    log_s = F.log_softmax(student_logits / T, dim=1)
    log_t = F.log_softmax(teacher_logits / T, dim=1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * T ** 2


@torch.no_grad()
def _teacher_logits(teacher: nn.Module, split: Split, batch_size: int = 1024) -> torch.Tensor:
    return torch.cat([teacher(split.x[i:i + batch_size]) for i in range(0, len(split), batch_size)])


def _indexed_batches(n: int, batch_size: int, gen: torch.Generator, device: torch.device):
    """Shuffled index minibatches, drawn from ``gen`` exactly as :func:`minibatches` draws them."""
    order = torch.randperm(n, generator=gen).to(device)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


@register("scrub", ScrubConfig)
def scrub(model: nn.Module, data: UnlearnData, cfg: ScrubConfig, *, seed: int, on_epoch=None) -> MethodResult:
    teacher = copy.deepcopy(model).eval()
    teacher.requires_grad_(False)
    t_forget, t_retain = _teacher_logits(teacher, data.forget), _teacher_logits(teacher, data.retain)
    del teacher
    gen = seeded(seed)
    device = data.forget.x.device

    def batches(epoch: int):
        if epoch <= cfg.msteps:
            for idx in _indexed_batches(len(data.forget), cfg.forget_batch_size, gen, device):
                yield "max", data.forget.x[idx], data.forget.y[idx], t_forget[idx]
        for idx in _indexed_batches(len(data.retain), cfg.batch_size, gen, device):
            yield "min", data.retain.x[idx], data.retain.y[idx], t_retain[idx]

    def loss(m: nn.Module, batch) -> torch.Tensor:
        step, x, y, t = batch
        logits = m(x)
        kl = distill_kl(logits, t, cfg.kd_T)
        if step == "max":
            return -kl  # the loop descends: ascent on the divergence from the teacher
        return cfg.gamma * F.cross_entropy(logits, y) + cfg.alpha * kl

    spec = LoopSpec(batches=batches, loss=loss, lr=cfg.lr, max_epochs=cfg.epochs, momentum=cfg.momentum,
                    weight_decay=cfg.weight_decay, monitor_split=data.forget, on_epoch=on_epoch)
    return MethodResult(model, run_loop(model, spec))
