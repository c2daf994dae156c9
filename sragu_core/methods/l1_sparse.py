"""ℓ1-sparse unlearning (Jia, Liu, Ram, Yao, Liu, Liu, Sharma & Liu, "Model Sparsity Can Simplify Machine
Unlearning", NeurIPS 2023, §4.3 "sparsity-aware unlearning").

Fine-tuning on the retain set with an ℓ1 penalty on every weight, the penalty decaying linearly over the epochs:

    for epoch e = 0 … E−1 (E = ``epochs``), every minibatch b of D_r:
        L = CE_b(θ; D_r) + α_e · ‖θ‖₁,        α_e = α · (1 − e / (E − n))  for e < E − n,  else 0

(``n`` = ``no_l1_epochs``, 0 by default: α_0 = α, the last epoch still has α/E).  ‖θ‖₁ sums |θ_i| over every
parameter entry, biases included (sub-gradient sign(θ), 0 at 0).  SGD with momentum and weight decay.
Touches D_r (and D_f for the per-epoch trace only).  With α = 0 and no weight decay it is exactly ``finetune``
(same minibatch order for a seed, the same steps).

Choices taken from the authors' code (github.com/OPTML-Group/Unlearn-Sparse, ``unlearn/FT.py`` → ``FT_l1``,
used by ``FT_prune``; the same file is in ``src/optim/unlearn/FT.py`` and in SalUn's ``Classification/``):
- The schedule: ``current_alpha = args.alpha * (1 - epoch / (args.unlearn_epochs - args.no_l1_epochs))`` with a
  0-based ``epoch``, ``0`` for the last ``no_l1_epochs`` epochs (``--no-l1-epochs`` default 0); constant within
  an epoch.  The penalty is ``torch.linalg.norm(torch.cat([p.view(-1) for p in model.parameters()]), ord=1)``
  added to the batch-mean CE (``loss = loss + current_alpha * l1_regularization(model)``), not averaged.
  (The authors' odd case ``unlearn_epochs == no_l1_epochs`` → constant α is excluded: ``no_l1_epochs <
  epochs``.)
- Optimiser (``unlearn/impl.py``, ``arg_parser.py``): SGD, momentum 0.9, weight decay 5e-4, batch 256,
  MultiStepLR milestones (91, 136) that never fire within 10 epochs, no warm-up; model in train mode.
- README command: ``--unlearn FT_prune --alpha ${alpha} --unlearn_lr 0.01 --unlearn_epochs 10``: lr 0.01,
  10 epochs.  α: see the field comment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from .._loop import LoopSpec, MethodResult, minibatches, run_loop, seeded
from ..data import UnlearnData
from ..errors import check
from ..training import SGDConfig
from ._registry import register
from ._shared import epoch_budget, step_size

__all__ = ["L1SparseConfig", "l1_sparse", "l1_coefficient", "l1_norm"]


@dataclass(frozen=True)
class L1SparseConfig(SGDConfig):
    # SGD learning rate: the README's FT_prune command (``--unlearn_lr 0.01``)
    lr: float = step_size(0.01)
    # ``--momentum`` default
    momentum: float = 0.9
    # ``--weight_decay`` default (on top of the ℓ1 term, as the authors' optimiser has it)
    weight_decay: float = 5e-4
    # the README's FT_prune command (``--unlearn_epochs 10``); on mnist_5k about 0.4 s for the MLP and 30 s for
    # cnn_small, one CPU thread
    epochs: int = epoch_budget(10)
    # ``--batch_size`` default
    batch_size: int = 256
    # α, the ℓ1 coefficient at epoch 0.  The authors' code has no ℓ1-specific default: ``--alpha`` (default 0.2)
    # is one flag shared with influence/Fisher unlearning ("unlearn noise"), and 0.2·sign(θ) at lr 0.01 zeroes
    # every weight of a small network within a few epochs.  5e-4 is the γ reported for the paper's ℓ1-sparse
    # runs; the range covers the [1e-6, 1e-4] grid SalUn's authors searched for this baseline.
    alpha: float = field(default=5e-4, metadata={"search": ("log", 1e-6, 1e-3)})
    # ``--no-l1-epochs``: the last ``no_l1_epochs`` epochs run without the penalty (α decays over the others)
    no_l1_epochs: int = 0

    def __post_init__(self):
        super().__post_init__()
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0")
        check(self.alpha >= 0, "alpha", self.alpha, "a number >= 0")
        check(0 <= self.no_l1_epochs < self.epochs, "no_l1_epochs", self.no_l1_epochs,
              f"an integer in [0, epochs) = [0, {self.epochs})")


def l1_coefficient(cfg: L1SparseConfig, epoch: int) -> float:
    """α_e for the 1-based ``epoch`` of the shared loop (the authors count from 0)."""
    e, span = epoch - 1, cfg.epochs - cfg.no_l1_epochs
    return cfg.alpha * (1 - e / span) if e < span else 0.0


def l1_norm(model: nn.Module) -> torch.Tensor:
    """‖θ‖₁ over every parameter entry."""
    return sum(p.abs().sum() for p in model.parameters())


@register("l1_sparse", L1SparseConfig)
def l1_sparse(model: nn.Module, data: UnlearnData, cfg: L1SparseConfig, *, seed: int,
              on_epoch=None) -> MethodResult:
    gen = seeded(seed)
    current = {"alpha": 0.0}

    def batches(epoch: int):
        current["alpha"] = l1_coefficient(cfg, epoch)
        return minibatches(data.retain, cfg.batch_size, gen)

    def loss(m: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        ce = F.cross_entropy(m(x), y)
        return ce + current["alpha"] * l1_norm(m) if current["alpha"] > 0 else ce

    def record_alpha(m: nn.Module, record: dict) -> None:
        record["l1_alpha"] = current["alpha"]
        if on_epoch is not None:
            on_epoch(m, record)

    spec = LoopSpec(batches=batches, loss=loss, lr=cfg.lr, max_epochs=cfg.epochs, momentum=cfg.momentum,
                    weight_decay=cfg.weight_decay, monitor_split=data.forget, on_epoch=record_alpha)
    trace = run_loop(model, spec)
    with torch.no_grad():
        trace.extras["l1_norm"] = float(l1_norm(model))
    return MethodResult(model, trace)
