"""``ray job submit --working-dir .`` keeps its results only where they outlive the job (a real head of its own).

The driver of a submitted job runs in Ray's copy of the working dir (``<session>/runtime_resources/
working_dir_files/_ray_pkg_<hash>``), which Ray deletes once the job's files are garbage-collected.  A relative
``--out`` would put the run folder, the MLflow db and the default store there: the job must fail with exactly one
``error:`` line naming the fix, before any work.  With an absolute ``--out`` the results are where it says after
the job ends.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import ROOT, free_port, stop_process_group

pytestmark = [pytest.mark.slow, pytest.mark.service]

BENCH = ["python", "pipelines/benchmark.py", "--preset", "smoke", "--smoke", "--set", "methods=[retrain_indep,sragu]"]


class Head:
    """``ray start --head --block`` on free ports, in a private temp dir; stopped by :meth:`stop` alone."""

    def __init__(self, log: Path):
        self.ray = f"{sys.prefix}/bin/ray"
        self.dash = free_port()
        self.temp_dir = tempfile.mkdtemp(prefix="rayj", dir="/tmp")  # short: socket paths must fit in 107 bytes
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1",
                    "PATH": f"{sys.prefix}/bin:{os.environ['PATH']}"}
        self.env.pop("MLFLOW_TRACKING_URI", None)
        self.env.pop("RAY_ADDRESS", None)
        # every port of its own: an agent that cannot bind its default port (another Ray on the machine has it)
        # answers every submission with "No available agent to submit job"
        ports = ["--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
                 "--metrics-export-port"]
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [self.ray, "start", "--head", "--block", "--port", str(free_port()), "--dashboard-port", str(self.dash),
             "--dashboard-host", "127.0.0.1", "--num-cpus", "2", "--include-dashboard", "true",
             *(x for p in ports for x in (p, str(free_port()))), "--disable-usage-stats", "--temp-dir",
             self.temp_dir], env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.job_env = {**self.env, "RAY_AUTH_MODE": "token"}  # Ray 2.60 heads require the token for the job API

    def cli(self, command: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """``ray job <command> --address <this head> <args>``."""
        return subprocess.run([self.ray, "job", command, "--address", f"http://127.0.0.1:{self.dash}", *args], cwd=ROOT,
                              env=self.job_env, capture_output=True, text=True, timeout=timeout)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.cli("list", timeout=60).returncode == 0:
                return
            time.sleep(1)
        raise AssertionError(f"the Ray head did not come up (exit {self.proc.poll()})")

    def submit(self, *entrypoint: str) -> tuple[str, subprocess.CompletedProcess]:
        """Submit and wait; retried while the head's job agent is not taking submissions yet (it says so)."""
        deadline = time.monotonic() + 60
        while True:
            sid = f"sragu-test-{uuid.uuid4().hex[:8]}"
            r = self.cli("submit", "--submission-id", sid, "--working-dir", ".", "--runtime-env",
                         "infra/runtime_env.yaml", "--", *entrypoint, timeout=600)
            if "No available agent to submit job" not in r.stdout + r.stderr or time.monotonic() > deadline:
                return sid, r
            time.sleep(2)

    def stop(self) -> None:
        """Its process group (``ray start --block`` ends what it launched when signalled), then anything still
        running from its temp dir; never Ray's own stop command, which would end every Ray on the machine."""
        import psutil

        stop_process_group(self.proc)
        for p in psutil.process_iter(["cmdline"]):
            try:
                if self.temp_dir in " ".join(p.info["cmdline"] or []):
                    p.kill()
            except psutil.Error:
                pass
        self._log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def head(tmp_path):
    h = Head(tmp_path / "head.log")
    try:
        h.wait_ready()
        yield h
    finally:
        h.stop()


def test_relative_out_fails_the_job_with_one_line_and_absolute_out_keeps_the_results(head, tmp_path):
    sid, r = head.submit(*BENCH, "--out", "runs")
    assert r.returncode != 0, (r.stdout + r.stderr)[-3000:]
    assert "failed with exit code 2" in head.cli("status", sid).stdout
    logs = head.cli("logs", sid).stdout.splitlines()  # Ray's own lines, then the driver's output
    start = next(i for i, ln in enumerate(logs) if ln.startswith("Running entrypoint for job"))
    driver = [ln for ln in logs[start + 1:] if ln.strip()]
    assert len(driver) == 1, logs
    assert driver[0].startswith("error: --out='runs' is invalid: allowed an absolute path inside a Ray job ("), logs
    assert "runtime_resources" in driver[0] and "--out /" in driver[0]
    copies = list(Path(head.temp_dir).rglob("working_dir_files/*/pipelines"))
    assert copies and not any((c.parent / "runs").exists() for c in copies)  # nothing was written in the copy

    out = tmp_path / "out"
    sid, r = head.submit(*BENCH, "--out", str(out))
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert f"Job '{sid}' succeeded" in head.cli("status", sid).stdout
    runs = sorted(out.glob("smoke-smoke-*/results.parquet"))
    assert len(runs) == 1
    table = pq.read_table(runs[0]).to_pandas()
    assert len(table) == 4 and (table.status == "ok").all()
    assert len(list((out / "store" / "cells").glob("*.parquet"))) == 4
    assert (out / "mlflow.db").is_file() and (out / "store" / "tables" / "smoke-smoke.parquet").is_file()
