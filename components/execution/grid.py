"""Fans the benchmark grid out on Ray: a DAG of tasks chained through object refs (docs/design.md §7).

Per (dataset): one ``ray.put`` of the data, deserialized once per worker process (:mod:`.shared`).  Per
(dataset, model, seed): one original (and, with ``shadow.n``, one task training the shadow originals).  Per
forget set: one selection task (adversarial regimes consume the original's ref), one gold retrain and, with
``gold.k``, one task training the reference ensemble.  Per cell: one task that runs the method and scores it
against its gold.  Upstream tasks are created lazily the first time a cell needs them and dropped when the last
cell consuming them is done; at most
``ray.max_in_flight`` cells are in flight (by default twice what the cluster's CPUs run at once: sized from
the cluster, :func:`in_flight_limit`), and results are handled in completion order (``ray.wait``), every ready
one in one pass.  Application errors are retried ``ray.max_retries`` times; a cell
that still fails comes back as a ``status="failed"`` row carrying its error.

Where it runs (:func:`init_ray`): the cluster ``ray.address`` or RAY_ADDRESS names, checked first (form,
a 3 s TCP probe: :func:`ray_address`, also run by preflight); otherwise a local instance of the run's own,
on 127.0.0.1 only, never a cluster an earlier ``ray start`` recorded under Ray's temp dir.  While the grid
runs, the progress display (:mod:`components.execution.progress`) counts the upstream tasks as they finish (a
look each tick, never a wait) and its "running" follows the cluster's alive CPUs; when no cell finishes for
``ray.stall_timeout_s`` seconds the cells left become failed ``stalled: ...`` rows (:func:`run_grid`).
"""

from __future__ import annotations

import collections
import os
import socket
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import ray

from sragu_core.errors import ConfigError

from ..config import RayConfig, Resolved, TaskResources
from ..io.store import Store
from .plan import Cell
from .progress import STAGES, Progress
from .shared import Shared, resolving
from .tasks import cell_task, ensemble_task, forget_task, gold_task, original_task, sequence_task, shadow_task

__all__ = ["FORWARDED_ENV", "GridTasks", "Progress", "Upstream", "in_flight_limit", "init_ray", "ray_address",
           "run_grid"]

TASK_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "RAY_USAGE_STATS_ENABLED": "0"}
# What the job's runtime env may carry from the driver's environment: where the store is, never the keys to it.
# A runtime env is shown in plaintext by Ray's logs, `ray list jobs --detail` and the dashboard.  Workers of a
# local instance inherit the driver's environment (credentials included) from the processes Ray starts; the
# nodes of a cluster use their own AWS credential chain (instance role, ~/.aws/credentials with AWS_PROFILE,
# a Kubernetes Secret), see infra/README.md.
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
                 "SRAGU_DATA_DIR")
_STAGE = {attr: stage for stage, attr in STAGES.items()}  # Cell attribute → the progress stage counting it
_TICK_S = 2.0  # how often run_grid wakes up without a result: refresh the slots, check for a stall


def _reachable(address: str, field: str = "ray.address", value: str | None = None, via: str = "") -> None:
    """Check the form of ``host:port`` (or ``ray://host:port``) and probe it over TCP for 3 s: ray.init would
    retry for minutes.  ``field``/``value``: what the error names (the key the user set, and what they typed);
    ``via``: where ``address`` came from when it is not what they typed."""
    value = address if value is None else value
    scheme, _, hostport = address.rpartition("://")
    host, _, port = hostport.rstrip("/").rpartition(":")
    host = host.strip("[]")
    if scheme not in ("", "ray") or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(field, value, "host:port, ray://host:port, auto or local")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        where = "" if value == address else f"{address}{via}: "
        raise ConfigError(field, value, f"a reachable Ray cluster ({where}{e.strerror or e})") from None


def ray_address(resolved: Resolved) -> str | None:
    """The cluster this run joins, checked (form, and a 3 s TCP probe); None: start a local instance.

    ``ray.address`` wins, else RAY_ADDRESS (``ray job submit`` sets it); neither, or ``local``, means a local
    instance of this run's own, never the cluster some earlier ``ray start`` recorded.  ``auto`` means that
    recorded cluster (``ray_current_cluster`` under Ray's temp dir, ``$RAY_TMPDIR/ray`` or ``/tmp/ray``), or
    RAY_ADDRESS when set.  Each problem is one ConfigError, in seconds; ``ray.num_cpus`` only sizes a local
    instance, so setting it together with a cluster is one too.
    """
    cfg = resolved.bench.ray
    field, address = "ray.address", cfg.address
    if address is None and os.environ.get("RAY_ADDRESS", "").strip():
        field, address = "RAY_ADDRESS", os.environ["RAY_ADDRESS"].strip()
    if address in (None, "local"):
        return None
    if cfg.num_cpus is not None:
        raise ConfigError("ray.num_cpus", cfg.num_cpus, f"null when joining a cluster ({field}={address}): the "
                                                        "cluster's nodes bring their own CPUs")
    if address != "auto":
        _reachable(address, field)
        return address
    recorded, via = os.environ.get("RAY_ADDRESS", "").strip(), " from RAY_ADDRESS"
    if recorded in ("", "auto", "local"):
        from ray._common.utils import get_ray_address_file
        from ray._private.services import find_bootstrap_address

        recorded = find_bootstrap_address(None)  # what `ray start` last recorded under the temp dir
        via = f" recorded in {get_ray_address_file(None)}"
        if not recorded:
            raise ConfigError(field, address, f"a running cluster: none is{via} (start one with `ray start --head`, "
                                              "or give host:port)")
    _reachable(recorded, field, address, via)
    return recorded


@contextmanager
def _loopback_node():
    """While a local instance starts: let its node IP be 127.0.0.1.  Ray turns a loopback ``_node_ip_address``
    into the machine's routable IP (and its servers bind to the node IP) unless multi-node clusters are off,
    as on macOS and Windows; ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` does that, but only when set before Ray
    is imported, so the constant it sets is switched here for the duration of ``ray.init``."""
    from ray._private import ray_constants

    old = getattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old


def _cpus() -> float:
    """The CPUs of the cluster's alive nodes now (Ray's view; a lost node no longer counts)."""
    return float(ray.cluster_resources().get("CPU", 0.0))


def init_ray(resolved: Resolved) -> str:
    """Join the cluster (:func:`ray_address`) or start a local instance on 127.0.0.1.  Returns a label:
    ``cluster <address> (<n> CPUs)`` or ``local (<n> CPUs, 127.0.0.1, session <session dir>)``."""
    cfg = resolved.bench.ray
    env = dict(TASK_ENV)
    env.update({k: os.environ[k] for k in FORWARDED_ENV if k in os.environ})
    address = ray_address(resolved)
    if address:
        # inside `ray job submit` the job already has a runtime env (working_dir, excludes); merge ours into
        # it rather than refuse (Ray's documented switch; our env vars win on a clash)
        os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            field, value = ("ray.address", cfg.address) if cfg.address else ("RAY_ADDRESS", address)
            raise ConfigError(field, value, f"a reachable Ray cluster ({first})") from None
        return f"cluster {address} ({_cpus():g} CPUs)"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    with _loopback_node():
        # address="local": a new instance even when `ray start` recorded a cluster under the same temp dir
        ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 runtime_env={"env_vars": env}, log_to_driver=False)
    node = ray._private.worker.global_worker.node
    return f"local ({_cpus():g} CPUs, {node.node_ip_address}, session {node.get_session_dir_path()})"


def _opts(res: TaskResources, retries: int) -> dict:
    o = {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus, "max_retries": retries, "retry_exceptions": True}
    if res.memory_mb:
        o["memory"] = res.memory_mb * 2 ** 20
    return o


def _error(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e
    msg = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {msg[-1] if msg else ''}"[:2000]


@dataclass(frozen=True)
class GridTasks:
    """The functions the grid runs as Ray tasks (components/execution/tasks.py).  ``bench/scale.py`` swaps in
    stand-ins of the same signatures to measure the driver alone; nothing else should."""

    original: Callable = original_task
    forget: Callable = forget_task
    gold: Callable = gold_task
    ensemble: Callable = ensemble_task
    shadow: Callable = shadow_task
    sequence: Callable = sequence_task
    cell: Callable = cell_task


def _upstream_keys(c: Cell) -> list[str]:
    """The upstream artifacts cell ``c`` consumes (their keys)."""
    return [s.key for s in (c.original, c.forget_set, c.gold, c.ensemble, c.shadow, c.sequence) if s is not None]


class Upstream:
    """Lazily created, shared refs to the originals, forget sets and golds that cells depend on.

    Each ref is dropped once the last cell that consumes it has finished (:meth:`release`), so Ray can free the
    object: the object store holds what the cells in flight and queued next need, not the whole grid's models."""

    def __init__(self, resolved: Resolved, store: Store, datasets: dict, cells: list[Cell],
                 tasks: GridTasks | None = None):
        cfg = resolved.bench.ray
        opts = _opts(cfg.train, cfg.max_retries)
        tasks = tasks or GridTasks()
        self._original = ray.remote(resolving(tasks.original)).options(**opts)
        self._forget = ray.remote(resolving(tasks.forget)).options(**opts)
        self._gold = ray.remote(resolving(tasks.gold)).options(**opts)
        self._ensemble = ray.remote(resolving(tasks.ensemble)).options(**opts)
        self._shadow = ray.remote(resolving(tasks.shadow)).options(**opts)
        self._sequence = ray.remote(resolving(tasks.sequence)).options(**opts)
        self.store = store
        # deserialized once per worker process, not once per task (shared.py)
        self.bench = Shared(ray.put(resolved.bench))
        self.datasets = {n: Shared(ray.put(ds)) for n, ds in datasets.items() if any(c.dataset == n for c in cells)}
        self._refs: dict[str, ray.ObjectRef] = {}
        self._pending: dict[ray.ObjectRef, tuple[str, str]] = {}  # submitted, not seen finished: (stage, key)
        self._uses: dict[str, int] = {}  # cells not yet finished that consume each upstream artifact
        for c in cells:
            for key in _upstream_keys(c):
                self._uses[key] = self._uses.get(key, 0) + 1

    def release(self, c: Cell) -> None:
        """Cell ``c`` is done (ok or failed): drop the refs no unfinished cell needs any more."""
        for key in _upstream_keys(c):
            left = self._uses.get(key, 1) - 1
            self._uses[key] = left
            if left <= 0:
                self._refs.pop(key, None)

    @property
    def held(self) -> int:
        """Upstream refs held right now."""
        return len(self._refs)

    def _once(self, attr: str, key: str, submit: Callable[[], ray.ObjectRef]) -> ray.ObjectRef:
        """The ref of artifact ``key`` (the Cell attribute ``attr`` names its progress stage), calling ``submit()``
        (a ``.remote(...)``) only the first time it is asked for."""
        ref = self._refs.get(key)
        if ref is None:
            ref = self._refs[key] = submit()
            self._pending[ref] = (_STAGE[attr], key)
        return ref

    def finished(self, timeout: float = 0.0) -> list[tuple[str, str]]:
        """``(stage, key)`` of the upstream tasks finished (ok or failed) since the last call.  Waits at most
        ``timeout`` seconds for all of them (0: only looks); the objects stay where they are."""
        if not self._pending:
            return []
        ready, _ = ray.wait(list(self._pending), num_returns=len(self._pending), timeout=timeout, fetch_local=False)
        return [self._pending.pop(r) for r in ready]

    def __call__(self, c: Cell) -> tuple:
        """(dataset, original, forget set, gold) refs for cell ``c``, submitting what is missing."""
        ds = self.datasets[c.dataset]
        o = self._once("original", c.original.key,
                       lambda: self._original.remote(self.store, c.original, ds, self.bench))
        scored_by = o if c.forget_set.original is not None else None  # regimes that score with θ0
        f = self._once("forget_set", c.forget_set.key,
                       lambda: self._forget.remote(self.store, c.forget_set, ds, self.bench, scored_by))
        g = self._once("gold", c.gold.key, lambda: self._gold.remote(self.store, c.gold, ds, self.bench, o, f))
        return ds, o, f, g

    def references(self, c: Cell) -> tuple:
        """(gold ensemble, shadow originals, per-request retrains) refs for cell ``c`` (None where ``gold.k`` /
        ``shadow.n`` is 0, or the regime is one request)."""
        ds, f = self.datasets[c.dataset], self._refs[c.forget_set.key]
        e = s = q = None
        if c.sequence is not None:
            q = self._once("sequence", c.sequence.key,
                           lambda: self._sequence.remote(self.store, c.sequence, ds, self.bench, f))
        if c.ensemble is not None:
            e = self._once("ensemble", c.ensemble.key,
                           lambda: self._ensemble.remote(self.store, c.ensemble, ds, self.bench, f))
        if c.shadow is not None:
            s = self._once("shadow", c.shadow.key, lambda: self._shadow.remote(self.store, c.shadow, ds, self.bench))
        return e, s, q


def in_flight_limit(cfg: RayConfig, slots: int) -> int:
    """Cells submitted at once: ``ray.max_in_flight``, or (null) twice the cells the cluster can run at once, at
    least 16, so every slot has a cell waiting without the driver queueing the whole grid in Ray."""
    return cfg.max_in_flight if cfg.max_in_flight is not None else max(16, 2 * slots)


def run_grid(resolved: Resolved, cells: list[Cell], store: Store, datasets: dict,
             extra: Callable[[Cell], dict], on_result: Callable[[Cell, dict], None],
             progress: Progress, tasks: GridTasks | None = None) -> int:
    """Run ``cells`` on the connected Ray cluster; calls ``on_result(cell, result)`` as each finishes, and
    keeps ``progress`` (cells and the upstream stages) current.  Returns how many cells failed.  The results
    go to ``on_result`` only: the grid keeps no row (at 100,000 cells that was about 400 MB of the driver).

    ``extra(cell)`` gives columns the driver adds to that cell's row (code version, tuning marks).  When no
    cell finishes (ok or failed) for ``ray.stall_timeout_s`` seconds (0: wait forever), say a cluster that
    lost its nodes, the run stops waiting: the cells in flight are cancelled, one ``stalled: ...`` line is
    printed, and every cell not finished comes back as a failed row with that error (``on_result`` is called
    for each), so the caller reports what finished and exits 1.
    """
    cfg = resolved.bench.ray
    r_cell = ray.remote(resolving((tasks or GridTasks()).cell)).options(**_opts(cfg.cell, cfg.max_retries))
    upstream = Upstream(resolved, store, datasets, cells, tasks)
    progress.expect(cells)
    progress.begin()
    progress.slots = _slots(cfg.cell.num_cpus, progress.slots)
    queue = collections.deque(cells)
    inflight: dict[ray.ObjectRef, Cell] = {}
    failed = 0
    stall = cfg.stall_timeout_s
    last = checked = time.monotonic()  # when a cell last finished (or the grid started); the slots last read
    while queue or inflight:
        limit = in_flight_limit(cfg, progress.slots)
        while queue and len(inflight) < limit:
            c = queue.popleft()
            ds, o, f, g = upstream(c)
            e, s, q = upstream.references(c)
            inflight[r_cell.remote(store, c, ds, upstream.bench, o, f, g, extra(c), e, s, q)] = c
        progress.in_flight = len(inflight)
        timeout = _TICK_S if not stall else max(0.0, min(_TICK_S, last + stall - time.monotonic()))
        done, rest = ray.wait(list(inflight), num_returns=1, timeout=timeout)
        if done and rest:  # every other cell that is ready too: one pass of the loop for all of them
            done += ray.wait(rest, num_returns=len(rest), timeout=0, fetch_local=False)[0]
        for stage, key in upstream.finished():  # a look, not a wait: the cells' wait above sets the pace
            progress.stage_done(stage, key)
        # the cluster's CPUs: a GCS call (~2 ms), so once a tick, not once a result
        slots = progress.slots
        if not done or time.monotonic() - checked >= _TICK_S:
            slots, checked = _slots(cfg.cell.num_cpus, progress.slots), time.monotonic()
        if slots != progress.slots:  # a node joined or was lost: the status line says so, in a log too
            progress.slots = slots
            if not done:
                progress.show(force=True)
        if not done:
            if stall and time.monotonic() - last >= stall:
                failed += _stalled(cfg, inflight, queue, extra, on_result, progress)
                break
            progress.show()  # elapsed and stage counts (off a terminal: only when a line is due)
            continue
        for ref in done:
            c = inflight.pop(ref)
            try:
                result = ray.get(ref)
                progress.done += 1
            except Exception as e:  # noqa: BLE001 — recorded as a failed cell; the grid goes on
                result = _failed(c, extra, _error(e))
                progress.failed += 1
            failed += result["row"]["status"] != "ok"
            upstream.release(c)
            progress.in_flight = len(inflight)
            on_result(c, result)
            progress.show()
        last = time.monotonic()
    else:  # every cell finished, so every task it consumed did: collect the last of them (no waiting, in practice)
        for stage, key in upstream.finished(timeout=_TICK_S):
            progress.stage_done(stage, key)
    return failed


def _slots(cell_cpus: float, current: int) -> int:
    """Cells that can run at once on the cluster's alive nodes; ``current`` when Ray cannot say right now."""
    try:
        return int(_cpus() // cell_cpus)
    except Exception:  # noqa: BLE001 — a status-line nicety; a GCS hiccup must not end the run
        return current


def _failed(c: Cell, extra: Callable[[Cell], dict], error: str) -> dict:
    return {"row": {**c.coords(), **extra(c), "status": "failed", "error": error}, "alpha_omega": None,
            "epoch_trace": []}


def _stalled(cfg: RayConfig, inflight: dict, queue: list[Cell], extra: Callable[[Cell], dict],
             on_result: Callable[[Cell, dict], None], progress: Progress) -> int:
    """Give up on the cells left: cancel those in flight, print one line, hand each to ``on_result`` as a failed
    row; returns how many."""
    for ref in inflight:
        try:
            ray.cancel(ref, force=True)
        except Exception:  # noqa: BLE001, S110 — best effort: the driver's shutdown ends its tasks anyway
            pass
    try:
        cpus = f"{_cpus():g}"
    except Exception:  # noqa: BLE001
        cpus = "unknown"
    left = [*inflight.values(), *queue]
    inflight.clear()
    queue.clear()
    why = (f"stalled: no cell finished in {cfg.stall_timeout_s:g} s (ray.stall_timeout_s={cfg.stall_timeout_s:g}); "
           f"the cluster has {cpus} CPUs, a cell needs {cfg.cell.num_cpus:g}")
    progress.note(f"{why}; {len(left)} cell{'s' if len(left) != 1 else ''} not run")
    progress.in_flight = 0
    for c in left:
        progress.failed += 1
        on_result(c, _failed(c, extra, why))
    progress.show()
    return len(left)
