"""In-memory dataset containers shared by every layer.

Images are float32 tensors scaled to [0, 1] with shape (N, C, H, W); tabular inputs are (N, D).
Labels are int64 class indices in [0, num_classes).  Loading from disk lives in
``components.io.datasets``; this module only holds tensors, so ``sragu_core`` stays pure.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Split", "DatasetSplits", "UnlearnData"]


@dataclass(frozen=True)
class Split:
    """One split: inputs ``x`` (N, ...) float32 and labels ``y`` (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self):
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"split has {self.x.shape[0]} inputs but {self.y.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx: torch.Tensor) -> Split:
        """Rows ``idx`` (a 1-D int64 index tensor) of this split."""
        return Split(self.x[idx], self.y[idx])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset already divided into train / validation / test, deterministically per seed."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


@dataclass(frozen=True)
class UnlearnData:
    """What an unlearning method may touch: D_f, D_r (= train minus D_f) and D_val.

    The test split and the gold model are deliberately absent: no method, stopping rule or tuner may
    look at them (docs/design.md §4).
    """

    forget: Split
    retain: Split
    val: Split
    num_classes: int

    def to(self, device: torch.device | str) -> UnlearnData:
        return UnlearnData(self.forget.to(device), self.retain.to(device), self.val.to(device), self.num_classes)
