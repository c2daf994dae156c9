"""The driver at scale: a 1k- and a 10k-cell grid (100k with --100k) on a simulated multi-node Ray cluster, with
MLflow on a real ``mlflow server`` and the store on local disk and on ``moto_server`` (S3).

Command:   python bench/scale.py [--sizes 1000 10000] [--100k] [--stores local s3] [--nodes 4] [--node-cpus 4]
Runtime:   about 8 minutes here for the defaults; ``--100k`` adds about 9 minutes on the local store.
What runs: ``pipelines/benchmark.py``'s own driver (:func:`components.execution.benchmark_run.run_benchmark`:
           planning, store listing and verification, leases, the Ray fan-out, MLflow, consolidation, the report)
           with its Ray tasks swapped for stand-ins (:class:`components.execution.grid.GridTasks`), so the driver,
           not the compute, is what is measured.  The stand-in cell task builds a realistic result row — the 64
           columns and types of a smoke-preset row, values drawn from the cell key — and writes it to the store
           as ``cells/<key>.parquet``, as the real one does; the upstream stand-ins (original, forget set, gold)
           return a few bytes.  The grid: mnist_5k, mlp, 10 methods × 2 regimes × N/20 seeds.
           The cluster: ``ray.cluster_utils.Cluster`` with ``--nodes`` nodes of ``--node-cpus`` logical CPUs each
           (all on this machine: it simulates the scheduling, not the hardware).
           Each (size, store) runs in a fresh process, on a fresh store, MLflow experiment and cluster.
           MLflow logging uses the driver's default (``tracking.cells=auto``: a run per cell up to 2,000 cells,
           a run per dataset × model × regime × method above); ``--cells runs`` forces a run per cell.
Measures:  cells/min = cells / the driver's whole wall time (planning to report, MLflow drained); cells per
           driver-CPU-minute = cells / the CPU time of the driver process (all its threads) — on this 2-CPU
           machine the simulated cluster's workers and raylets share the driver's CPUs, so the wall-clock rate is
           bounded by them, and the CPU rate is what the driver itself could sustain; the driver process's
           peak RSS (``ru_maxrss``: this process only, not Ray's); the share of the wall time the driver spent
           waiting on MLflow (``<run>/driver.json``: ``mlflow_blocked_s``), and the phases.
Last line: ``cells_per_min_10k=<…> driver_rss_growth_mb_1k_to_10k=<…> logging_share=<…>
           driver_cpu_cells_per_min_10k=<…>`` (local store; rates and share at 10k cells).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, str(ROOT))
from components.local_servers import free_port, stop_process_group, wait_http  # noqa: E402

BIN = Path(sys.executable).parent
METHODS = ("retrain_indep", "original", "agu", "sragu", "sragu_permuted", "grad_ascent", "finetune",
           "neggrad_plus", "salun", "l1_sparse")
REGIMES = ("random:0.1", "high_loss:0.05")
# a smoke-preset row's columns beyond the cell's coordinates and the driver's extras, and their types
_FLOATS = ("gold_time_s", "method_time_s", "spectral_time_s", "peak_mem_mb", "forget_acc",
           "gold_forget_acc", "retain_acc", "gold_retain_acc", "test_acc", "gold_test_acc", "val_acc",
           "gold_val_acc", "kl_to_gold", "pd", "tv", "js", "kl_to_gold_test", "pd_test", "tv_test", "js_test",
           "mia_auc", "gold_mia_auc", "mia_efficacy", "gold_mia_efficacy", "mia_gap", "forget_acc_gap",
           "retain_acc_gap", "test_acc_gap", "val_acc_gap", "avg_gap", "diverged", "original_test_acc",
           "test_acc_drop", "max_layer_shift", "mean_layer_shift", "mean_alpha_drift", "rte", "eval_time_s",
           "task_time_s")
_INTS = ("forget_size", "train_size", "steps", "epochs_run", "gold_epochs_run")


# ---------------------------------------------------------------------------------------------- stand-in tasks
def stub_upstream(store, spec, *args):
    """Original, forget set, gold: a few bytes (the cells only pass them through)."""
    return {"key": spec.key}


def stub_cell(store, cell, ds, bench, original, forget, gold, extra, ensemble=None, shadow=None, sequence=None):
    """A realistic row for ``cell``, written to the store as the real cell task writes it."""
    import random

    from components.execution.tasks import cell_path

    rng = random.Random(int(hashlib.sha256(cell.key.encode()).hexdigest()[:12], 16))
    row = {**cell.coords(), "status": "ok", "forget_key": forget["key"], "original_key": original["key"],
           "gold_key": gold["key"], "gold_stop_reason": "max_iters", "nonmember_rule": "same_selection_on_test",
           **extra, "stop_reason": "max_iters", "layer_multipliers": ""}
    row.update({k: rng.random() for k in _FLOATS})
    row.update({k: rng.randrange(1, 5000) for k in _INTS})
    row["forget_fraction"] = cell.forget.fraction  # the regime's, as in a real row (the report groups by it)
    store.write_rows(cell_path(cell.key), [row])
    return {"row": row, "alpha_omega": None, "epoch_trace": []}


# ---------------------------------------------------------------------------------------------- one measured run
def child(n: int, store_uri: str, tracking_uri: str, out: Path, nodes: int, node_cpus: int, cells_mode: str) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from components.execution.benchmark_run import run_benchmark
    from components.execution.grid import GridTasks
    from components.execution.preflight import preflight
    from components.presets import resolve

    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ["PYTHONPATH"] = str(ROOT)
    per_seed = len(METHODS) * len(REGIMES)
    seeds = max(1, n // per_seed)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": node_cpus})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=node_cpus)
    try:
        resolved = resolve("smoke", {"name": f"scale{n}", "seeds": f"[{','.join(map(str, range(seeds)))}]",
                                     "methods": f"[{','.join(METHODS)}]", "regimes": f"[{','.join(REGIMES)}]",
                                     "ray.address": cluster.address, "tracking.cells": cells_mode})
        prepared = preflight(resolved, store_uri=store_uri, out=out)
        tasks = GridTasks(original=stub_upstream, forget=stub_upstream, gold=stub_upstream,
                          ensemble=stub_upstream, shadow=stub_upstream, sequence=stub_upstream, cell=stub_cell)
        t0, cpu0 = time.perf_counter(), _cpu()
        with open(os.devnull, "w") as quiet:
            saved, sys.stdout = sys.stdout, quiet
            try:
                if os.environ.get("SCALE_PROFILE"):  # where the driver's time goes (a development aid)
                    import cProfile

                    with cProfile.Profile() as prof:
                        code, run_dir = run_benchmark(prepared, tasks=tasks)
                    prof.dump_stats(os.environ["SCALE_PROFILE"])
                else:
                    code, run_dir = run_benchmark(prepared, tasks=tasks)
            finally:
                sys.stdout = saved
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
    finally:
        ray.shutdown()
        cluster.shutdown()
    stats = json.loads((run_dir / "driver.json").read_text())
    cells = seeds * per_seed
    return {"cells": cells, "exit": code, "wall_s": wall, "cells_per_min": cells / wall * 60,
            "driver_cpu_s": cpu, "driver_cpu_cells_per_min": cells / cpu * 60,
            "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "logging_share": stats["mlflow_blocked_s"] / wall, **stats}


def _cpu() -> float:
    """CPU seconds of this process (all its threads: the driver's loop, MLflow logging, consolidation)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------------------------------------- servers
def _start(args: list[str], url: str, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=env)
    wait_http(url, proc, 90)
    return proc


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--100k", dest="big", action="store_true", help="also 100,000 cells")
    ap.add_argument("--stores", nargs="+", choices=("local", "s3"), default=["local", "s3"])
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--node-cpus", type=int, default=1)
    ap.add_argument("--cells", choices=("auto", "runs", "groups"), default="auto", help="tracking.cells")
    ap.add_argument("--child", nargs=4, metavar=("N", "STORE", "TRACKING", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        n, store, tracking, out = a.child
        print("RESULT " + json.dumps(child(int(n), store, tracking, Path(out), a.nodes, a.node_cpus, a.cells)))
        return 0

    sizes = [*a.sizes, *([100_000] if a.big else [])]
    tmp = Path(tempfile.mkdtemp(prefix="sragu-scale-"))
    procs = []
    try:
        port = free_port()
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        procs.append(_start([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "2", "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
                             "--artifacts-destination", str(tmp / "mlartifacts")], f"http://127.0.0.1:{port}/health",
                            env))
        tracking = f"http://127.0.0.1:{port}"
        s3 = None
        if "s3" in a.stores:
            s3_port = free_port()
            procs.append(_start([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
                                f"http://127.0.0.1:{s3_port}"))
            s3 = f"http://127.0.0.1:{s3_port}"
        results = {}
        for store_kind in a.stores:
            for n in sizes:
                env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_TMPDIR": str(tmp / "ray")}
                if store_kind == "s3":
                    import boto3

                    bucket = f"scale-{n}-{time.time_ns() % 10**6}"
                    env.update(AWS_ENDPOINT_URL=s3, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",  # noqa: S106
                               AWS_DEFAULT_REGION="us-east-1")
                    boto3.client("s3", endpoint_url=s3, aws_access_key_id="bench", aws_secret_access_key="bench",  # noqa: S106
                                 region_name="us-east-1").create_bucket(Bucket=bucket)
                    store = f"s3://{bucket}/store"
                else:
                    store = str(tmp / f"store-{n}")
                out = tmp / f"out-{store_kind}-{n}"
                (tmp / "ray").mkdir(exist_ok=True)
                r = subprocess.run([sys.executable, __file__, "--nodes", str(a.nodes), "--node-cpus",
                                    str(a.node_cpus), "--cells", a.cells, "--child", str(n), store, tracking,
                                    str(out)], env=env, capture_output=True, text=True, timeout=3 * 3600)
                line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
                if r.returncode or line is None:
                    print(r.stdout[-3000:], r.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"{store_kind} {n}: exit {r.returncode}")
                res = json.loads(line[len("RESULT "):])
                results[(store_kind, n)] = res
                print(f"{store_kind:5} {res['cells']:>7} cells: {res['wall_s']:7.1f} s  "
                      f"{res['cells_per_min']:9.0f} cells/min  (driver CPU {res['driver_cpu_s']:.0f} s: "
                      f"{res['driver_cpu_cells_per_min']:.0f} cells per driver-CPU-min)  "
                      f"driver peak RSS {res['driver_peak_rss_mb']:6.0f} MB  "
                      f"mlflow {res['logging_share']:.1%} of the wall ({res['mlflow_mode']})  exit {res['exit']}\n"
                      f"       phases: " + "  ".join(f"{k} {v:.1f}" for k, v in res.items() if k.endswith("_s")
                                                    and v is not None and k not in ("wall_s", "mlflow_blocked_s")),
                      flush=True)
                shutil.rmtree(out, ignore_errors=True)
        kind = "local" if "local" in a.stores else a.stores[0]
        big, small = max(sizes[:2]), min(sizes[:2])
        r_big, r_small = results[(kind, big)], results[(kind, small)]
        print(f"cells_per_min_10k={r_big['cells_per_min']:.0f} "
              f"driver_rss_growth_mb_1k_to_10k={r_big['driver_peak_rss_mb'] - r_small['driver_peak_rss_mb']:.0f} "
              f"logging_share={r_big['logging_share']:.3f} "
              f"driver_cpu_cells_per_min_10k={r_big['driver_cpu_cells_per_min']:.0f}")
        return 0
    finally:
        for p in procs:
            stop_process_group(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
