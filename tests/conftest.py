"""Shared fixtures: real services on 127.0.0.1 (moto's S3 server, an MLflow tracking server).

Both are started by the tests themselves and torn down after the session; nothing here is a mock.
"""

import os
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Every Ray the suite starts — in-process or in a subprocess that inherits this environment — keeps its
# sessions, sockets and "current cluster" record in a private temp root, never in the machine's /tmp/ray
# where other people's clusters live.  Short (Unix socket paths must fit in 107 bytes); tests that need one of
# their own (tests/test_faults_ray.py) set it again.
os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rt", dir="/tmp")

import atexit
import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components.local_servers import free_port, stop_process_group  # noqa: F401 — tests import them from here
from components.local_servers import wait_http as _wait_http

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]

atexit.register(shutil.rmtree, os.environ["RAY_TMPDIR"], ignore_errors=True)
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def s3_bucket_env(endpoint: str, bucket: str):
    """For a ``with`` block: the AWS variables pointing at the moto server ``endpoint``, and ``bucket`` there
    (created when absent); yields ``endpoint``."""
    import boto3

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        for k, v in AWS_ENV.items():
            mp.setenv(k, v)
        client = boto3.client("s3", endpoint_url=endpoint, region_name=AWS_ENV["AWS_DEFAULT_REGION"])
        if bucket not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
            client.create_bucket(Bucket=bucket)
        yield endpoint


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-protocol server (``moto_server``) on 127.0.0.1; yields its endpoint URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}", proc, 30, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(proc)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server (lean flags, docs/design.md §9) on 127.0.0.1; yields (uri, artifact folder)."""
    tmp = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # ≈0.4 GB instead of 2.3 GB
    log = tmp / "server.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{tmp}/srv.db", "--artifacts-destination", str(tmp / "art")],
            env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc, 90, log)
        yield f"http://127.0.0.1:{port}", tmp / "art"
    finally:
        stop_process_group(proc)
