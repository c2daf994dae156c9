"""Cell runs logged to MLflow off the driver's main loop: a bounded queue, a few logging threads, and the store
as the overflow (docs/design.md §8, "Tracking at scale").

The grid hands every finished cell to :meth:`CellLogger.submit`, which never waits: the cell's job goes on a
queue of at most ``queue_size`` jobs, and when that is full only its key is kept (a few bytes), to be logged
later from the store (``rebuild(key)`` reads the stored row back into a job).  ``threads`` workers take jobs
and log each as one child run (:meth:`components.io.tracking.Tracker.log_cell`: create, one batch of params and
metrics, end).  So a slow or stalled tracking server slows nothing but the logging; the grid, the store and the
table go on at the cluster's pace, and memory stays bounded by the queue.

After the grid the driver calls :meth:`drain`, which waits up to a timeout for the queue and the overflow to
empty.  Whatever is left (a timeout, or logging stopped by an error) is counted in :attr:`pending`; those
cells are in the store, and the next run logs them (``TrackedRun`` reconciles MLflow from the store first).

The first error stops all logging for the run, as :class:`components.io.tracking.TrackedRun` does: one line is
printed, and every cell not yet logged is counted pending.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["CellJob", "CellLogger"]


@dataclass
class CellJob:
    """One cell's child run: :meth:`Tracker.log_cell`'s arguments, with the α/ω rows instead of a drawn figure (the
    figure is drawn by the logging thread, so the driver's loop never renders)."""

    cell_key: str
    run_name: str
    params: dict
    metrics: dict
    tags: dict
    status: str = "FINISHED"
    alpha_omega: list[dict] | None = None


class CellLogger:
    """Background logging of :class:`CellJob` s; see the module docstring.

    ``log(job)`` logs one job (it raises on failure); ``rebuild(key)`` makes the job of an overflowed key from
    the store (None: nothing to log); ``on_error(error)`` is called once, with the first failure."""

    def __init__(self, log: Callable[[CellJob], Any], rebuild: Callable[[str], CellJob | None], *,
                 threads: int = 4, queue_size: int = 256, on_error: Callable[[BaseException], None] | None = None):
        if threads < 1 or queue_size < 1:
            raise ValueError("threads and queue_size must be >= 1")
        self._log, self._rebuild, self._on_error = log, rebuild, on_error
        self.queue_size = queue_size
        self._jobs: collections.deque[CellJob] = collections.deque()
        self._overflow: collections.deque[str] = collections.deque()
        self._cv = threading.Condition()
        self._busy = 0  # jobs being logged right now
        self._stopping = False
        self.error: BaseException | None = None
        self.logged = 0
        self.overflowed = 0  # keys that went to the overflow (logged from the store)
        self.busy_s = 0.0  # summed over threads: time spent logging
        self.max_queued = 0
        self._threads = [threading.Thread(target=self._work, name=f"sragu-mlflow-{i}", daemon=True)
                         for i in range(threads)]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ driver side
    def submit(self, job: CellJob) -> bool:
        """Queue ``job``; never waits.  False when it went to the overflow, or logging has stopped (then it is
        pending: the next run logs it from the store)."""
        with self._cv:
            if self.error is not None or self._stopping:
                self._overflow.append(job.cell_key)
                return False
            queued = len(self._jobs) < self.queue_size
            if queued:
                self._jobs.append(job)
                self.max_queued = max(self.max_queued, len(self._jobs))
            else:  # back-pressure without waiting: keep the key, log it from the store later
                self._overflow.append(job.cell_key)
                self.overflowed += 1
            self._cv.notify()
            return queued

    def submit_key(self, key: str) -> None:
        """Log cell ``key`` from the store (``rebuild``), after the queued cells: reconciliation."""
        with self._cv:
            self._overflow.append(key)
            self._cv.notify()

    @property
    def backlog(self) -> int:
        """Cells not yet logged: queued, overflowed, or being logged."""
        with self._cv:
            return len(self._jobs) + len(self._overflow) + self._busy

    pending = backlog  # once logging has ended: the cells it did not log

    def drain(self, timeout: float | None) -> int:
        """Wait until every submitted cell is logged, at most ``timeout`` seconds (None: no limit), then stop
        the threads.  Returns how many cells are left unlogged (:attr:`pending`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self.error is None and (self._jobs or self._overflow or self._busy):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cv.wait(timeout=1.0 if left is None else min(1.0, left))
        self.close()
        return self.pending

    def close(self) -> None:
        """Stop the threads once each has finished the job it is logging; what is queued stays pending."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout=120)

    # ------------------------------------------------------------------ logging threads
    def _take(self) -> tuple[CellJob | None, str | None] | None:
        """The next job, or the next overflowed key; None when stopping.  Counts it busy."""
        with self._cv:
            while not (self._stopping or self.error is not None):
                if self._jobs or self._overflow:
                    self._busy += 1
                    return (self._jobs.popleft(), None) if self._jobs else (None, self._overflow.popleft())
                self._cv.wait()
            return None

    def _work(self) -> None:
        while (taken := self._take()) is not None:
            job, key = taken
            t0 = time.perf_counter()
            try:
                if job is None:
                    job = self._rebuild(key)  # an overflowed cell: its row from the store
                if job is not None:
                    self._log(job)
            except BaseException as e:  # noqa: BLE001 — the first failure stops logging for the run
                with self._cv:
                    self._overflow.appendleft(key if job is None else job.cell_key)  # pending: next run logs it
                    self._busy -= 1
                    first, self.error = self.error is None, self.error or e
                    self._cv.notify_all()
                if first and self._on_error is not None:
                    self._on_error(e)
                return
            with self._cv:
                self._busy -= 1
                self.busy_s += time.perf_counter() - t0
                self.logged += job is not None
                self._cv.notify_all()
