"""Tracking that keeps up: background cell logging behind a slow tracking server loses no run and never makes the
grid wait (components/io/cell_logger.py, docs/design.md §8).

The slow server is the real MLflow server behind a proxy (:class:`SlowProxy`, a stand-in for a distant or loaded
server: it forwards every request unchanged after a fixed delay).  No assertion here is a timing: "the grid did
not wait" is shown by counts — every cell was handed over while the server had answered only a few of its
requests — and "lost no run" by reading every run back.
"""

import http.client
import os
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
from mlflow.tracking import MlflowClient

from components.io.cell_logger import CellJob, CellLogger
from components.io.tracking import TrackedRun, Tracker

pytestmark = [pytest.mark.service]


class SlowProxy:
    """An HTTP proxy on 127.0.0.1 that forwards each request to ``upstream`` after ``delay`` seconds and counts
    the requests it has answered."""

    def __init__(self, upstream: str, delay: float):
        target = urllib.parse.urlsplit(upstream)
        proxy = self
        self.delay, self.answered, self._lock = delay, 0, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(proxy.delay)
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()
                with proxy._lock:
                    proxy.answered += 1

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow(mlflow_server):
    proxy = SlowProxy(mlflow_server[0], delay=0.15)
    yield proxy
    proxy.close()


def _job(i: int, **tags) -> CellJob:
    return CellJob(f"grid/cell-{i:03d}", f"m/r/s{i}", {"m.lr": 0.1 * (i + 1), "seed": i},
                   {"js": i / 100, "forget_acc": 1 - i / 100, "stop_reason": "max_iters"},
                   {"method": "m", "seed": str(i), **tags})


def test_slow_server_neither_blocks_the_grid_nor_loses_a_run(slow, mlflow_server, capsys):
    n, queue_size = 40, 4
    tracker = Tracker(slow.url, f"scale-{time.time_ns()}")
    run = TrackedRun(tracker, "parent", {"a": 1}, {})
    with run:
        run.list_cells()
        stored = {}  # what the store holds: the overflow is logged from here

        def rebuild(key):
            return stored[key]

        run.start_logger(lambda key: rebuild(key) and _job(int(key[-3:]), **{"sragu.logged_from": "store"}),
                         threads=2, queue_size=queue_size)
        answered_before = slow.answered
        for i in range(n):  # the grid: a cell finishes, is stored, is handed over
            stored[f"grid/cell-{i:03d}"] = True
            run.submit(_job(i))
        answered_while_submitting = slow.answered - answered_before
        # every cell was handed over while the server had answered at most a few of the 3 × 40 requests: the
        # grid did not wait for MLflow; the queue took 4 cells and the rest went to the overflow
        assert answered_while_submitting < 3 * queue_size
        assert run.logger.overflowed >= n - queue_size - 2 * 2  # two threads may each hold one taken job
        assert run.logger.max_queued <= queue_size
        assert run.drain(timeout=300) == 0 and run.error is None and run.pending == 0
    client = MlflowClient(mlflow_server[0])
    exp = client.get_experiment_by_name(tracker.experiment)
    cells = client.search_runs([exp.experiment_id], "tags.`sragu.role` = 'cell'", max_results=1000)
    # lost none: one FINISHED run per cell, under the parent, each with its own numbers
    assert len(cells) == n and {r.info.status for r in cells} == {"FINISHED"}
    assert {r.data.tags["sragu.cell_key"] for r in cells} == {f"grid/cell-{i:03d}" for i in range(n)}
    for r in cells:
        i = int(r.data.tags["sragu.cell_key"][-3:])
        assert r.data.metrics["js"] == pytest.approx(i / 100) and r.data.params["seed"] == str(i)
        assert r.data.tags["mlflow.parentRunId"] == run.parent.run_id and r.data.tags["stop_reason"] == "max_iters"
    from_store = [r for r in cells if r.data.tags.get("sragu.logged_from") == "store"]
    assert len(from_store) == run.logger.overflowed > 0  # the overflow was logged from the store, not dropped


def test_a_logging_failure_stops_logging_once_and_counts_every_unlogged_cell(capsys):
    calls = []

    def log(job):
        calls.append(job.cell_key)
        if len(calls) == 3:
            raise ConnectionError("server went away")

    errors = []
    logger = CellLogger(log, lambda key: _job(0), threads=1, queue_size=100, on_error=errors.append)
    for i in range(10):
        logger.submit(_job(i))
    left = logger.drain(timeout=30)
    assert len(errors) == 1 and isinstance(errors[0], ConnectionError)
    assert logger.logged == 2 and left == 8  # the failed cell is pending too, not lost from the count
    logger.submit(_job(99))  # after the failure: not logged, counted
    assert logger.pending == 9 and len(calls) == 3


def test_drain_timeout_leaves_the_rest_pending_for_the_next_run(slow, mlflow_server):
    tracker = Tracker(slow.url, f"scale-timeout-{time.time_ns()}")
    run = TrackedRun(tracker, "parent", {}, {}, stream=open(os.devnull, "w"))  # noqa: SIM115
    with run:
        run.start_logger(lambda key: None, threads=1, queue_size=100)
        for i in range(30):
            run.submit(_job(i))
        left = run.drain(timeout=0.5)  # 30 cells × 3 requests × 0.15 s cannot finish in 0.5 s
        assert 0 < left <= 30 and run.pending == left
        assert "drain_timeout_s" in run.error


@pytest.mark.slow
def test_group_runs_hold_the_same_cells_as_one_run_per_cell(tmp_path, mlflow_server):
    """The same grid logged one run per cell (synchronously: one cell's calls at a time) and one run per group:
    the cells read back from MLflow are identical, and equal the results table's numbers."""
    import subprocess
    import sys

    import pyarrow.parquet as pq
    from conftest import ROOT

    from components.io.mlflow_values import cells_from_mlflow, row_metrics
    from components.io.mlflow_values import split_metrics as split

    uri = mlflow_server[0]
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "MLFLOW_TRACKING_URI": uri,
           "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    name = f"scale{time.time_ns() % 10**9}"
    base = [sys.executable, "pipelines/benchmark.py", "--preset", "smoke", "--out", str(tmp_path / "out"),
            "--set", f"name={name}", "--set", "methods=[retrain_indep,agu,sragu]"]
    runs = subprocess.run([*base, "--set", "tracking.cells=runs", "--set", "tracking.mode=sync"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert runs.returncode == 0, runs.stdout[-2000:] + runs.stderr[-2000:]
    groups = subprocess.run([*base, "--set", "tracking.cells=groups"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert groups.returncode == 0, groups.stdout[-2000:] + groups.stderr[-2000:]
    assert "one child run per dataset × model × regime × method" in groups.stdout

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(f"sragu-{name}")
    parents = sorted(client.search_runs([exp.experiment_id], "tags.`sragu.role` = 'parent'"),
                     key=lambda r: r.info.start_time)
    assert len(parents) == 2
    per_cell = cells_from_mlflow(client, exp.experiment_id, parents[0].info.run_id)
    per_group = cells_from_mlflow(client, exp.experiment_id, parents[1].info.run_id)
    assert len(per_cell) == 6 and per_cell == per_group
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[1].info.run_id}'")
    assert len(children) == 6 and {r.data.tags["sragu.role"] for r in children} == {"group"}  # 2 regimes × 3
    sragu = next(r for r in children if r.data.tags["method"] == "sragu")
    assert sragu.data.metrics["cells_ok"] == 1 and sragu.data.params["sragu.omega_map"] == "gaussian"
    # and both equal the table the run wrote: every finite number of every row
    out = sorted(p for p in (tmp_path / "out").glob(f"{name}-*") if p.is_dir())[-1]
    table = {r["cell_key"]: {"cell_key": r["cell_key"], **split(row_metrics(r))[0]}
             for r in pq.read_table(out / "results.parquet").to_pylist()}
    assert [table[k] for k in sorted(table)] == per_group
    assert any(k.startswith("multiplier.") for row in per_group for k in row)  # SRAGU's c·ω_ℓ, spread as metrics
