"""Peak resident memory of a process *tree* (a driver plus the Ray processes it started), sampled.

Ray's GCS, raylet and workers are descendants of a driver that starts a local instance, so summing the
RSS of the whole tree every ``interval`` seconds gives the memory the benchmark really holds.  Shared
pages (torch libraries mapped by every worker) are counted once per process, as ``top`` would.
"""

from __future__ import annotations

import threading

import psutil

__all__ = ["TreePeak"]


class TreePeak:
    """``with TreePeak(pid) as peak: ...`` then ``peak.mb`` — the largest summed RSS seen, in MiB."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.root, self.interval, self.mb = psutil.Process(pid), interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> float:
        total = 0
        for p in [self.root, *self.root.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:  # the process ended between listing and reading
                pass
        return total / 2 ** 20

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.mb = max(self.mb, self.sample())
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
