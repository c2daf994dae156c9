"""Write the benchmark report (Markdown + PNG plots) from a results table.

    python pipelines/report.py --table runs/<run>/results.parquet --out runs/<run>/report
    python pipelines/report.py --table runs/<run>/cells/ --out report --title "MNIST smoke"

``--table`` is one Parquet file or a folder whose ``*.parquet`` files are concatenated (union of columns).
Writes ``<out>/report.md`` and its plots; see ``components.report.write_report`` for the sections.
A missing or unreadable table is one error line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.cli import ArgumentParser, run_cli  # noqa: E402  (first: sets thread defaults; standard library only)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = ArgumentParser(__doc__)
    ap.add_argument("--table", required=True, help="results Parquet file, or a folder of *.parquet files")
    ap.add_argument("--out", required=True, help="folder for report.md and the plots (created if absent)")
    ap.add_argument("--title", default="SRAGU unlearning benchmark", help="report title")
    return ap.parse_args(argv)


def _run(args: argparse.Namespace) -> int:
    from components.report import read_results, write_report  # pandas and matplotlib: after --help

    table = read_results(Path(args.table))
    report = write_report(table, Path(args.out), args.title)
    print(f"{len(table)} rows -> {report}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: _run(args), also=(OSError,))


if __name__ == "__main__":
    sys.exit(main())
