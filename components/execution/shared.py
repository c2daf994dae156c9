"""Objects every task of a grid reads (a dataset, the benchmark config), deserialized once per worker process.

A ref passed straight to a task is fetched and deserialized for every task.  For a dataset of torch tensors that
is a copy of the whole dataset per task (torch storages are rebuilt from bytes; Ray's zero-copy path covers
numpy arrays only): measured with ``bench/scale.py``, half of a cell worker's CPU time went there.  The grid
wraps such refs in :class:`Shared`, which Ray passes through unresolved, and wraps each task with
:func:`resolving`, which looks the value up in a small per-process cache (:func:`resolve`) before calling the
task.  The tasks themselves still take plain values, so tests call them directly.

What the cache costs: a worker keeps the dataset it last used between tasks (:data:`CACHE_SIZE`).  What it
asks of the tasks: they must not change a shared value in place, since the next task on that worker reads the
same object (``tests/test_shared.py`` checks every registered method against this).
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Callable
from typing import Any

import ray

__all__ = ["CACHE_SIZE", "Shared", "cache_info", "resolve", "resolving"]

# values kept per worker process: the config and the dataset in use.  Cells come dataset by dataset (plan order),
# so a worker rarely switches; a dataset (CIFAR-10 as float32 is about 740 MB) is not kept once another is used
CACHE_SIZE = 2

_cache: collections.OrderedDict[str, Any] = collections.OrderedDict()
_lock = threading.Lock()
_stats = {"hits": 0, "misses": 0}


class Shared:
    """An object-store ref a task receives as is (Ray resolves only top-level ref arguments) and resolves
    through this process's cache."""

    __slots__ = ("ref",)

    def __init__(self, ref: ray.ObjectRef):
        self.ref = ref

    def __repr__(self) -> str:
        return f"Shared({self.ref.hex()[:12]})"


def resolve(value: Any) -> Any:
    """``value`` itself, or what a :class:`Shared` points at: fetched and deserialized on this process's first
    use, then kept (the :data:`CACHE_SIZE` most recently used)."""
    if not isinstance(value, Shared):
        return value
    key = value.ref.hex()
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            _stats["hits"] += 1
            return _cache[key]
    fetched = ray.get(value.ref)  # outside the lock: two threads may both fetch it once, never block each other
    with _lock:
        _stats["misses"] += 1
        _cache[key] = fetched
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return fetched


def resolving(fn: Callable) -> Callable:
    """``fn`` with every :class:`Shared` argument resolved; keeps ``fn``'s name, so Ray names the task after it."""

    @functools.wraps(fn)
    def task(*args, **kwargs):
        return fn(*(resolve(a) for a in args), **{k: resolve(v) for k, v in kwargs.items()})

    return task


def cache_info() -> dict:
    """This process's cache: entries held, hits and misses so far (what the tests read inside a task)."""
    with _lock:
        return {"size": len(_cache), **_stats}
