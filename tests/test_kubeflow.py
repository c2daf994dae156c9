"""The Kubeflow pipeline (infra/kubeflow/pipeline.py, components/kubeflow/): its committed YAML, runs under kfp.local
(the local SubprocessRunner: every component in a subprocess of this interpreter, artifacts under ``tmp_path``), and
the RayJob client's contract with the Kubernetes API.

No Kubernetes API server or KubeRay operator can run here.  The rayjob tests talk to a loopback HTTP server that
answers the two RayJob endpoints the way the API server does (status codes, Status bodies, a status that moves
on between polls): they prove our requests, polling, timeouts and error lines, not KubeRay's behaviour.
"""

import base64
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import kfp.local as kfp_local  # the [kubeflow] extra (part of [dev]): a missing one fails here, not a skip
import kubernetes
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import AWS_ENV, ROOT

from components.kubeflow import rayjob
from components.kubeflow.rayjob import RayJobError

pytestmark = pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning")  # our image

PIPELINE_PY = ROOT / "infra" / "kubeflow" / "pipeline.py"
METHODS = ["retrain_indep", "original", "agu", "sragu"]
OVERRIDES = [f"methods=[{','.join(METHODS)}]"]  # 4 methods x 2 regimes = 8 cells, ~25 s of benchmark here
HEADLINE = ("js", "avg_gap", "forget_acc", "test_acc")


@pytest.fixture(scope="module")
def pipeline():
    spec = importlib.util.spec_from_file_location("sragu_kfp_pipeline", PIPELINE_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _init_local(root: Path) -> Path:
    kfp_local.init(runner=kfp_local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    return root


def _tasks(root: Path) -> dict[str, dict]:
    """``{task name: its executor_output.json}`` of the one pipeline run under ``root`` (a failed task: ``{}``)."""
    (run,) = [p for p in root.iterdir() if p.is_dir()]
    out = {}
    for task in run.iterdir():
        f = task / "executor_output.json"
        out[task.name] = json.loads(f.read_text()) if f.is_file() else {}
    return out


def _artifact(task: dict, key: str) -> tuple[Path, dict]:
    (a,) = task["artifacts"][key]["artifacts"]
    return Path(a["uri"]), a.get("metadata", {})


def _env(monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # MLflow in each step's scratch folder
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")


def _check_report(report: Path, markdown: Path) -> None:
    """report.md with the PNGs it links beside it; the published Markdown has each of them inlined, byte-equal."""
    text = (report / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", text)
    assert links and all((report / name).is_file() for name in links)
    inlined = re.findall(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown.read_text())
    assert [base64.b64decode(b) for b in inlined] == [(report / name).read_bytes() for name in links]
    assert not re.search(r"\]\([^)\s]+\.png\)", markdown.read_text())


def _check_metrics(metadata: dict, metrics_file: Path, table) -> None:
    """The Metrics artifact equals the headline numbers recomputed here from the table."""
    ok = table[table.status == "ok"]
    expected = {"cells": len(table), "cells_ok": len(ok), "cells_failed": int((table.status != "ok").sum())}
    for method in ok.method.unique():
        for m in HEADLINE:
            expected[f"{method}.{m}"] = float(ok[ok.method == method][m].mean())
    assert set(metadata) == set(expected)
    assert metadata == pytest.approx(expected, rel=1e-12)
    assert json.loads(metrics_file.read_text()) == metadata


# 1. the committed YAML


def test_committed_yaml_is_a_fresh_compile(pipeline, tmp_path):
    fresh = pipeline.compile_pipeline(tmp_path / "pipeline.yaml")
    assert fresh.read_bytes() == (ROOT / "infra" / "kubeflow" / "pipeline.yaml").read_bytes(), \
        "infra/kubeflow/pipeline.yaml is stale: python infra/kubeflow/pipeline.py --compile"
    text = fresh.read_text()
    assert "pip install" not in text and "image: sragu-bench:0.1.0" in text  # the project's image, as is
    for name in ("preflight", "tune-sweep", "run-benchmark", "publish"):
        assert f"name: comp-{name}\n" in text
    # every step's pod takes the S3 credentials from the Secret and the settings from the ConfigMap, by reference
    docs = list(yaml.safe_load_all(text))
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(docs[0]["deploymentSpec"]["executors"])  # every step
    for spec in executors.values():
        (secret,) = spec["secretAsEnv"]
        assert secret["secretName"] == "sragu-s3" and secret["optional"] is True
        assert {e["envVar"] for e in secret["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        assert spec["configMapAsEnv"][0]["configMapName"] == "sragu-config"
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(docs[0]["root"])  # never a pipeline parameter


# 2. end to end under kfp.local, mode=local


@pytest.fixture(scope="module")
def local_run(pipeline, tmp_path_factory):
    """The pipeline once, mode=local, smoke preset's smoke variant, 4 methods; yields (root, tasks)."""
    mp = pytest.MonkeyPatch()
    _env(mp)
    try:
        root = _init_local(tmp_path_factory.mktemp("kfp") / "root")
        pipeline.sragu_benchmark(preset="smoke", smoke=True, overrides=OVERRIDES, mode="local")
        yield root, _tasks(root)
    finally:
        mp.undo()


@pytest.mark.slow
@pytest.mark.service
def test_local_mode_end_to_end(local_run):
    from components.config import parse_overrides
    from components.execution.plan import plan_cells
    from components.presets import resolve

    _, tasks = local_run
    assert set(tasks) == {"preflight", "run-benchmark-2", "publish-2"}  # the no-tune branch, nothing else
    assert tasks["preflight"]["parameterValues"]["Output"] == "smoke-smoke"
    config = json.loads(_artifact(tasks["preflight"], "config")[0].read_text())
    assert config["config"]["methods"] == METHODS and config["config"]["name"] == "smoke-smoke"

    table_path, _ = _artifact(tasks["run-benchmark-2"], "table")
    table = pq.read_table(table_path).to_pandas()
    planned = plan_cells(resolve("smoke", parse_overrides(OVERRIDES), smoke=True))
    assert len(planned) == 8
    assert sorted(table.cell_key) == sorted(c.key for c in planned)
    assert (table.status == "ok").all()

    report, _ = _artifact(tasks["run-benchmark-2"], "report")
    markdown, _ = _artifact(tasks["publish-2"], "report_md")
    _check_report(report, markdown)
    metrics_file, metadata = _artifact(tasks["publish-2"], "metrics")
    _check_metrics(metadata, metrics_file, table)
    assert metadata["cells_ok"] == 8 and metadata["cells_failed"] == 0


@pytest.mark.slow
@pytest.mark.service
def test_tune_branch_feeds_the_run(pipeline, tmp_path, monkeypatch):
    _env(monkeypatch)
    root = _init_local(tmp_path / "root")
    pipeline.sragu_benchmark(preset="smoke", smoke=True, overrides=["methods=[original,sragu]", "regimes=[random:0.1]"],
                             mode="local", tune=True, tune_settings=["trials=1", "methods=[sragu]"])
    tasks = _tasks(root)
    assert set(tasks) == {"preflight", "tune-sweep", "run-benchmark", "publish"}
    tuned = json.loads(_artifact(tasks["tune-sweep"], "tuned")[0].read_text())
    assert set(tuned["methods"]) == {"sragu"}
    table = pq.read_table(_artifact(tasks["run-benchmark"], "table")[0]).to_pandas()
    assert (table.status == "ok").all() and sorted(table.method) == ["original", "sragu"]
    assert set(table[table.tuned].method) == {"sragu"}  # the run read the tuned file
    assert (table[table.tuned].tuned_seed == tuned["tuned_seed"]).all()
    _, metadata = _artifact(tasks["publish"], "metrics")
    assert metadata["cells_ok"] == 2


def test_headline_metrics_average_ok_cells_and_count_failed_ones(tmp_path):
    import pandas as pd

    from components.kubeflow.steps import headline_metrics, inline_images

    nan = float("nan")
    table = pd.DataFrame({"method": ["sragu", "sragu", "sragu", "agu", "ssd"],
                          "status": ["ok", "ok", "failed", "failed", "ok"],
                          "js": [0.1, 0.3, nan, nan, float("inf")], "avg_gap": [0.2, nan, nan, nan, 0.5],
                          "forget_acc": [1.0, 0.5, 0.0, nan, 0.5], "test_acc": [0.9, 0.7, 0.0, nan, 0.5]})
    assert headline_metrics(table) == pytest.approx({
        "cells": 5, "cells_ok": 3, "cells_failed": 2,  # agu has no ok cell: no agu.* entry; ssd's infinite js: left out
        "sragu.js": 0.2, "sragu.avg_gap": 0.2, "sragu.forget_acc": 0.75, "sragu.test_acc": 0.8,
        "ssd.avg_gap": 0.5, "ssd.forget_acc": 0.5, "ssd.test_acc": 0.5})
    png = b"\x89PNG a"
    (tmp_path / "a.png").write_bytes(png)
    text = "![A](a.png) and ![B](missing.png) and [link](a.png)"
    assert inline_images(text, tmp_path) == (f"![A](data:image/png;base64,{base64.b64encode(png).decode()})"
                                             " and ![B](missing.png) and [link](a.png)")


# 3. a failing preflight fails the run with the benchmark's one error line


def _benchmark_error(args: list[str], tmp_path: Path) -> str:
    p = subprocess.run([sys.executable, "pipelines/benchmark.py", *args, "--out", str(tmp_path / "bench")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    (line,) = p.stderr.strip().splitlines()
    return line


@pytest.mark.slow
@pytest.mark.parametrize("kwargs, cli, expected", [
    (dict(preset="smoke", smoke=True, overrides=["sragu.tau=-1"]),
     ["--preset", "smoke", "--smoke", "--set", "sragu.tau=-1"], None),
    (dict(preset="nope"), ["--preset", "nope"], None),
    (dict(preset="smoke", overrides=["seeds"]), ["--preset", "smoke", "--set", "seeds"], None),
    (dict(preset="smoke", mode="cloud"), None, "error: mode='cloud' is invalid: allowed one of ['local', 'rayjob']"),
    (dict(preset="smoke", mode="rayjob", store="/tmp/somewhere"), None,
     "error: store='/tmp/somewhere' is invalid: allowed s3://bucket[/prefix] with mode=rayjob"),
], ids=["tau-negative", "unknown-preset", "malformed-override", "unknown-mode", "rayjob-local-store"])
def test_bad_input_fails_in_preflight(pipeline, tmp_path, monkeypatch, capsys, kwargs, cli, expected):
    _env(monkeypatch)
    root = _init_local(tmp_path / "root")
    expected = expected or _benchmark_error(cli, tmp_path)  # the same line the benchmark prints
    capsys.readouterr()
    with pytest.raises(RuntimeError, match=r"finished with status .*FAILURE.*Inner task failed: .*preflight"):
        pipeline.sragu_benchmark(**kwargs)
    out = capsys.readouterr().out  # kfp.local prints each task's stdout and stderr, indented
    assert [line.strip() for line in out.splitlines() if line.strip().startswith("error:")] == [expected]
    assert "Traceback" not in out
    assert set(_tasks(root)) == {"preflight"}  # nothing ran after it


# 4. contract test of the RayJob client: a loopback stand-in for the Kubernetes API's rayjobs endpoints.
#    It proves the requests we send, the polling, the timeout and the error lines; not KubeRay's behaviour.


class FakeKube:
    """``POST /apis/ray.io/v1/namespaces/{ns}/rayjobs`` and ``GET .../rayjobs/{name}`` on 127.0.0.1.

    ``statuses``: what successive GETs put under ``status`` (the last repeats); an int answers that HTTP code
    instead.  ``create_error``: (code, reason, message) answered to the POST.  ``on_create(body)``: runs when a
    RayJob is created (a stand-in for the job's work)."""

    def __init__(self, statuses=(), create_error=None, on_create=None):
        self.statuses, self.create_error, self.on_create = list(statuses), create_error, on_create
        self.created, self.gets, self.paths = [], 0, []
        self.jobs: dict[tuple[str, str], dict] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, obj: dict):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str):
                self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                                  "reason": reason, "code": code})

            def do_POST(self):
                fake.paths.append(("POST", self.path))
                m = re.fullmatch(r"/apis/ray\.io/v1/namespaces/([^/]+)/rayjobs", self.path)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not m:
                    return self._status(404, "NotFound", f"no route {self.path}")
                if fake.create_error:
                    return self._status(*fake.create_error)
                fake.created.append((m.group(1), body))
                fake.jobs[(m.group(1), body["metadata"]["name"])] = body
                if fake.on_create:
                    fake.on_create(body)
                self._send(201, body)

            def do_GET(self):
                fake.paths.append(("GET", self.path))
                m = re.fullmatch(r"/apis/ray\.io/v1/namespaces/([^/]+)/rayjobs/([^/]+)", self.path)
                if not m or (m.group(1), m.group(2)) not in fake.jobs:
                    return self._status(404, "NotFound", f'rayjobs.ray.io "{m and m.group(2)}" not found')
                fake.gets += 1
                status = fake.statuses[min(fake.gets, len(fake.statuses)) - 1] if fake.statuses else {}
                if isinstance(status, int):
                    return self._status(status, "ServiceUnavailable", "etcdserver: leader changed")
                self._send(200, {**fake.jobs[(m.group(1), m.group(2))], "status": status})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def api(self):
        return rayjob.custom_objects_api(kubernetes.client.Configuration(host=self.url))


RUNNING = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
DONE = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}
NS, NAME = "sragu", "sragu-smoke-smoke-abc123"


def _body(command: str = "python /app/pipelines/benchmark.py --preset smoke") -> dict:
    return rayjob.build_rayjob(rayjob.default_template(), command, NAME, NS, deadline_s=600)


class FakeClock:
    """``wait``'s clock and sleep: polls happen at t = 0, poll_s, 2·poll_s ... without waiting."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_contract_rayjob_created_and_polled_to_success():
    logs = []
    with FakeKube([{}, {"jobDeploymentStatus": "Initializing"}, RUNNING, RUNNING, DONE]) as kube:
        api = kube.api()
        rayjob.submit(api, _body())
        status = rayjob.wait(api, NAME, NS, timeout_s=60, poll_s=0.01, log=logs.append)
    assert status == DONE and kube.gets == 5
    ((ns, body),) = kube.created
    assert ns == NS and kube.paths[0] == ("POST", f"/apis/ray.io/v1/namespaces/{NS}/rayjobs")
    assert kube.paths[1:] == [("GET", f"/apis/ray.io/v1/namespaces/{NS}/rayjobs/{NAME}")] * 5
    assert body["apiVersion"] == "ray.io/v1" and body["kind"] == "RayJob"
    assert body["metadata"]["name"] == NAME and body["metadata"]["namespace"] == NS
    assert body["spec"]["entrypoint"] == "python /app/pipelines/benchmark.py --preset smoke"
    assert body["spec"]["activeDeadlineSeconds"] == 600
    cluster = body["spec"]["rayClusterSpec"]
    for pod in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        (c,) = pod["template"]["spec"]["containers"]
        assert c["image"] == "sragu-bench:0.1.0"
        assert c["envFrom"] == [{"configMapRef": {"name": "sragu-config"}}, {"secretRef": {"name": "sragu-s3"}}]
    # one log line per status change, not per poll
    assert logs == [f"rayjob {NS}/{NAME}: {a}" for a in ("- / -", "Initializing / -", "Running / RUNNING",
                                                         "Complete / SUCCEEDED")]


def test_contract_failed_job_is_one_line_with_kuberays_message():
    failed = {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed",
              "message": "Job entrypoint command failed with exit code 2, last available logs:\n"
                         "error: sragu.tau=-1.0 is invalid: allowed a number > 0\n"}
    with FakeKube([RUNNING, failed]) as kube:
        api = kube.api()
        rayjob.submit(api, _body())
        with pytest.raises(RayJobError) as e:
            rayjob.wait(api, NAME, NS, timeout_s=60, poll_s=0.01, log=lambda _: None)
    assert str(e.value) == (f"rayjob {NS}/{NAME} ended with jobDeploymentStatus=Failed jobStatus=FAILED: AppFailed "
                            "Job entrypoint command failed with exit code 2, last available logs: "
                            "error: sragu.tau=-1.0 is invalid: allowed a number > 0")
    assert kube.gets == 2


def test_contract_stopped_job_fails():
    with FakeKube([{"jobDeploymentStatus": "Running", "jobStatus": "STOPPED"}]) as kube:
        api = kube.api()
        rayjob.submit(api, _body())
        with pytest.raises(RayJobError, match=r"jobStatus=STOPPED: no message$"):
            rayjob.wait(api, NAME, NS, timeout_s=60, poll_s=0.01, log=lambda _: None)


def test_contract_timeout_after_the_expected_polls():
    clock = FakeClock()
    with FakeKube([RUNNING]) as kube:
        api = kube.api()
        rayjob.submit(api, _body())
        with pytest.raises(RayJobError) as e:
            rayjob.wait(api, NAME, NS, timeout_s=1.0, poll_s=0.25, log=lambda _: None, sleep=clock.sleep,
                        clock=clock)
    assert kube.gets == 5 and clock.t == 1.0  # polls at 0, 0.25, 0.5, 0.75 and 1.0
    assert str(e.value) == (f"rayjob {NS}/{NAME} not finished after 1 s (jobDeploymentStatus=Running "
                            f"jobStatus=RUNNING); it is left to its activeDeadlineSeconds, or stop it now: "
                            f"kubectl -n {NS} delete rayjob {NAME}")


@pytest.mark.parametrize("code, reason, message", [
    (403, "Forbidden", 'rayjobs.ray.io is forbidden: User "system:serviceaccount:sragu:default" cannot create '
                       'resource "rayjobs" in API group "ray.io" in the namespace "sragu"'),
    (409, "AlreadyExists", f'rayjobs.ray.io "{NAME}" already exists'),
])
def test_contract_create_refused(code, reason, message):
    with FakeKube(create_error=(code, reason, message)) as kube:
        with pytest.raises(RayJobError) as e:
            rayjob.submit(kube.api(), _body())
    phrase = {403: "Forbidden", 409: "Conflict"}[code]  # the HTTP reason phrase the client reports
    assert str(e.value) == f"creating rayjob {NS}/{NAME}: {code} {phrase}: {message}"
    assert kube.gets == 0 and "\n" not in str(e.value)


def test_contract_deleted_job_fails_at_once_and_5xx_is_retried():
    with FakeKube([503, RUNNING, DONE]) as kube:  # an API-server blip while polling: logged, polled again
        api = kube.api()
        rayjob.submit(api, _body())
        logs = []
        assert rayjob.wait(api, NAME, NS, timeout_s=60, poll_s=0.01, log=logs.append) == DONE
        assert kube.gets == 3
        assert logs[0] == (f"retrying: reading rayjob {NS}/{NAME}: 503 Service Unavailable: "
                           "etcdserver: leader changed")
        with pytest.raises(RayJobError) as e:  # a 4xx is final
            rayjob.wait(api, "gone", NS, timeout_s=60, poll_s=0.01, log=lambda _: None)
    assert str(e.value) == f'reading rayjob {NS}/gone: 404 Not Found: rayjobs.ray.io "gone" not found'


def test_contract_unreachable_api_is_one_line():
    with FakeKube() as kube:
        url = kube.url
    api = rayjob.custom_objects_api(kubernetes.client.Configuration(host=url))  # nothing listens there now
    with pytest.raises(RayJobError) as e:
        rayjob.submit(api, _body())
    assert str(e.value).startswith(f"creating rayjob {NS}/{NAME}: the Kubernetes API at {url} did not answer (")
    assert "\n" not in str(e.value)


def test_rayjob_body_name_and_entrypoint(tmp_path):
    template = rayjob.default_template()
    before = json.dumps(template, sort_keys=True)
    body = rayjob.build_rayjob(template, "true", "x", "ns")
    assert json.dumps(template, sort_keys=True) == before and "activeDeadlineSeconds" not in body["spec"]
    name = rayjob.job_name("verdict_sequential-smoke_" * 3, "a1b2c3")
    assert len(name) <= 47 and name.startswith("sragu-verdict-sequential-smoke-") and name.endswith("-a1b2c3")
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
    with pytest.raises(RayJobError, match="not a DNS-1123 label"):
        rayjob.build_rayjob(template, "true", "Bad_Name", "ns")
    # files travel base64-encoded: any text survives the shell; the command is shell-quoted
    text = '{"q": "it\'s $HOME `x` \\n"}\n'
    target = tmp_path / "t d" / "tuned.json"
    target.parent.mkdir()
    command = rayjob.entrypoint("benchmark.py", ["--set", "regimes=[random:0.1, class:3]"], {str(target): text})
    write, run = command.split(" && ")
    subprocess.run(["sh", "-c", write], check=True)
    assert target.read_text() == text
    assert shlex.split(run) == ["python3", "/app/pipelines/benchmark.py", "--set", "regimes=[random:0.1, class:3]"]


# 5. mode=rayjob end to end under kfp.local: the fake API above, a real S3 protocol server (moto) as the store


@pytest.mark.slow
@pytest.mark.service
def test_rayjob_mode_end_to_end(pipeline, local_run, s3_server, tmp_path, monkeypatch):
    _, local_tasks = local_run
    table_bytes = _artifact(local_tasks["run-benchmark-2"], "table")[0].read_bytes()
    _env(monkeypatch)
    for k, v in {**AWS_ENV, "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(k, v)
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="kfp-rayjob")

    def job_writes_its_table(body):  # the stand-in for the job: the benchmark's consolidated table in the store
        s3.put_object(Bucket="kfp-rayjob", Key="runs/tables/smoke-smoke.parquet", Body=table_bytes)

    with FakeKube([{}, RUNNING, DONE], on_create=job_writes_its_table) as kube:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": kube.url}}],
            "users": [{"name": "u", "user": {"token": "not-checked"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}]}))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        root = _init_local(tmp_path / "root")
        pipeline.sragu_benchmark(preset="smoke", smoke=True, overrides=OVERRIDES, mode="rayjob",
                                 store="s3://kfp-rayjob/runs", namespace="sragu-test", poll_s=0.05, timeout_s=120)
    tasks = _tasks(root)
    assert set(tasks) == {"preflight", "run-benchmark-2", "publish-2"}
    ((ns, body),) = kube.created
    assert ns == "sragu-test" and body["metadata"]["namespace"] == "sragu-test" and kube.gets == 3
    assert re.fullmatch(r"sragu-smoke-smoke-[0-9a-f]{6}", body["metadata"]["name"])
    assert body["spec"]["activeDeadlineSeconds"] == 120
    assert shlex.split(body["spec"]["entrypoint"]) == [
        "python3", "/app/pipelines/benchmark.py", "--preset", "smoke", "--smoke", "--set", OVERRIDES[0],
        "--out", "/tmp/sragu-runs", "--store", "s3://kfp-rayjob/runs"]
    table_path, _ = _artifact(tasks["run-benchmark-2"], "table")
    assert table_path.read_bytes() == table_bytes  # read back from the store
    report, _ = _artifact(tasks["run-benchmark-2"], "report")  # rebuilt by pipelines/report.py
    markdown, _ = _artifact(tasks["publish-2"], "report_md")
    _check_report(report, markdown)
    metrics_file, metadata = _artifact(tasks["publish-2"], "metrics")
    _check_metrics(metadata, metrics_file, pq.read_table(table_path).to_pandas())
    assert metadata == _artifact(local_tasks["publish-2"], "metrics")[1]
