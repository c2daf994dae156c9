"""Fans the benchmark grid out on Ray: a DAG of tasks chained through object refs (SPEC §7).

Per (dataset): one ``ray.put`` of the data.  Per (dataset, model, seed): one original.  Per forget set:
one selection task (adversarial regimes consume the original's ref) and one gold retrain.  Per cell:
one task that runs the method and scores it against its gold.  Upstream tasks are created lazily the
first time a cell needs them, at most ``ray.max_in_flight`` cells are in flight, and results are handled
in completion order (``ray.wait``).  Application errors are retried ``ray.max_retries`` times; a cell
that still fails comes back as a ``status="failed"`` row carrying its error.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import ray

from .plan import Cell
from .presets import Resolved, TaskResources
from .steps import method_config
from .store import Store
from .tasks import cell_task, forget_task, gold_task, original_task

__all__ = ["Progress", "init_ray", "run_grid"]

TASK_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "RAY_USAGE_STATS_ENABLED": "0"}


def init_ray(resolved: Resolved) -> str:
    """Join the cluster (``ray.address``, else RAY_ADDRESS) or start a local instance.  Returns a label."""
    cfg = resolved.bench.ray
    env = dict(TASK_ENV)
    # credentials and endpoints for the store travel to the workers with the job
    env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_") or k == "SRAGU_DATA_DIR"})
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
        return f"cluster {address}"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=cfg.num_cpus, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
    return f"local ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"


@dataclass
class Progress:
    """One status line: cells done/total, in flight, failed, cached, elapsed and ETA."""

    total: int
    cached: int = 0
    done: int = 0
    failed: int = 0
    running: int = 0
    t0: float = field(default_factory=time.monotonic)
    stream: object = sys.stdout

    def line(self) -> str:
        elapsed = time.monotonic() - self.t0
        todo = self.total - self.cached
        finished = self.done + self.failed
        eta = elapsed / finished * (todo - finished) if finished else float("nan")
        fmt = lambda s: "--:--" if s != s else f"{int(s // 60):02d}:{int(s % 60):02d}"
        return (f"cells {self.cached + finished}/{self.total} | running {self.running} | failed {self.failed} | "
                f"cached {self.cached} | elapsed {fmt(elapsed)} | eta {fmt(eta)}")

    def show(self) -> None:
        print(self.line(), file=self.stream, flush=True)


def _opts(res: TaskResources, retries: int) -> dict:
    o = {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus, "max_retries": retries, "retry_exceptions": True}
    if res.memory_mb:
        o["memory"] = res.memory_mb * 2 ** 20
    return o


def _error(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e
    msg = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {msg[-1] if msg else ''}"[:2000]


def run_grid(resolved: Resolved, cells: list[Cell], store: Store, datasets: dict, extra: dict,
             on_result: Callable[[Cell, dict], None], progress: Progress) -> list[dict]:
    """Run ``cells`` on the connected Ray cluster; calls ``on_result(cell, result)`` as each finishes."""
    cfg = resolved.bench.ray
    train_opts, cell_opts = _opts(cfg.train, cfg.max_retries), _opts(cfg.cell, cfg.max_retries)
    r_original = ray.remote(original_task).options(**train_opts)
    r_forget = ray.remote(forget_task).options(**train_opts)
    r_gold = ray.remote(gold_task).options(**train_opts)
    r_cell = ray.remote(cell_task).options(**cell_opts)
    bench_ref = ray.put(resolved.bench)
    ds_refs = {name: ray.put(ds) for name, ds in datasets.items() if any(c.dataset == name for c in cells)}
    refs: dict[str, ray.ObjectRef] = {}

    def upstream(c: Cell):
        ds = ds_refs[c.dataset]
        o = refs.get(c.original.key)
        if o is None:
            o = refs[c.original.key] = r_original.remote(store, c.original, ds, bench_ref, c.model, c.seed)
        f = refs.get(c.forget_set.key)
        if f is None:
            needs_model = "original" in c.forget_set.inputs  # adversarial regimes score with θ0
            f = r_forget.remote(store, c.forget_set, ds, bench_ref, c, o if needs_model else None)
            refs[c.forget_set.key] = f
        g = refs.get(c.gold.key)
        if g is None:
            g_cfg = method_config(resolved, "retrain", c.model)
            g = refs[c.gold.key] = r_gold.remote(store, c.gold, ds, bench_ref, c, o, f, g_cfg)
        return ds, o, f, g

    queue = list(cells)
    inflight: dict[ray.ObjectRef, Cell] = {}
    rows: list[dict] = []
    while queue or inflight:
        while queue and len(inflight) < cfg.max_in_flight:
            c = queue.pop(0)
            ds, o, f, g = upstream(c)
            inflight[r_cell.remote(store, c, ds, bench_ref, o, f, g, extra)] = c
        progress.running = len(inflight)
        done, _ = ray.wait(list(inflight), num_returns=1)
        for ref in done:
            c = inflight.pop(ref)
            try:
                result = ray.get(ref)
                progress.done += 1
            except Exception as e:  # noqa: BLE001 — recorded as a failed cell; the grid goes on
                result = {"row": {**c.coords(), **extra, "status": "failed", "error": _error(e)},
                          "alpha_omega": None, "epoch_trace": []}
                progress.failed += 1
            rows.append(result["row"])
            progress.running = len(inflight)
            on_result(c, result)
            progress.show()
    return rows
