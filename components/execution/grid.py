"""Fans the benchmark grid out on Ray: a DAG of tasks chained through object refs (docs/design.md §7).

Per (dataset): one ``ray.put`` of the data.  Per (dataset, model, seed): one original.  Per forget set:
one selection task (adversarial regimes consume the original's ref) and one gold retrain.  Per cell:
one task that runs the method and scores it against its gold.  Upstream tasks are created lazily the
first time a cell needs them, at most ``ray.max_in_flight`` cells are in flight, and results are handled
in completion order (``ray.wait``).  Application errors are retried ``ray.max_retries`` times; a cell
that still fails comes back as a ``status="failed"`` row carrying its error.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import ray

from sragu_core.errors import ConfigError

from ..config import Resolved, TaskResources
from ..io.store import Store
from .plan import Cell
from .tasks import cell_task, forget_task, gold_task, original_task

__all__ = ["FORWARDED_ENV", "Progress", "Upstream", "init_ray", "run_grid"]

TASK_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "RAY_USAGE_STATS_ENABLED": "0"}
# What the job's runtime env may carry from the driver's environment: where the store is, never the keys to it.
# A runtime env is shown in plaintext by Ray's logs, `ray list jobs --detail` and the dashboard.  Workers of a
# local instance inherit the driver's environment (credentials included) from the processes Ray starts; the
# nodes of a cluster use their own AWS credential chain (instance role, ~/.aws/credentials with AWS_PROFILE,
# a Kubernetes Secret), see infra/README.md.
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
                 "SRAGU_DATA_DIR")


def _reachable(address: str) -> None:
    """A quick TCP probe of ``host:port`` (or ``ray://host:port``): ray.init would retry for minutes."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError("ray.address", address, "host:port, ray://host:port, auto or local")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise ConfigError("ray.address", address, f"a reachable Ray cluster ({e.strerror or e})") from None


def init_ray(resolved: Resolved) -> str:
    """Join the cluster (``ray.address``, else RAY_ADDRESS) or start a local instance.  Returns a label."""
    cfg = resolved.bench.ray
    env = dict(TASK_ENV)
    env.update({k: os.environ[k] for k in FORWARDED_ENV if k in os.environ})
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        # inside `ray job submit` the job already has a runtime env (working_dir, excludes); merge ours into
        # it rather than refuse (Ray's documented switch; our env vars win on a clash)
        os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
        _reachable(address)
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise ConfigError("ray.address", address, f"a reachable Ray cluster ({first})") from None
        return f"cluster {address}"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=cfg.num_cpus, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
    return f"local ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"


@dataclass
class Progress:
    """One status line: cells done/total, running, queued, failed, cached, elapsed and ETA.

    ``in_flight`` cells have been submitted and not finished; of those at most ``slots`` (the cluster's
    CPUs divided by a cell's ``num_cpus``) can be running at once, the rest wait in Ray's queue.
    """

    total: int
    cached: int = 0
    done: int = 0
    failed: int = 0
    in_flight: int = 0
    slots: int = 1
    t0: float = field(default_factory=time.monotonic)
    stream: object = sys.stdout

    def line(self) -> str:
        elapsed = time.monotonic() - self.t0
        todo = self.total - self.cached
        finished = self.done + self.failed
        eta = elapsed / finished * (todo - finished) if finished else float("nan")
        fmt = lambda s: "--:--" if s != s else f"{int(s // 60):02d}:{int(s % 60):02d}"
        running = min(self.in_flight, self.slots)
        return (f"cells {self.cached + finished}/{self.total} | running {running} | queued {self.in_flight - running}"
                f" | failed {self.failed} | cached {self.cached} | elapsed {fmt(elapsed)} | eta {fmt(eta)}")

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


class Upstream:
    """Lazily created, shared refs to the originals, forget sets and golds that cells depend on."""

    def __init__(self, resolved: Resolved, store: Store, datasets: dict, cells: list[Cell]):
        cfg = resolved.bench.ray
        opts = _opts(cfg.train, cfg.max_retries)
        self._original = ray.remote(original_task).options(**opts)
        self._forget = ray.remote(forget_task).options(**opts)
        self._gold = ray.remote(gold_task).options(**opts)
        self.store = store
        self.bench = ray.put(resolved.bench)
        self.datasets = {n: ray.put(ds) for n, ds in datasets.items() if any(c.dataset == n for c in cells)}
        self._refs: dict[str, ray.ObjectRef] = {}

    def __call__(self, c: Cell) -> tuple:
        """(dataset, original, forget set, gold) refs for cell ``c``, submitting what is missing."""
        ds, refs = self.datasets[c.dataset], self._refs
        o = refs.get(c.original.key)
        if o is None:
            o = refs[c.original.key] = self._original.remote(self.store, c.original, ds, self.bench)
        f = refs.get(c.forget_set.key)
        if f is None:
            scored_by = o if c.forget_set.original is not None else None  # regimes that score with θ0
            f = refs[c.forget_set.key] = self._forget.remote(self.store, c.forget_set, ds, self.bench, scored_by)
        g = refs.get(c.gold.key)
        if g is None:
            g = refs[c.gold.key] = self._gold.remote(self.store, c.gold, ds, self.bench, o, f)
        return ds, o, f, g


def run_grid(resolved: Resolved, cells: list[Cell], store: Store, datasets: dict,
             extra: Callable[[Cell], dict], on_result: Callable[[Cell, dict], None],
             progress: Progress) -> list[dict]:
    """Run ``cells`` on the connected Ray cluster; calls ``on_result(cell, result)`` as each finishes.

    ``extra(cell)`` gives columns the driver adds to that cell's row (code version, tuning marks).
    """
    cfg = resolved.bench.ray
    r_cell = ray.remote(cell_task).options(**_opts(cfg.cell, cfg.max_retries))
    upstream = Upstream(resolved, store, datasets, cells)
    cpus = ray.cluster_resources().get("CPU", 1.0)
    progress.slots = max(1, int(cpus // cfg.cell.num_cpus))
    queue = list(cells)
    inflight: dict[ray.ObjectRef, Cell] = {}
    rows: list[dict] = []
    while queue or inflight:
        while queue and len(inflight) < cfg.max_in_flight:
            c = queue.pop(0)
            ds, o, f, g = upstream(c)
            inflight[r_cell.remote(store, c, ds, upstream.bench, o, f, g, extra(c))] = c
        progress.in_flight = len(inflight)
        done, _ = ray.wait(list(inflight), num_returns=1)
        for ref in done:
            c = inflight.pop(ref)
            try:
                result = ray.get(ref)
                progress.done += 1
            except Exception as e:  # noqa: BLE001 — recorded as a failed cell; the grid goes on
                result = {"row": {**c.coords(), **extra(c), "status": "failed", "error": _error(e)},
                          "alpha_omega": None, "epoch_trace": []}
                progress.failed += 1
            rows.append(result["row"])
            progress.in_flight = len(inflight)
            on_result(c, result)
            progress.show()
    return rows
