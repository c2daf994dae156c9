"""The benchmark end to end on a real local Ray: results, resume, failures, S3 store, MLflow server.

Each test runs ``pipelines/benchmark.py`` as a user would (a subprocess) and checks what it left in the
store, the Parquet table and MLflow.
"""

import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
from conftest import AWS_ENV, ROOT, free_port, stop_process_group
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.slow, pytest.mark.service]

# a small grid: 1 seed, 2 regimes, 3 methods -> 6 cells, ~20 s with Ray start-up
SMALL = ["--preset", "smoke", "--set", "methods=[retrain_indep,agu,sragu]"]


def bench(tmp_path, *args, env=None, timeout=600):
    e = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    e.update({"OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", **(env or {})})
    return subprocess.run([sys.executable, "pipelines/benchmark.py", "--out", str(tmp_path / "out"), *args],
                          cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout)


def table(out):
    runs = sorted(p for p in out.glob("smoke-*") if p.is_dir())
    return pq.read_table(runs[-1] / "results.parquet").to_pandas()


def test_smoke_resume_and_config_change(tmp_path):
    out, store = tmp_path / "out", tmp_path / "out" / "store"
    first = bench(tmp_path, *SMALL)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "cells 6/6" in first.stdout and "6 to run" in first.stdout
    t1 = table(out)
    assert len(t1) == 6 and t1.cell_key.is_unique and (t1.status == "ok").all()
    assert set(t1.method) == {"retrain_indep", "agu", "sragu"}
    assert set(t1.regime) == {"random_10pct", "high_loss_5pct"}
    # one original, one forget set per regime, one gold per forget set; one Parquet object per cell
    assert len(list((store / "artifacts" / "originals").glob("*.pt"))) == 1
    assert len(list((store / "artifacts" / "forget").glob("*.json"))) == 2
    assert len(list((store / "artifacts" / "gold").glob("*.pt"))) == 2
    assert len(list((store / "cells").glob("*.parquet"))) == 6
    # the gold's own training ends as retrain_indep's does (the same recipe, another init); the non-member rule is
    # named: both regimes have a same-rule selection on D_test
    ri = t1[t1.method == "retrain_indep"].set_index("regime")
    assert (ri.gold_epochs_run == ri.epochs_run).all() and (ri.gold_stop_reason == ri.stop_reason).all()
    assert (t1.gold_epochs_run > 0).all() and t1.groupby("gold_key").gold_epochs_run.nunique().eq(1).all()
    assert (t1.nonmember_rule == "same_selection_on_test").all()
    stamps = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file() and "tables" not in p.parts}
    # MLflow (default: SQLite in the run folder): one parent, one child per cell, nested
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    exp = client.get_experiment_by_name("sragu-smoke")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sragu.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("sragu.role") == "cell"]
    assert len(parents) == 1 and len(children) == 6
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    sr = next(c for c in children if c.data.tags["method"] == "sragu")
    assert {"kl_to_gold", "pd", "mia_auc", "forget_acc", "rte"} <= set(sr.data.metrics)
    assert sr.data.params["sragu.omega_map"] == "gaussian"
    # the effective per-layer multiplier c·ω_ℓ SRAGU applied: one MLflow metric per layer, the same numbers as the
    # row's JSON column, and under the step-preserving default they are not all equal (the reweighting happened)
    row = t1[(t1.method == "sragu") & (t1.cell_key == sr.data.tags["cell_key"])].iloc[0]
    mult = json.loads(row["layer_multipliers"])
    assert mult and {f"multiplier.{k}" for k in mult} <= set(sr.data.metrics)
    assert all(sr.data.metrics[f"multiplier.{k}"] == pytest.approx(v) for k, v in mult.items())
    assert len({round(v, 9) for v in mult.values()}) > 1
    assert (t1[t1.method == "agu"].layer_multipliers == "").all()
    assert {a.path for a in client.list_artifacts(sr.info.run_id)} >= {"alpha_omega.json", "alpha_omega.png"}
    assert {a.path for a in client.list_artifacts(parents[0].info.run_id)} >= {"results.parquet", "report.md"}

    # rerun: nothing trained or evaluated again, same table, no duplicate rows
    second = bench(tmp_path, *SMALL)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "0 to run, 6 already" in second.stdout
    t2 = table(out)
    assert len(t2) == 6
    cols = [c for c in t1.columns if c not in ("git_revision",)]
    assert t2.sort_values("cell_key")[cols].reset_index(drop=True).equals(
        t1.sort_values("cell_key")[cols].reset_index(drop=True))
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
    assert len(client.search_runs([exp.experiment_id], "tags.`sragu.role` = 'cell'")) == 6

    # changing one method's config reruns exactly that method's cells
    third = bench(tmp_path, *SMALL, "--set", "sragu.tau=2.0")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "2 to run, 4 already" in third.stdout
    t3 = table(out)
    changed = set(t3.cell_key) - set(t1.cell_key)
    assert len(t3) == 6 and set(t3[t3.cell_key.isin(changed)].method) == {"sragu"} and len(changed) == 2


def test_failed_cells_are_recorded_and_the_rest_completes(tmp_path):
    # forgetting every class leaves no retain set: the forget-set task raises (after its retry) at run time
    every = "-".join(str(c) for c in range(10))
    r = bench(tmp_path, "--preset", "smoke", "--set", "data.max_train=200", "--set", "methods=[agu,finetune]",
              "--set", f"regimes=[random:0.2,class:{every}]", "--set", "ray.max_retries=1")
    assert r.returncode == 1, r.stderr[-3000:]
    assert "failed 2" in r.stdout
    t = table(tmp_path / "out")
    ok, failed = t[t.status == "ok"], t[t.status == "failed"]
    assert set(ok.regime) == {"random_20pct"} and len(ok) == 2
    assert set(failed.regime) == {f"class_{every}"} and len(failed) == 2
    assert failed.error.str.contains("forget_set.size").all()
    client = MlflowClient(f"sqlite:///{tmp_path}/out/mlflow.db")
    exp = client.get_experiment_by_name("sragu-smoke")
    statuses = sorted(r.info.status for r in client.search_runs([exp.experiment_id], "tags.`sragu.role` = 'cell'"))
    assert statuses == ["FAILED", "FAILED", "FINISHED", "FINISHED"]


def test_s3_store_on_moto(tmp_path, s3_server):
    env = {"AWS_ENDPOINT_URL": s3_server, **AWS_ENV}
    s3 = boto3.client("s3", endpoint_url=s3_server, **{k.lower(): v for k, v in AWS_ENV.items()
                                                       if k != "AWS_DEFAULT_REGION"}, region_name="us-east-1")
    s3.create_bucket(Bucket="bench")
    r = bench(tmp_path, *SMALL, "--set", "methods=[agu]", "--store", "s3://bench/sragu", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="bench", Prefix="sragu/")["Contents"]}
    cells = [k for k in keys if k.startswith("sragu/cells/") and k.endswith(".parquet")]
    assert len(cells) == 2 and "sragu/tables/smoke.parquet" in keys
    assert sum(k.startswith("sragu/artifacts/gold/") for k in keys) == 2
    assert not (tmp_path / "out" / "store").exists()  # nothing went to the local default
    rerun = bench(tmp_path, *SMALL, "--set", "methods=[agu]", "--store", "s3://bench/sragu", env=env)
    assert "0 to run, 2 already" in rerun.stdout


def test_unreachable_s3_and_mlflow_are_one_line_before_any_work(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    r = bench(tmp_path, *SMALL, "--store", "s3://bench/x", env={"AWS_ENDPOINT_URL": closed, **AWS_ENV})
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: store=") and closed in r.stderr
    r = bench(tmp_path, *SMALL, env={"MLFLOW_TRACKING_URI": closed})
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: MLFLOW_TRACKING_URI=")
    r = bench(tmp_path, *SMALL, "--set", f"ray.address={closed.removeprefix('http://')}")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ray.address=")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_mlflow_server(tmp_path, mlflow_server):
    uri, art = mlflow_server
    r = bench(tmp_path, *SMALL, "--set", "methods=[sragu]", env={"MLFLOW_TRACKING_URI": uri})
    assert r.returncode == 0, r.stderr[-3000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("sragu-smoke")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("sragu.role") == "parent")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and {c.data.tags["regime"] for c in children} == {"random_10pct", "high_loss_5pct"}
    for c in children:
        assert c.data.tags["method"] == "sragu" and c.data.tags["cell_key"]
        assert 0.0 <= c.data.metrics["pd"] <= 1.0 and c.data.metrics["kl_to_gold"] >= 0.0
        assert "alpha_omega.png" in {a.path for a in client.list_artifacts(c.info.run_id)}
    assert len(list(art.rglob("alpha_omega.json"))) >= 2  # stored through the server's artifact proxy
    assert not (tmp_path / "out" / "mlflow.db").exists()


def _job_cli_ready(ray: str, dash: int, env: dict, proc: subprocess.Popen, timeout: float) -> None:
    """Wait until the head answers the job API (``ray job list``), or fail with the head's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        r = subprocess.run([ray, "job", "list", "--address", f"http://127.0.0.1:{dash}"], env=env,
                           capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            return
        time.sleep(1)
    raise AssertionError(f"the Ray head did not come up (exit {proc.poll()})")


def _stop_own_head(proc: subprocess.Popen, temp_dir: str) -> None:
    """Stop only the head this test started: its process group (``ray start --block`` ends the processes it
    launched when signalled), then anything still running from its private temp dir.  Never Ray's own stop
    command, which would kill every Ray process on the machine, other people's too."""
    import psutil

    stop_process_group(proc)
    for p in psutil.process_iter(["cmdline"]):
        if temp_dir in " ".join(p.info["cmdline"] or []):
            p.kill()
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_job_submit_against_a_started_head(tmp_path):
    """`ray start --head`, then `ray job submit --working-dir .` exactly as the README says (on a head of its own,
    in a private temp dir, stopped by this test alone)."""
    gcs, dash = free_port(), free_port()
    # the head (and so the job's driver) holds canary credentials: the job API must never show them, which it
    # would if the driver copied AWS_* into its runtime env
    canary = f"canary-secret-{uuid.uuid4().hex}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{sys.prefix}/bin:{os.environ['PATH']}",
           "AWS_ACCESS_KEY_ID": "AKIACANARYJOB", "AWS_SECRET_ACCESS_KEY": canary, "AWS_DEFAULT_REGION": "us-east-1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    ray = f"{sys.prefix}/bin/ray"
    temp_dir = tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    log = (tmp_path / "head.log").open("w")
    # every port of its own: the dashboard agent's defaults (52365 and friends) are taken by any other Ray on the
    # machine, and an agent that cannot bind answers every submission with "No available agent to submit job"
    agent = ["--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
             "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())]
    head = subprocess.Popen([ray, "start", "--head", "--block", "--port", str(gcs), "--dashboard-port", str(dash),
                             "--dashboard-host", "127.0.0.1", "--num-cpus", "2", "--include-dashboard", "true",
                             *agent, "--disable-usage-stats", "--temp-dir", temp_dir], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        job_env = {**env, "RAY_AUTH_MODE": "token"}
        _job_cli_ready(ray, dash, job_env, head, timeout=180)
        out = tmp_path / "out"
        deadline = time.monotonic() + 60
        while True:  # the job API answers `ray job list` a little before the head's job agent takes submissions;
            sub = subprocess.run(  # the server says so ("No available agent ..., try again later"): so do we
                [ray, "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--working-dir", ".",
                 "--runtime-env", "infra/runtime_env.yaml", "--", "python", "pipelines/benchmark.py", *SMALL,
                 "--out", str(out)], cwd=ROOT, env=job_env, capture_output=True, text=True, timeout=600)
            if "No available agent to submit job" not in sub.stdout + sub.stderr or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert sub.returncode == 0, (sub.stdout + sub.stderr)[-4000:]
        assert "succeeded" in sub.stdout + sub.stderr
        listing = subprocess.run([ray, "job", "list", "--address", f"http://127.0.0.1:{dash}"],
                                 env=job_env, capture_output=True, text=True, timeout=60)
        assert "SUCCEEDED" in listing.stdout
        detail = subprocess.run([ray, "list", "jobs", "--detail", "--address", f"http://127.0.0.1:{dash}"],
                                env=job_env, capture_output=True, text=True, timeout=60)
        assert detail.returncode == 0 and "runtime_env" in detail.stdout, detail.stderr[-2000:]  # env is shown
        assert canary not in listing.stdout + detail.stdout + sub.stdout + sub.stderr
        leaked = [str(p) for p in Path(temp_dir).rglob("*") if p.is_file() and not p.is_symlink()
                  and p.suffix in (".log", ".out", ".err", ".json") and canary.encode() in p.read_bytes()]
        assert not leaked, leaked[:5]
        t = table(out)
        assert len(t) == 6 and (t.status == "ok").all()
        assert (t.git_revision == "unknown").all()  # the upload carries no .git (runtime_env excludes)
    finally:
        log.close()
        _stop_own_head(head, temp_dir)
