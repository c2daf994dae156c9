"""Unlearning methods: one module per method, one signature, one registry (``METHODS``).

Adding a method = a new ``<name>.py`` with a frozen config and an ``@register("<name>", Config)``
function, plus one import line below.
"""

from . import agu, finetune, grad_ascent, neggrad_plus, random_label, retrain, retrain_indep, sragu  # noqa: F401
from ._registry import METHODS, MethodSpec, register, run_method

__all__ = ["METHODS", "MethodSpec", "register", "run_method"]
