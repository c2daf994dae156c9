"""The run's progress on the terminal: cells and the upstream stages they wait on (originals, forget sets, ...).

Two displays, chosen by whether the stream is a terminal:

* **a terminal**: bars redrawn in place (tqdm), one per stage with work in this run, then the cells' bar with
  running, queued, failed, cached and [elapsed<ETA]; messages (:meth:`Progress.note`) print above the bars.
* **anything else** (CI logs, ``ray job submit`` logs, a test's pipe): one line at the start (totals, 0 done), a
  line for each of the first :data:`FIRST_LINES` finished cells (a first rate early; log readers and the fault
  tests wait on ``cells 3/``), a line when the cluster's CPUs change, otherwise at most one line every
  :data:`LOG_EVERY_S` seconds, and one final line with the totals (:meth:`Progress.close`).  A 210-cell grid
  that runs ten minutes prints about 25 lines, not 210.

Every line starts ``cells <done>/<total>`` and ends with the stage counts, ``originals 1/1 | golds 2/2``.

A stage counts distinct artifacts (an original two cells share counts once) among the cells this driver runs:
:meth:`Progress.expect` adds the cells' upstream keys, the grid reports each one whose Ray task finished
(:meth:`Progress.stage_done`), so each stage reaches its total when the grid ends.  A failed upstream task
counts as finished: the cells that need it come back failed and are counted there.

ETA: the cells left times the time per finished cell since the grid started submitting cells (after Ray and
MLflow are up, so their start-up does not count); "--:--" before the first cell finishes.  The first cells also
waited for their originals and golds, so the first ETA is high and drops as cells flow.  (The interval between
finished cells is no better: cells finish in bursts, and a burst reads as "nothing left to do".)
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["FIRST_LINES", "LOG_EVERY_S", "STAGES", "Progress", "upstream_of"]

LOG_EVERY_S = 30.0  # off a terminal: at most one progress line this often (the first cells, node changes aside)
FIRST_LINES = 3  # off a terminal: the first this many finished cells each get a line
# stage name → the attribute of a Cell naming that upstream artifact (None: the cell has none)
STAGES = {"originals": "original", "forget sets": "forget_set", "golds": "gold", "ensembles": "ensemble",
          "shadows": "shadow", "sequences": "sequence"}


def upstream_of(cell) -> list[tuple[str, str]]:
    """``(stage, key)`` of every upstream artifact ``cell`` needs, in :data:`STAGES` order."""
    return [(stage, spec.key) for stage, attr in STAGES.items() if (spec := getattr(cell, attr)) is not None]


def _clock(s: float) -> str:
    return "--:--" if not math.isfinite(s) else f"{int(s // 60):02d}:{int(s % 60):02d}"


@dataclass
class Progress:
    """Cells done/total, running, queued, failed, cached, elapsed and ETA, and per-stage counts.

    ``in_flight`` cells have been submitted and not finished; of those at most ``slots`` (the CPUs of the
    cluster's alive nodes divided by a cell's ``num_cpus``, recomputed as the grid runs, 0 when no CPU is
    left) can be running at once, the rest wait in Ray's queue.  ``live``: redraw in place (None: when
    ``stream`` is a terminal).  ``clock``: seconds, monotonic (a test passes a fake one).
    """

    total: int
    cached: int = 0
    done: int = 0
    failed: int = 0
    in_flight: int = 0
    slots: int = 1
    t0: float | None = None
    stream: object = field(default_factory=lambda: sys.stdout)
    live: bool | None = None
    every_s: float = LOG_EVERY_S
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self):
        if self.t0 is None:
            self.t0 = self.clock()
        if self.live is None:
            isatty = getattr(self.stream, "isatty", None)
            self.live = bool(isatty and isatty())
        self.expected: dict[str, set[str]] = {s: set() for s in STAGES}
        self.finished: dict[str, set[str]] = {s: set() for s in STAGES}
        self.t_grid: float | None = None  # when the first grid began submitting cells
        self.lines = 0  # progress lines printed off a terminal (the final one included)
        self._printed: tuple[float, int] | None = None  # (when, cells finished) of the last line printed
        self._bars: dict[str, object] = {}
        self._closed = False

    # ------------------------------------------------------------------------------------------ accounting
    def expect(self, cells: Iterable, replace: bool = False) -> None:
        """Count the upstream artifacts of ``cells`` into the stages' totals (``replace``: instead of those
        counted so far, e.g. once another driver has claimed part of the grid)."""
        if replace:
            self.expected = {s: set() for s in STAGES}
        for c in cells:
            for stage, key in upstream_of(c):
                self.expected[stage].add(key)

    def stage_done(self, stage: str, key: str) -> None:
        self.expected[stage].add(key)
        self.finished[stage].add(key)

    def begin(self) -> None:
        """The grid starts submitting cells (the ETA's clock)."""
        if self.t_grid is None:
            self.t_grid = self.clock()

    @property
    def cells_finished(self) -> int:
        return self.done + self.failed

    def stages(self) -> list[tuple[str, int, int]]:
        """``(stage, finished, total)`` of the stages with work in this run."""
        return [(s, len(self.finished[s] & self.expected[s]), len(self.expected[s]))
                for s in STAGES if self.expected[s]]

    def eta(self) -> float:
        """Seconds left (nan while unknown); see the module docstring."""
        finished, now = self.cells_finished, self.clock()
        left = self.total - self.cached - finished
        if left <= 0:
            return 0.0
        if not finished:
            return math.nan
        return left * (now - (self.t_grid if self.t_grid is not None else self.t0)) / finished

    def line(self, final: bool = False) -> str:
        elapsed = self.clock() - self.t0
        running = min(self.in_flight, self.slots)
        head = (f"cells {self.cached + self.cells_finished}/{self.total} | running {running} | queued "
                f"{self.in_flight - running} | failed {self.failed} | cached {self.cached} | elapsed {_clock(elapsed)}")
        head += "" if final else f" | eta {_clock(self.eta())}"
        return " | ".join([head, *(f"{s} {n}/{t}" for s, n, t in self.stages())])

    # ------------------------------------------------------------------------------------------- display
    def start(self) -> None:
        """Show the totals with nothing done yet."""
        self.show(force=True)

    def show(self, force: bool = False) -> None:
        """Something changed (or time passed): redraw, or off a terminal print a line when one is due."""
        if self._closed:
            return
        if self.live:
            self._draw()
            return
        finished, now = self.cells_finished, self.clock()
        if self._printed is None or force:
            due = True
        elif self.cached + finished >= self.total:
            due = False  # the final line says it
        else:
            last_t, last_n = self._printed
            due = (finished != last_n and finished <= FIRST_LINES) or now - last_t >= self.every_s
        if due:
            self._print(self.line())
            self._printed = (now, finished)

    def note(self, message: str) -> None:
        """A message line; on a terminal it prints above the bars."""
        if self.live and self._bars:
            from tqdm import tqdm

            tqdm.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        """Take the bars down and print the final line (once)."""
        if self._closed:
            return
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
        self._print(self.line(final=True))
        self._closed = True

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)
        self.lines += 1

    def _draw(self) -> None:
        from tqdm import tqdm

        rows = [(s, n, t, "") for s, n, t in self.stages()]
        running = min(self.in_flight, self.slots)
        rows.append(("cells", self.cached + self.cells_finished, self.total,
                     f"running {running}, queued {self.in_flight - running}, failed {self.failed}, cached "
                     f"{self.cached} [{_clock(self.clock() - self.t0)}<{_clock(self.eta())}]"))
        for name, n, total, stats in rows:
            fmt = "{desc} {n:>4}/{total:<4} |{bar:20}| " + stats.replace("{", "(").replace("}", ")")
            bar = self._bars.get(name)
            if bar is None:
                bar = self._bars[name] = tqdm(total=total, desc=f"{name:<11}", position=len(self._bars), leave=False,
                                              file=self.stream, dynamic_ncols=True, mininterval=0, bar_format=fmt)
            bar.total, bar.n, bar.bar_format = total, n, fmt
            bar.refresh()
