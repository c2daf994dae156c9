"""Run any command and report its wall time and the peak RSS of its whole process tree.

    python bench/run_measured.py -- python pipelines/benchmark.py --preset default

Last line: ``wall_s=<seconds> peak_rss_mb=<MiB of the command plus every process it started>``.
Used for the closing-note figures of a preset's wall time and memory.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _memory import TreePeak  # noqa: E402


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv = argv[argv.index("--") + 1:]
    if not argv:
        print("usage: python bench/run_measured.py -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv)
    with TreePeak(proc.pid) as peak:
        code = proc.wait()
    print(f"exit={code}\nwall_s={time.perf_counter() - t0:.1f} peak_rss_mb={peak.mb:.0f}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
