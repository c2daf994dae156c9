"""Secrets never leave the driver: canary credentials and a tracking-server password, searched for everywhere.

A benchmark runs on a local Ray with its own ``RAY_TMPDIR``, an S3 store on ``moto_server`` (which accepts any
key pair) and a real MLflow server reached through ``http://user:<password>@host``.  Afterwards the canary
secret key and the password must appear in none of: stdout/stderr, the run folder (config.json, Parquet,
report), the S3 objects, the MLflow server's database and artifacts, and Ray's session logs — while the run
itself must have used the credentials (the S3 objects exist).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import boto3
import pytest
from conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.service]


def _files_containing(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            try:
                data = p.read_bytes()
            except OSError:
                continue
            hits += [f"{p} ({n.decode()})" for n in needles if n in data]
    return hits


def test_credentials_and_passwords_stay_out_of_ray_logs_outputs_and_mlflow(tmp_path, s3_server, mlflow_server):
    secret, password = f"canary-secret-{uuid.uuid4().hex}", f"canary-pw-{uuid.uuid4().hex[:12]}"
    key_id = "AKIACANARY" + uuid.uuid4().hex[:10].upper()
    creds = {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1"}
    s3 = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id=key_id, aws_secret_access_key=secret,
                      region_name="us-east-1")
    bucket = f"sec-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    uri, art = mlflow_server
    ray_tmp = tempfile.mkdtemp(prefix="rays", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    try:
        env = {**os.environ, **creds, "AWS_ENDPOINT_URL": s3_server, "RAY_TMPDIR": ray_tmp, "OMP_NUM_THREADS": "1",
               "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_TRACKING_URI": uri.replace("http://", f"http://u:{password}@")}
        r = subprocess.run([sys.executable, "pipelines/benchmark.py", "--preset", "smoke", "--set",
                            "methods=[agu]", "--set", "regimes=[random:0.1]", "--store", f"s3://{bucket}/run",
                            "--out", str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        objects = s3.list_objects_v2(Bucket=bucket, Prefix="run/").get("Contents", [])
        assert any(o["Key"].startswith("run/cells/") for o in objects)  # the workers did use the credentials
        needles = [secret.encode(), password.encode()]
        leaked = [line for line in (r.stdout + r.stderr).splitlines() if any(n.decode() in line for n in needles)]
        assert not leaked, leaked[:5]
        assert f"tracking server {uri}" in r.stdout and f"{uri}/#/experiments/" in r.stdout  # shown without its
        # credentials, in the command and in the links that open the runs
        assert not _files_containing(tmp_path / "out", needles)
        for o in objects:
            body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            assert not any(n in body for n in needles), o["Key"]
        assert not _files_containing(Path(art).parent, needles)  # the server's database and artifacts
        logs = Path(ray_tmp)
        assert any(logs.rglob("*.log")) or any(logs.rglob("*.out")), "no Ray session logs were found to search"
        assert not _files_containing(logs, needles)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
