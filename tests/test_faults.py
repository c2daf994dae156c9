"""Fault injection on real services: a tracking server and an S3 server killed mid-run, corrupt cache
entries, two drivers on one store.  (Ray-side faults — lost worker nodes, stalls, stale addresses, a
running head — are in tests/test_faults_ray.py.)

Each test runs ``pipelines/benchmark.py`` as a subprocess, kills the service with SIGTERM to its own process
group once the run's status line shows finished cells, and checks what the run, its rerun, the store and
MLflow hold afterwards.  Nothing here is mocked.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import subprocess
import sys
import time
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
from conftest import AWS_ENV, BIN, ROOT, _wait_http, free_port, stop_process_group
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.slow, pytest.mark.service]

# 16 cells of ~0.5 s each after a ~10 s Ray start: long enough to kill a service half-way
GRID = ["--preset", "smoke", "--set", "methods=[retrain_indep,agu,sragu,grad_ascent]", "--set", "seeds=[0,1]"]
SMALL = ["--preset", "smoke", "--set", "methods=[retrain_indep,agu,sragu]"]


def _env(tmp_path: Path, extra: dict | None = None) -> dict:
    e = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    ray_tmp = Path(f"/tmp/rf-{os.getpid()}-{tmp_path.name[-12:]}")  # Ray's socket paths must stay short
    ray_tmp.mkdir(parents=True, exist_ok=True)
    e.update({"OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(ray_tmp), **(extra or {})})
    return e


def start(tmp_path: Path, *args, env: dict | None = None, log: str = "run.log") -> tuple[subprocess.Popen, Path]:
    out_log = tmp_path / log
    with out_log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "pipelines/benchmark.py", "--out", str(tmp_path / "out"), *args],
                                cwd=ROOT, env=_env(tmp_path, env), stdout=fh, stderr=subprocess.STDOUT)
    return proc, out_log


def run(tmp_path: Path, *args, env: dict | None = None, log: str = "run.log") -> tuple[int, str]:
    proc, out_log = start(tmp_path, *args, env=env, log=log)
    return proc.wait(600), out_log.read_text()


def wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert proc.poll() is None, f"the run ended before {text!r}:\n{path.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout} s"
        time.sleep(0.1)


def latest_table(out: Path):
    runs = sorted(p for p in out.glob("smoke-*") if p.is_dir())
    return pq.read_table(runs[-1] / "results.parquet").to_pandas()


def mlflow_server(tmp: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    log = tmp / f"mlflow-{time.monotonic_ns()}.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{tmp}/srv.db", "--artifacts-destination", str(tmp / "art")],
            env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    _wait_http(f"http://127.0.0.1:{port}/health", proc, 90, log)
    return proc


def test_mlflow_killed_mid_run_loses_nothing_and_the_rerun_logs_every_cell(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = mlflow_server(tmp_path, port)
    try:
        proc, log = start(tmp_path, *GRID, env={"MLFLOW_TRACKING_URI": uri})
        wait_for(log, "cells 3/", proc)
        stop_process_group(server)
        t0 = time.monotonic()
        code = proc.wait(300)
        first = log.read_text()
        # bounded: MLflow's own retries would hang the driver for minutes
        assert time.monotonic() - t0 < 120, first[-3000:]
        assert code == 1, first[-3000:]
        assert "Traceback" not in first, first[-3000:]
        assert sum(line.startswith("mlflow: ") and "failed" in line for line in first.splitlines()) == 1, first
        assert "incomplete: mlflow:" in first and "rerun the same command" in first
        t = latest_table(tmp_path / "out")
        assert len(t) == 16 and (t.status == "ok").all()  # every result is in the store and the table

        server = mlflow_server(tmp_path, port)
        code, second = run(tmp_path, *GRID, env={"MLFLOW_TRACKING_URI": uri}, log="rerun.log")
        assert code == 0, second[-3000:]
        assert "0 to run, 16 already" in second and "logged to MLflow from the store" in second
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("sragu-smoke")
        runs = client.search_runs([exp.experiment_id])
        cells = [r for r in runs if r.data.tags.get("sragu.role") == "cell"]
        assert sorted(r.data.tags["sragu.cell_key"] for r in cells) == sorted(t.cell_key)  # each once
        assert all(r.info.status == "FINISHED" for r in cells)
        parents = [r for r in runs if r.data.tags.get("sragu.role") == "parent"]
        assert len(parents) == 2 and "RUNNING" not in {r.info.status for r in parents}
        assert sorted(r.info.status for r in parents) == ["FINISHED", "KILLED"]
        from_store = [r for r in cells if r.data.tags.get("sragu.logged_from") == "store"]
        assert from_store and all(r.data.metrics["kl_to_gold"] >= 0 for r in from_store)
        sr = [r for r in from_store if r.data.tags["method"] == "sragu"]
        if sr:  # the α/ω table travels through the store too
            assert "alpha_omega.json" in {a.path for a in client.list_artifacts(sr[0].info.run_id)}
    finally:
        stop_process_group(server)


def test_s3_killed_mid_run_reports_what_exists_and_the_rerun_completes(tmp_path):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, **AWS_ENV}

    def moto() -> subprocess.Popen:
        with (tmp_path / "moto.log").open("a") as fh:
            p = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                 stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_http(endpoint, p, 30)
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket="bench")
        return p

    grid = [*GRID[:-2], "--set", "seeds=[0]"]  # 8 cells: the rerun recomputes them all (see below)
    server = moto()
    try:
        proc, log = start(tmp_path, *grid, "--store", "s3://bench/sragu", env=env)
        wait_for(log, "cells 3/", proc)
        stop_process_group(server)
        code = proc.wait(300)
        first = log.read_text()
        assert code == 1 and "Traceback" not in first, first[-3000:]
        assert "incomplete: store: writing tables/smoke.parquet failed" in first
        run_dir = sorted((tmp_path / "out").glob("smoke-*"))[-1]
        t = latest_table(tmp_path / "out")  # the table of what exists, kept in the run folder
        assert len(t) == 8 and 3 <= (t.status == "ok").sum() < 8
        assert t[t.status == "failed"].error.notna().all()
        assert (run_dir / "report" / "report.md").exists()

        # moto keeps objects in memory: the restarted server is empty, so the rerun recomputes and completes
        server = moto()
        code, second = run(tmp_path, *grid, "--store", "s3://bench/sragu", env=env, log="rerun.log")
        assert code == 0, second[-3000:]
        t2 = latest_table(tmp_path / "out")
        assert len(t2) == 8 and (t2.status == "ok").all()
    finally:
        stop_process_group(server)


def test_two_concurrent_runs_compute_each_cell_once_and_corrupt_entries_heal(tmp_path):
    out, store = tmp_path / "out", tmp_path / "out" / "store"
    a, log_a = start(tmp_path, *SMALL, log="a.log")
    b, log_b = start(tmp_path, *SMALL, log="b.log")
    code_a, code_b = a.wait(600), b.wait(600)
    text_a, text_b = log_a.read_text(), log_b.read_text()
    assert (code_a, code_b) == (0, 0), text_a[-2000:] + text_b[-2000:]
    assert "Traceback" not in text_a + text_b
    runs = sorted(p for p in out.glob("smoke-*") if p.is_dir())
    assert len(runs) == 2  # one folder each, even when both start in the same second
    tables = [pq.read_table(r / "results.parquet").to_pandas() for r in runs]
    assert all(len(t) == 6 and (t.status == "ok").all() for t in tables)
    assert tables[0].set_index("cell_key").task_time_s.equals(
        tables[1].set_index("cell_key").task_time_s.loc[tables[0].cell_key])  # the same computation, not two
    ran = [int(next(line for line in t.splitlines() if line.startswith("6 cells:")).split()[2]) for t in (text_a,
                                                                                                       text_b)]
    assert sum(ran) == 6, (ran, text_a[-2000:], text_b[-2000:])  # the split of the work, each cell once
    assert not list((store / "leases" / "cells").glob("*"))  # every claim released
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    exp = client.get_experiment_by_name("sragu-smoke")
    cells = client.search_runs([exp.experiment_id], "tags.`sragu.role` = 'cell'")
    assert sorted(r.data.tags["sragu.cell_key"] for r in cells) == sorted(tables[0].cell_key)

    # corrupt entries: a truncated cell file, a cell file holding another cell's row, a garbage gold
    keys = sorted(tables[0].cell_key)
    truncated, duplicate = store / "cells" / f"{keys[0]}.parquet", store / "cells" / f"{keys[1]}.parquet"
    truncated.write_bytes(truncated.read_bytes()[:100])
    duplicate.write_bytes((store / "cells" / f"{keys[2]}.parquet").read_bytes())
    gold = store / "artifacts" / "gold" / f"{tables[0].set_index('cell_key').gold_key[keys[0]]}.pt"  # keys[0] reruns
    gold.write_bytes(b"not a checkpoint")
    code, text = run(tmp_path, *SMALL, log="heal.log")
    assert code == 0, text[-3000:]
    healed = [line for line in text.splitlines() if line.startswith("healed: ")]
    assert len(healed) == 3, text[-3000:]
    for what in (f"cells/{keys[0]}.parquet", f"cells/{keys[1]}.parquet", f"artifacts/gold/{gold.name}"):
        assert sum(what in line for line in healed) == 1, healed
    assert any("expected one row of" in line for line in healed)
    t = latest_table(out)
    assert len(t) == 6 and t.cell_key.is_unique and (t.status == "ok").all()
    assert len(list((store / "quarantine").rglob("*.reason.json"))) == 3
    # healed: the next run finds nothing to fix
    code, text = run(tmp_path, *SMALL, log="again.log")
    assert code == 0 and "0 to run, 6 already" in text and "healed:" not in text
