"""Run the SRAGU unlearning benchmark on Ray: train → forget sets → gold retrain → unlearn → evaluate.

    python pipelines/benchmark.py --preset smoke                      # starts a local Ray
    python pipelines/benchmark.py --preset default --smoke            # the default grid's smoke variant
    ray job submit --address http://HEAD:8265 --working-dir . -- python pipelines/benchmark.py --preset default
    python pipelines/benchmark.py --preset default --set seeds=[0,1] --set sragu.tau=2.0 --store s3://bucket/sragu

Prints and saves the resolved config first; results go to the store (one Parquet per cell plus a
consolidated table), MLflow (``MLFLOW_TRACKING_URI`` or ``<out>/mlflow.db``) and ``<out>/<run>/report``.
Bad presets, keys, values, data folders, S3 endpoints or tracking servers are one ``error:`` line and
exit code 2 before any work starts; exit code 1 means some cells failed (they are in the table).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.cli import ArgumentParser, out_folder, run_cli  # noqa: E402  (first: sets thread defaults)
from components.config import parse_overrides  # noqa: E402
from components.execution.benchmark_run import run_benchmark  # noqa: E402
from components.execution.preflight import preflight  # noqa: E402
from components.execution.tuned_file import apply_tuned, load_tuned  # noqa: E402
from components.presets import PRESETS, resolve  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = ArgumentParser(__doc__)
    ap.add_argument("--preset", default="default", help=f"one of {sorted(PRESETS)}")
    ap.add_argument("--smoke", action="store_true", help="the preset's smoke variant: same grid shape, one seed, "
                    "a few hundred training points, one training epoch")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. seeds=[0,1] or sragu.tau=2.0 (repeatable)")
    ap.add_argument("--out", default="runs", help="local folder for run folders and the default MLflow db")
    ap.add_argument("--tuned", default=None, metavar="FILE", help="a tuned-config file from pipelines/tune.py: "
                    "its configs are frozen and only seeds other than its tuning seed are evaluated")
    ap.add_argument("--store", default=None, help="artifact store: a folder or s3://bucket/prefix "
                    "(default: <out>/store)")
    return ap.parse_args(argv)


def _run(args: argparse.Namespace) -> int:
    out = out_folder(args.out)
    resolved = resolve(args.preset, parse_overrides(args.overrides), smoke=args.smoke)
    tuned = None
    if args.tuned:
        tuned = load_tuned(args.tuned)
        resolved = apply_tuned(resolved, tuned)
    prepared = preflight(resolved, store_uri=args.store or str(out / "store"), out=out)
    code, _ = run_benchmark(prepared, tuned=tuned)
    return code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
