"""Run the SRAGU unlearning benchmark: train → forget set → gold retrain → unlearn → evaluate.

    python pipelines/benchmark.py --preset smoke
    python pipelines/benchmark.py --preset default --set seeds=[0,1] --set sragu.tau=2.0

Prints and saves the resolved config first, then a methods × metrics table (means over cells).
Bad presets, keys or values are one error line and exit code 2, before any work starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2-core BLAS oversubscription is ~100x slower (SPEC §9)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.presets import PRESETS, resolve  # noqa: E402
from components.runner import preflight, run_local, summary_table, write_run_header  # noqa: E402
from sragu_core.errors import ConfigError  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="default", help=f"one of {sorted(PRESETS)}")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. seeds=[0,1] or sragu.tau=2.0 (repeatable)")
    ap.add_argument("--out", default="runs", help="folder for run outputs (default: ./runs)")
    return ap.parse_args(argv)


def _overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError("--set", item, "KEY=VALUE, e.g. sragu.tau=2.0")
        out[key.strip()] = value.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        resolved = resolve(args.preset, _overrides(args.overrides))
        pre = preflight(resolved)
        run_dir = write_run_header(resolved, Path(args.out))
        rows = run_local(resolved, run_dir, pre)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_table(rows))
    failed = [r for r in rows if r.get("status") == "failed"]
    print(f"\n{len(rows)} cells, {len(failed)} failed; results in {run_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
