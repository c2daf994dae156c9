"""Ray faults end to end: a node lost mid-run, a cluster left with no node, a stale address, a running head.

Each test runs ``pipelines/benchmark.py`` as a user would (a subprocess) against a Ray of its own: a
``ray.cluster_utils.Cluster`` (a head without CPUs plus two one-CPU worker nodes, all on this machine) or a
``ray start --head``, each in a private temp dir (``RAY_TMPDIR``) and stopped by the test alone.  Never Ray's
own stop command, which would kill every Ray process on the machine.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, free_port, stop_process_group

pytestmark = [pytest.mark.slow, pytest.mark.service]

# 1 seed, 2 regimes, 3 methods -> 6 cells
SMALL = ["--preset", "smoke", "--set", "methods=[retrain_indep,agu,sragu]"]


def _env(ray_tmp: str, **extra: str) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    e.update({"OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": ray_tmp, **extra})
    return e


def _kill_own(temp_dir: str) -> None:
    """Anything still running from this test's private temp dir (and only that)."""
    for p in psutil.process_iter(["cmdline"]):
        try:
            if f"{temp_dir}/" in " ".join(p.info["cmdline"] or []):
                p.kill()
        except psutil.Error:
            pass


def _listening(session_dir: str) -> dict[str, set[str]]:
    """``{process name: addresses it listens on}`` for the Ray processes of one session."""
    out: dict[str, set[str]] = {}
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            if session_dir in " ".join(p.info["cmdline"] or []):
                ips = {c.laddr.ip for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
                out.setdefault(p.info["name"], set()).update(ips)
        except psutil.Error:
            pass
    return out


@pytest.fixture
def ray_tmp(monkeypatch):
    """A short private Ray temp root (socket paths must fit in 107 bytes), as RAY_TMPDIR of this process too:
    ``Cluster`` records its address under the default temp dir and clears it on shutdown."""
    d = tempfile.mkdtemp(prefix="rtf", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", d)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    try:
        yield d
    finally:
        _kill_own(d)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def cluster(ray_tmp):
    """A head node with no CPUs (the driver's node: the data it puts survives) and two one-CPU worker nodes."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "temp_dir": f"{ray_tmp}/ray",
                                                          "include_dashboard": False})
    try:
        workers = [c.add_node(num_cpus=1) for _ in range(2)]
        c.wait_for_nodes()
        yield c, workers
    finally:
        c.shutdown()


class Bench:
    """``pipelines/benchmark.py`` in the background, its stdout collected line by line as it comes."""

    def __init__(self, out: Path, *args: str, env: dict):
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-u", "pipelines/benchmark.py", "--out", str(out), *args],
                                     cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self.err: list[str] = []
        self._threads = [threading.Thread(target=self._read, args=(s, sink), daemon=True)
                         for s, sink in ((self.proc.stdout, self.lines), (self.proc.stderr, self.err))]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream, sink: list) -> None:
        for line in stream:
            sink.append(line)

    def wait_for(self, prefix: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(ln.startswith(prefix) for ln in self.lines):
            assert self.proc.poll() is None, f"benchmark exited {self.proc.returncode}: {self.tail()}"
            assert time.monotonic() < deadline, f"no {prefix!r} line in {timeout:.0f} s: {self.tail()}"
            time.sleep(0.05)

    def finish(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                stop_process_group(self.proc)
            for t in self._threads:
                t.join(10)
        self.wall = time.monotonic() - self.t0
        return rc

    @property
    def stdout(self) -> str:
        return "".join(self.lines)

    def tail(self) -> str:
        return ("".join(self.lines) + "".join(self.err))[-4000:]


def table(out: Path):
    runs = sorted(p for p in out.glob("smoke-*") if p.is_dir())
    return pq.read_table(runs[-1] / "results.parquet").to_pandas()


def test_losing_one_of_two_worker_nodes_costs_no_cell(tmp_path, cluster):
    c, workers = cluster
    b = Bench(tmp_path / "out", *SMALL, "--set", f"ray.address={c.address}", env=_env(os.environ["RAY_TMPDIR"]))
    b.wait_for("cells 1/", timeout=240)
    c.remove_node(workers[0])  # its running tasks die and are retried, its objects rebuilt from lineage
    assert b.finish(timeout=300) == 0, b.tail()
    assert f"ray: cluster {c.address} (2 CPUs)" in b.stdout
    t = table(tmp_path / "out")
    assert len(t) == 6 and t.cell_key.is_unique and (t.status == "ok").all()


def test_losing_every_worker_node_stalls_in_one_line(tmp_path, cluster):
    c, workers = cluster
    b = Bench(tmp_path / "out", *SMALL, "--set", f"ray.address={c.address}", "--set", "ray.stall_timeout_s=15",
              env=_env(os.environ["RAY_TMPDIR"]))
    b.wait_for("cells 1/", timeout=240)
    t_lost = time.monotonic()
    for w in workers:
        c.remove_node(w)
    rc = b.finish(timeout=180)
    assert rc == 1, b.tail()
    stalled = [ln for ln in b.lines if ln.startswith("stalled:")]
    assert len(stalled) == 1, b.tail()
    assert "(ray.stall_timeout_s=15); the cluster has 0 CPUs, a cell needs 1;" in stalled[0]
    assert "running 0 |" in b.stdout  # the status line followed the lost CPUs
    t = table(tmp_path / "out")
    ok, failed = t[t.status == "ok"], t[t.status == "failed"]
    assert len(t) == 6 and t.cell_key.is_unique and len(ok) >= 1 and len(failed) >= 1
    assert failed.error.str.startswith("stalled: no cell finished in 15 s").all()
    assert f"{len(failed)} cell" in stalled[0]
    assert time.monotonic() - t_lost < 90  # 15 s without progress, then the report; not minutes of waiting


def test_stale_recorded_address_is_one_line_in_seconds(tmp_path, ray_tmp):
    # what `ray start` leaves behind when its head is gone: the address file, pointing at a closed port
    (Path(ray_tmp) / "ray").mkdir()
    stale = f"127.0.0.1:{free_port()}"
    (Path(ray_tmp) / "ray" / "ray_current_cluster").write_text(stale)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "pipelines/benchmark.py", "--out", str(tmp_path / "out"), *SMALL,
                        "--set", "ray.address=auto"], cwd=ROOT, env=_env(ray_tmp), capture_output=True, text=True,
                       timeout=120)
    assert time.monotonic() - t0 < 20
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ray.address='auto' is invalid")
    assert stale in r.stderr and "ray_current_cluster" in r.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_local_run_does_not_join_a_running_head(tmp_path, ray_tmp):
    """A head started with `ray start` records itself as the machine's current cluster under RAY_TMPDIR;
    a run with no address still starts its own instance, on 127.0.0.1, and the head sees no job."""
    from ray._raylet import GcsClient

    port = free_port()
    # no token auth on this head: a driver that looked it up would be let in (what this test rules out)
    env = _env(ray_tmp, PATH=f"{sys.prefix}/bin:{os.environ['PATH']}", RAY_AUTH_MODE="disabled")
    log = (tmp_path / "head.log").open("w")
    head = subprocess.Popen([f"{sys.prefix}/bin/ray", "start", "--head", "--block", "--port", str(port),
                             "--num-cpus", "1", "--include-dashboard", "false", "--disable-usage-stats",
                             "--temp-dir", f"{ray_tmp}/ray"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        record = Path(ray_tmp) / "ray" / "ray_current_cluster"
        deadline = time.monotonic() + 120
        while not record.exists() or not record.read_text().strip():
            assert head.poll() is None and time.monotonic() < deadline, (tmp_path / "head.log").read_text()[-3000:]
            time.sleep(0.2)
        head_address = record.read_text().strip()
        gcs = GcsClient(address=head_address)
        jobs_before = len(gcs.get_all_job_info())
        b = Bench(tmp_path / "out", *SMALL, "--set", "methods=[agu]", env=env)
        b.wait_for("ray: ", timeout=180)
        where = next(ln for ln in b.lines if ln.startswith("ray: "))
        assert where.startswith("ray: local (") and ", 127.0.0.1, session " in where, where
        listening = _listening(where.rsplit("session ", 1)[1].rstrip(")\n"))  # while its cells train
        assert "gcs_server" in listening and "raylet" in listening, listening
        assert {ip for ips in listening.values() for ip in ips} <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening
        assert b.finish(timeout=300) == 0, b.tail()
        assert head_address not in b.stdout and f":{port}" not in where
        assert len(gcs.get_all_job_info()) == jobs_before  # no driver of the run ever connected to the head
        assert record.read_text().strip() == head_address
        assert len(table(tmp_path / "out")) == 2
    finally:
        log.close()
        stop_process_group(head)
