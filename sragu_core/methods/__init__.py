"""Unlearning methods: one module per method, one signature, one registry (``METHODS``).

Adding a method = a new ``<name>.py`` with a frozen config and an ``@register("<name>", Config)``
function.  Every public module of this package is imported here, so that file is all it takes.
"""

import importlib
import pkgutil

from ._registry import METHODS, MethodSpec, register, run_method

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "MethodSpec", "register", "run_method"]
