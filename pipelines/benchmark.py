"""Run the SRAGU unlearning benchmark on Ray: train → forget sets → gold retrain → unlearn → evaluate.

    python pipelines/benchmark.py --preset smoke                      # starts a local Ray
    python pipelines/benchmark.py --preset default --smoke            # the default grid's smoke variant
    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env infra/runtime_env.yaml -- \\
        python pipelines/benchmark.py --preset default --out /data/sragu-runs --store s3://bucket/sragu
    python pipelines/benchmark.py --preset default --set seeds=[0,1] --set sragu.tau=2.0 --store s3://bucket/sragu

Prints a short header (grid, outputs, Ray) and saves the resolved config, code and package versions to
``<run>/config.json`` and MLflow; results go to the store (one Parquet per cell plus a consolidated table),
MLflow (``MLFLOW_TRACKING_URI`` or ``<out>/mlflow.db``) and ``<out>/<run>/report``.
Bad presets, keys, values, data folders, S3 endpoints or tracking servers are one ``error:`` line and
exit code 2 before any work starts; exit code 1 means some cells failed (they are in the table).
Under ``ray job submit --working-dir`` the driver runs in Ray's temporary copy of that folder: ``--out`` must be
absolute and ``--store`` absolute or ``s3://`` (a relative one is refused before any work).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.cli import (  # noqa: E402  (first: sets thread defaults; standard library only)
    DEFAULT_PRESET,
    ArgumentParser,
    check_job_paths,
    out_folder,
    preset_note,
    run_cli,
)
from components.listing import LISTINGS, dry_run, grid_size, listing, preset_names  # noqa: E402  (stdlib only)

DISCOVER = """discover:
  --list methods|regimes|metrics|presets|keys   what --preset, --set methods=, regimes= and KEY= take
  --dry-run                                     the grid, cells cached and to run, where outputs go; runs nothing"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, parsed before torch, Ray or MLflow load (``--help`` answers in a fraction of a second)."""
    ap = ArgumentParser(__doc__, DISCOVER)
    ap.add_argument("--preset", default=None, help=f"one of {', '.join(preset_names()) or '--list presets'} "
                    f"(default: {DEFAULT_PRESET}, several minutes; --list presets says what each runs)")
    ap.add_argument("--smoke", action="store_true", help="the preset's smoke variant: same grid shape, one seed, "
                    "a few hundred training points, a few training epochs")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. seeds=[0,1] or sragu.tau=2.0 (repeatable; --list keys)")
    ap.add_argument("--out", default="runs", help="local folder for run folders and the default MLflow db "
                    "(absolute under ray job submit)")
    ap.add_argument("--tuned", default=None, metavar="FILE", help="a tuned-config file from pipelines/tune.py: "
                    "its configs are frozen and only seeds other than its tuning seed are evaluated")
    ap.add_argument("--store", default=None, help="artifact store: a folder or s3://bucket/prefix "
                    "(default: <out>/store)")
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--list", choices=LISTINGS, default=None, help="print what the registries hold and exit")
    what.add_argument("--dry-run", action="store_true", help="print the planned grid and exit: no Ray, no file")
    return ap.parse_args(argv)


def _run(args: argparse.Namespace) -> int:
    from components.config import parse_overrides
    from components.presets import resolve

    preset = args.preset or DEFAULT_PRESET
    if args.list:
        print(listing(args.list, preset=preset, smoke=args.smoke, overrides=parse_overrides(args.overrides)))
        return 0
    check_job_paths(args.out, args.store)
    out = out_folder(args.out)
    resolved = resolve(preset, parse_overrides(args.overrides), smoke=args.smoke)
    tuned = None
    if args.tuned:
        from components.execution.tuned_file import apply_tuned, load_tuned

        tuned = load_tuned(args.tuned)
        resolved = apply_tuned(resolved, tuned)
    store_uri = args.store or str(out / "store")
    if args.dry_run:
        print(dry_run(resolved, out=out, store_uri=store_uri, preset_given=args.preset is not None))
        return 0
    from components.execution.benchmark_run import run_benchmark
    from components.execution.preflight import preflight

    prepared = preflight(resolved, store_uri=store_uri, out=out)
    if note := preset_note(args.preset, f"{grid_size(resolved.bench)} cells, minutes; --dry-run lists them"):
        print(note, flush=True)
    code, _ = run_benchmark(prepared, tuned=tuned)
    return code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
