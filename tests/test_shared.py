"""Shared grid values (components/execution/shared.py): deserialized once per worker process, not once per task,
and safe to share because no task changes them in place.

The first tests use a real local Ray instance with one CPU (one worker process runs every task), under the
session's private ``RAY_TMPDIR``; the last runs every registered method through the pipeline's own tasks (no
Ray: they are plain functions) and checks the dataset is unchanged afterwards.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import hashlib
from pathlib import Path

import pytest
import ray
import torch

from components.config import BenchmarkConfig, DataConfig, EpochsConfig, resolve_config
from components.execution.compute import load_splits
from components.execution.plan import plan_cells
from components.execution.shared import CACHE_SIZE, Shared, cache_info, resolve, resolving
from components.execution.tasks import cell_task, forget_task, gold_task, original_task
from components.io.store import Store
from sragu_core.methods import METHODS
from sragu_core.models import ModelConfig

torch.set_num_threads(1)
HERE = Path(__file__).resolve().parent  # the workers import this module's task functions from here


@pytest.fixture(scope="module")
def one_cpu_ray():
    ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
                 [str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")])}})
    try:
        yield
    finally:
        ray.shutdown()


def _sum(x, scale=1.0):
    return float(x["w"].sum()) * scale


def _report(x, scale=1.0):
    """What a task sees: the value's sum, its process and its cache."""
    return {"sum": _sum(x, scale), "pid": os.getpid(), **cache_info()}


def test_a_shared_value_is_deserialized_once_per_worker_not_once_per_task(one_cpu_ray):
    value = {"w": torch.arange(100_000, dtype=torch.float32)}
    shared = Shared(ray.put(value))
    task = ray.remote(resolving(_report)).options(num_cpus=1)
    out = ray.get([task.remote(shared, scale=float(i)) for i in range(12)])
    assert [o["sum"] for o in out] == [float(value["w"].sum()) * i for i in range(12)]
    by_pid = {}
    for o in out:
        by_pid.setdefault(o["pid"], []).append(o)
    for seen in by_pid.values():  # per worker process: one fetch, then the cache
        last = seen[-1]
        assert last["misses"] == 1
        assert last["hits"] == len(seen) - 1
    # keyword arguments are resolved too, and plain values pass through untouched
    assert ray.get(task.remote(x=shared, scale=2.0))["sum"] == float(value["w"].sum()) * 2
    assert ray.get(ray.remote(resolving(_sum)).remote({"w": torch.ones(3)})) == 3.0


def _eviction():
    refs = [Shared(ray.put({"w": torch.full((4,), float(i))})) for i in range(CACHE_SIZE + 2)]
    before = cache_info()
    got = [float(resolve(r)["w"][0]) for r in refs]
    full = cache_info()
    resolve(refs[-1])  # the most recent: still held
    resolve(refs[0])  # the oldest: evicted, fetched again
    after = cache_info()
    return got, before, full, after


def test_the_cache_keeps_the_most_recently_used_values_only(one_cpu_ray):
    got, before, full, after = ray.get(ray.remote(_eviction).remote())
    assert got == [float(i) for i in range(CACHE_SIZE + 2)]
    assert full["size"] == CACHE_SIZE
    assert full["misses"] - before["misses"] == CACHE_SIZE + 2
    assert after["hits"] - full["hits"] == 1
    assert after["misses"] - full["misses"] == 1


def test_resolving_keeps_the_task_name():
    wrapped = resolving(cell_task)
    assert (wrapped.__name__, wrapped.__qualname__, wrapped.__module__) == (
        cell_task.__name__, cell_task.__qualname__, cell_task.__module__)


def _digest(ds) -> str:
    h = hashlib.sha256()
    for split in (ds.train, ds.val, ds.test):
        for t in (split.x, split.y):
            h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def test_no_registered_method_changes_the_dataset_in_place(tmp_path):
    """A worker keeps the dataset between tasks, so a task that wrote into it would change every later cell on
    that worker.  Every registered method, its gold and its original run here on one dataset object, whose
    bytes are compared before and after."""
    bench = BenchmarkConfig(name="shared", datasets=("digits",), models=("mlp",), seeds=(0,),
                            regimes=("random:0.1",), methods=tuple(sorted(METHODS)),
                            data=DataConfig(max_train=200), epochs=EpochsConfig(mlp=2),
                            model=ModelConfig(mlp_hidden=(16,)), device="cpu")
    resolved = resolve_config(bench, {})
    store = Store(str(tmp_path / "store"))
    ds = load_splits("digits", resolved.bench)
    before = _digest(ds)
    rows = []
    for c in plan_cells(resolved):
        o = original_task(store, c.original, ds, resolved.bench)
        f = forget_task(store, c.forget_set, ds, resolved.bench, o if c.forget_set.original is not None else None)
        g = gold_task(store, c.gold, ds, resolved.bench, o, f)
        rows.append(cell_task(store, c, ds, resolved.bench, o, f, g, {})["row"])
        assert _digest(ds) == before, f"{c.method} changed the dataset in place"
    assert sorted(r["method"] for r in rows) == sorted(METHODS)
    assert all(r["status"] == "ok" for r in rows), [(r["method"], r.get("error")) for r in rows]
