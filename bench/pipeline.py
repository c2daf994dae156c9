"""Ray fan-out scaling: the same small grid on a local Ray limited to 1 CPU, then to 2 CPUs.

Command:   python bench/pipeline.py [--cpus 1 2] [--set KEY=VALUE ...]
Runtime:   about 6 minutes here (the 1-CPU pass is the long one).
Measures:  for each CPU limit, a fresh store (nothing cached) and a fresh local Ray; the wall time of the
           fan-out itself (first task submitted → last cell scored; Ray start-up excluded, since it is
           a fixed cost) and the throughput in cells per second.  MLflow is not involved: this measures
           the Ray DAG.  The grid: mnist_5k, cnn_small (5 epochs), seeds 0 and 1, regimes random 10% and
           high-loss 10%, all seven methods = 28 cells over 2 originals, 4 forget sets and 4 golds.
           Memory: the peak summed RSS of this driver and every Ray process it started (sampled every
           0.2 s), over both passes.
Last line: ``scaling_2v1=<throughput at 2 CPUs / at 1 CPU> peak_rss_mb=<driver+workers peak>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ray  # noqa: E402
from _memory import TreePeak  # noqa: E402

from components.execution.compute import load_splits  # noqa: E402
from components.execution.grid import Progress, init_ray, run_grid  # noqa: E402
from components.execution.plan import plan_cells  # noqa: E402
from components.io.store import Store  # noqa: E402
from components.presets import resolve  # noqa: E402

GRID = {"models": "[cnn_small]", "epochs.cnn_small": "5", "seeds": "[0,1]",
        "regimes": "[random:0.1,high_loss:0.1]", "data.max_train": "null"}


def one_pass(cpus: int, extra: dict[str, str]) -> tuple[int, float]:
    resolved = resolve("smoke", {**GRID, **extra, "ray.num_cpus": str(cpus)})
    cells = plan_cells(resolved)
    datasets = {d: load_splits(d, resolved.bench) for d in resolved.bench.datasets}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp)
        init_ray(resolved)
        try:
            progress = Progress(total=len(cells), stream=open(os.devnull, "w"))
            t0 = time.perf_counter()
            failed = run_grid(resolved, cells, store, datasets, lambda c: {}, lambda c, r: None, progress)
            wall = time.perf_counter() - t0
        finally:
            ray.shutdown()
    if failed:
        raise SystemExit(f"{failed} cells failed at {cpus} CPU(s)")
    return len(cells), wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpus", type=int, nargs=2, default=(1, 2), metavar=("LOW", "HIGH"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.overrides)
    results = {}
    with TreePeak(os.getpid()) as peak:
        for cpus in args.cpus:
            n, wall = one_pass(cpus, extra)
            results[cpus] = n / wall
            print(f"cpus={cpus}: {n} cells in {wall:.1f} s -> {n / wall:.3f} cells/s", flush=True)
    lo, hi = args.cpus
    print(f"scaling_{hi}v{lo}={results[hi] / results[lo]:.2f} peak_rss_mb={peak.mb:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
