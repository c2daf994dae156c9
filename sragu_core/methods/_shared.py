"""The knobs every unlearning method shares, declared once so every method searches the *same* space.

An equal-budget comparison (docs/protocol.md) tunes, for every method, only the knobs methods have in common:
a **step size** (η of the ascent family, lr of the SGD family) and an **epoch budget** (``max_iters`` or
``epochs``).  A config field takes them with ``step_size(default)`` and ``epoch_budget(default)``: the field
gets the one shared range below and ``metadata["shared"]`` names its role, which is how
``components.execution.search_space`` finds the shared space.  A method's own knobs keep their own
``metadata["search"]`` ranges and are searched only in the ablation protocol.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

__all__ = ["STEP_RANGE", "EPOCH_RANGE", "SHARED_ROLES", "step_size", "epoch_budget"]

STEP_RANGE = ("log", 1e-4, 1e-1)  # η or lr: four decades around every method's published default
EPOCH_RANGE = ("int", 1, 20)  # passes over the method's data (D_f for ascent, D_r or both for the others)
SHARED_ROLES = {"step": STEP_RANGE, "epochs": EPOCH_RANGE}


def step_size(default: float) -> Any:
    return field(default=default, metadata={"search": STEP_RANGE, "shared": "step"})


def epoch_budget(default: int) -> Any:
    return field(default=default, metadata={"search": EPOCH_RANGE, "shared": "epochs"})
