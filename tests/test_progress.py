"""What the terminal shows: stage accounting, ETA, rate-limited lines off a terminal, the live bars on one, the
summary table's arrows and marks, and a smoke run's stdout (short header, no JSON dump, a few progress lines)."""

import io
import json
import os
import re
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from components.config import parse_overrides
from components.execution.plan import plan_cells
from components.execution.progress import FIRST_LINES, LOG_EVERY_S, Progress
from components.presets import resolve
from components.report.console import summary_table


class Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _cells(*overrides: str):
    return plan_cells(resolve("smoke", parse_overrides(["methods=[retrain_indep,agu,sragu]", *overrides]), smoke=True))


def _log(total: int = 30, **kw) -> tuple[Progress, io.StringIO, Clock]:
    clock, out = Clock(), io.StringIO()
    return Progress(total=total, stream=out, clock=clock, **kw), out, clock


# ------------------------------------------------------------------------------------------ stage accounting
def test_stages_count_distinct_artifacts_and_reach_their_totals():
    # 2 seeds; a regime and its two-request form share forget set, gold and ensemble; one original per seed
    cells = _cells("seeds=[0,1]", "gold.k=2", "shadow.n=2", "regimes=[random:0.1,random:0.1@2]")
    assert len(cells) == 12
    p, _, _ = _log(total=len(cells))
    p.expect(cells)
    p.expect(cells[:5])  # counting the same cells again (a takeover) adds nothing
    assert p.stages() == [("originals", 0, 2), ("forget sets", 0, 2), ("golds", 0, 2), ("ensembles", 0, 2),
                          ("shadows", 0, 2), ("sequences", 0, 2)]
    for c in cells:  # every cell reports its upstream, shared ones many times over
        for stage, key in (("originals", c.original.key), ("forget sets", c.forget_set.key), ("golds", c.gold.key),
                           ("ensembles", c.ensemble.key), ("shadows", c.shadow.key)):
            p.stage_done(stage, key)
        if c.sequence is not None:
            p.stage_done("sequences", c.sequence.key)
    assert all(n == total for _, n, total in p.stages())
    p.expect(cells[:6], replace=True)  # another driver claimed seed 1's cells: only seed 0's upstream is ours
    assert [(s, total) for s, _, total in p.stages()] == [(s, 1) for s, _, _ in p.stages()]


def test_stages_absent_from_the_grid_are_not_shown():
    p, _, _ = _log()
    p.expect(_cells())
    assert [s for s, _, _ in p.stages()] == ["originals", "forget sets", "golds"]
    assert p.line().endswith("| originals 0/1 | forget sets 0/2 | golds 0/2")


# ------------------------------------------------------------------------------------------------------ ETA
def test_eta_counts_from_the_grid_start_not_from_ray_start_up():
    p, _, clock = _log(total=10, cached=2)
    assert "eta --:--" in p.line()  # nothing finished: unknown, not zero
    clock.t = 10.0  # Ray and MLflow took 10 s
    p.begin()
    clock.t = 30.0
    p.done, p.failed = 3, 1  # 4 cells in 20 s; 4 left (2 were cached)
    assert p.eta() == pytest.approx(4 * 20 / 4)
    assert "elapsed 00:30 | eta 00:20" in p.line()
    p.done = 7
    assert p.eta() == 0.0


# ------------------------------------------------------------------------------------- lines off a terminal
def test_off_a_terminal_lines_are_rate_limited_and_the_final_line_appears_once():
    p, out, clock = _log(total=100)
    p.expect(_cells())
    assert p.live is False
    p.start()
    assert p.lines == 1 and out.getvalue().startswith("cells 0/100 | ")  # totals at once, 0 done
    p.begin()
    for _ in range(FIRST_LINES):  # the first cells each get a line
        clock.t += 1.0
        p.done += 1
        p.show()
    assert p.lines == 1 + FIRST_LINES
    for _ in range(50):  # 50 more cells within the interval after the last line: no line
        clock.t += 0.5  # 25 s in all
        p.done += 1
        p.show()
    assert p.lines == 1 + FIRST_LINES
    clock.t += LOG_EVERY_S - 25  # the interval has passed: one line, then quiet again
    p.show()
    p.show()
    assert p.lines == 2 + FIRST_LINES
    p.slots = 0
    p.show(force=True)  # a node lost: its line is not held back
    assert p.lines == 3 + FIRST_LINES
    p.done = 100  # the last cell: no line of its own, the final one says it
    clock.t += LOG_EVERY_S
    p.show()
    assert p.lines == 3 + FIRST_LINES
    for key in ("o", "f1", "f2", "g1", "g2"):  # keys need not be the planned ones to count
        p.stage_done({"o": "originals", "f": "forget sets", "g": "golds"}[key[0]], key)
    p.close()
    p.close()
    p.show()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 + FIRST_LINES
    assert lines[-1].startswith("cells 100/100 | running 0 | queued 0 | failed 0 | cached 0 | elapsed ")
    assert "eta" not in lines[-1] and sum(ln.startswith("cells 100/100") for ln in lines) == 1


def test_notes_print_as_lines():
    p, out, _ = _log()
    p.note("ray: local (2 CPUs)")
    p.start()
    p.note("taking over 1 cell(s) whose run is gone")
    assert out.getvalue().splitlines()[::2] == ["ray: local (2 CPUs)", "taking over 1 cell(s) whose run is gone"]


# ------------------------------------------------------------------------------------------- on a terminal
def test_on_a_terminal_bars_redraw_in_place_and_only_the_final_line_stays():
    clock, tty = Clock(), Tty()
    p = Progress(total=6, stream=tty, clock=clock)
    assert p.live is True
    cells = _cells()
    p.expect(cells)
    p.start()
    p.begin()
    for i, c in enumerate(cells):
        clock.t += 1.0
        p.stage_done("originals", c.original.key)
        p.done += 1
        p.show()
        if i == 2:
            p.note("taking over 1 cell(s) whose run is gone")
    text = tty.getvalue()
    assert p.lines == 0 and "\x1b[A" in text  # no lines of its own: bars redrawn in place (cursor up)
    assert text.count("taking over 1 cell(s) whose run is gone\n") == 1
    assert re.search(r"originals\s+1/1 ", text) and re.search(r"cells\s+6/6 ", text)
    assert re.search(r"golds\s+0/2 ", text)
    p.close()
    assert p.lines == 1 and tty.getvalue().endswith("| originals 1/1 | forget sets 0/2 | golds 0/2\n")


# ------------------------------------------------------------------------------------------- the summary
def _row(method: str, seed: int, **metrics) -> dict:
    return {"dataset": "d", "model": "m", "regime": "random_10pct", "method": method, "seed": seed, "status": "ok",
            "cell_key": f"{method}{seed}", **metrics}


def test_summary_table_arrows_best_marks_and_tuned_dagger():
    gold = {"gold_forget_acc": 0.60, "gold_test_acc": 0.70}
    rows = [  # forget_acc is closer-to-gold: b (0.62) is best though a is lower and c higher
        _row("retrain_indep", 0, forget_acc=0.60, test_acc=0.99, kl_to_gold=0.001, **gold),  # the floor: unranked
        _row("a", 0, forget_acc=0.40, test_acc=0.65, kl_to_gold=0.30, **gold),
        _row("b", 0, forget_acc=0.62, test_acc=0.71, kl_to_gold=0.20, tuned=True, **gold),
        _row("c", 0, forget_acc=0.90, test_acc=0.80, kl_to_gold=0.20, **gold),
    ]
    lines = summary_table(rows, cols=("forget_acc", "test_acc", "kl_to_gold")).splitlines()
    assert lines[0].split() == ["d/m/random_10pct", "forget_acc", "≈", "test_acc", "↑", "kl_to_gold", "↓"]
    table = {ln.split()[0]: ln.split()[1:] for ln in lines[1:6]}
    assert table["retrain_indep"] == ["0.600", "0.990", "0.001"]  # best everywhere, marked nowhere
    assert table["a"] == ["0.400", "0.650", "0.300"]
    assert table["b†"] == ["0.620*", "0.710", "0.200*"]  # tied lowest kl: both marked
    assert table["c"] == ["0.900", "0.800*", "0.200*"]
    assert table["(gold)"] == ["0.600", "0.700"]
    assert "† tuned configuration" in lines[-1] and "retrain_indep" in lines[-1]


def test_summary_table_shows_the_ci_and_without_tuned_rows_no_dagger():
    rows = [_row("a", s, kl_to_gold=v) for s, v in ((0, 0.1), (1, 0.3))] + [_row("b", 0, kl_to_gold=0.5)]
    text = summary_table(rows, cols=("kl_to_gold",))
    assert re.search(r"\n  a\s+0\.200±\d\.\d{3}\*\n", text) and re.search(r"\n  b\s+0\.500\n", text)
    assert "†" not in text and summary_table([]) == "(no finished cells)"


# ---------------------------------------------------------------------------------------- a real smoke run
@pytest.mark.slow
@pytest.mark.service
def test_smoke_run_prints_a_header_a_few_progress_lines_and_the_totals(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"})
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "pipelines/benchmark.py", "--preset", "smoke", "--smoke", "--out",
                        str(tmp_path / "out"), "--set", "methods=[retrain_indep,agu,sragu]", "--set", "seeds=[0,1]"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - t0
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = r.stdout.splitlines()
    # the header: the grid's shape and size, where things go; the config is in config.json, not on the screen
    assert lines[0] == "smoke-smoke: 1 dataset × 1 model × 2 seeds × 2 regimes × 3 methods = 12 cells"
    assert [ln.split(":")[0].strip() for ln in lines[1:6]] == ["runs", "store", "mlflow", "ray", "code"]
    assert lines[4].endswith("a local instance of this run's own (127.0.0.1)")
    assert not any(ln.strip() in ("{", "}") or ln.lstrip().startswith('"') for ln in lines), r.stdout[:3000]
    run = next(ln.split(": ", 1)[1] for ln in lines if ln.startswith("run: "))
    config = json.loads((tmp_path / "out" / run.rsplit("/", 1)[1] / "config.json").read_text())
    assert config["config"]["seeds"] == [0, 1] and config["code_version"].startswith("src-")
    # progress: a line at the start, the first cells, one per LOG_EVERY_S at most, the final one
    progress = [ln for ln in lines if ln.startswith("cells ")]
    assert progress[0].startswith("cells 0/12 | ")
    assert progress[0].endswith(" | originals 0/2 | forget sets 0/4 | golds 0/4")
    assert len(progress) <= 2 + FIRST_LINES + wall // LOG_EVERY_S and len(progress) < 12, progress
    assert progress[-1].startswith("cells 12/12 | running 0 | queued 0 | failed 0 | cached 0 | elapsed ")
    assert progress[-1].endswith(" | originals 2/2 | forget sets 4/4 | golds 4/4")
    assert sum(ln.startswith("cells 12/12") for ln in lines) == 1
    # the table: arrows in the header, the best marked
    assert any(ln.startswith("mnist_5k/mlp/random_10pct") and "kl_to_gold ↓" in ln for ln in lines)
    assert any(ln.startswith("  agu") and "*" in ln for ln in lines)
    print(f"smoke run: {wall:.1f} s, {len(progress)} progress lines")
