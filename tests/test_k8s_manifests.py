"""The KubeRay manifests (``infra/kuberay/``), rendered with kustomize and validated offline.

What this proves: the base and both overlays render; every ``ray.io/v1`` RayJob and RayCluster fits the
``openAPIV3Schema`` of KubeRay v1.7.0's CRDs (read from ``../shared/kuberay-crds/``), made strict the way the
API server's field validation is (an unknown field is an error, not silently pruned), with the schema's defaults
applied before ``required`` is checked; every core kind fits Kubernetes 1.32's schemas (``kubernetes-validate``,
strict); and the content a wrong manifest would get wrong (entrypoint, credentials only through Secret
references, RBAC scope, GPU sizing, ``/dev/shm``, autoscaling).  The negative tests show each validator rejects a
misspelled field, a wrong type and a missing required field.

What it cannot prove: no Kubernetes API server or KubeRay operator can run on the development machine, so the
CRDs' CEL rules (``x-kubernetes-validations``), admission webhooks, scheduling and the operator's reconciliation
are not exercised here.  Apply an overlay to a real cluster (``kubectl apply -k ... --dry-run=server``) for that.
"""

import copy
import importlib
import os
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
KUBERAY = ROOT / "infra" / "kuberay"
CRDS = ROOT.parent / "shared" / "kuberay-crds"  # data shared by the project's worktrees; never copied in
TARGETS = {"base": KUBERAY / "base", "cpu": KUBERAY / "overlays" / "cpu", "gpu": KUBERAY / "overlays" / "gpu"}
K8S_VERSION = "1.32.0"
RAY_KINDS = ("RayJob", "RayCluster")
CORE_KINDS = ("Deployment", "Service", "ConfigMap", "ServiceAccount", "Role", "RoleBinding")
NAMESPACE = "sragu"
SECRET_WORDS = ("SECRET", "PASSWORD", "TOKEN", "ACCESS_KEY", "CREDENTIAL")  # env names that must never hold a value


def _require(ok: bool, why: str) -> None:
    """Skip with one line when an offline tool or data file is missing; under SRAGU_CI=1 that is a failure."""
    if not ok:
        if os.environ.get("SRAGU_CI") == "1":
            pytest.fail(f"{why} (required under SRAGU_CI=1)")
        pytest.skip(why)


# --- rendering ----------------------------------------------------------------------------------------------------


@cache
def _render(target: str) -> tuple[dict, ...]:
    out = subprocess.run(["kubectl", "kustomize", str(TARGETS[target])], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {TARGETS[target]} failed:\n{out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


@pytest.fixture(params=list(TARGETS))
def rendered(request) -> tuple[str, list[dict]]:
    """(target name, a fresh copy of its rendered documents)."""
    _require(shutil.which("kubectl") is not None,
             "kubectl not found: install kubectl (with kustomize) to validate the manifests")
    return request.param, copy.deepcopy(list(_render(request.param)))


def _docs(target: str) -> list[dict]:
    _require(shutil.which("kubectl") is not None,
             "kubectl not found: install kubectl (with kustomize) to validate the manifests")
    return copy.deepcopy(list(_render(target)))


def _one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


# --- CRD schemas, made strict -------------------------------------------------------------------------------------


def _strict(node: dict) -> dict:
    """A copy of an OpenAPI v3 schema node that jsonschema checks the way the API server does.

    Objects with ``properties`` refuse unknown fields (unless ``x-kubernetes-preserve-unknown-fields``), int-or-string
    fields accept either, and ``nullable`` admits null.  Only schema positions are walked: ``default`` and ``enum``
    values are data, and a property may be called ``properties``.
    """
    out = dict(node)
    if "properties" in out:
        out["properties"] = {k: _strict(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [_strict(s) for s in out[key]]
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out and "type" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _fill_defaults(schema: dict, inst) -> None:
    """Apply the schema's ``default`` values in place, as the API server does before validating ``required``."""
    if isinstance(inst, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in inst and "default" in sub:
                inst[name] = copy.deepcopy(sub["default"])
        for name, value in inst.items():
            if name in schema.get("properties", {}):
                _fill_defaults(schema["properties"][name], value)
            elif isinstance(schema.get("additionalProperties"), dict):
                _fill_defaults(schema["additionalProperties"], value)
    elif isinstance(inst, list) and isinstance(schema.get("items"), dict):
        for item in inst:
            _fill_defaults(schema["items"], item)


@cache
def _crd_schema(kind: str) -> dict:
    path = CRDS / f"ray.io_{kind.lower()}s.yaml"
    _require(path.exists(), f"{path} not found: the KubeRay CRDs (shared/kuberay-crds/) are needed to validate {kind}")
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["spec"]["names"]["kind"] == kind
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return _strict(v1["schema"]["openAPIV3Schema"])


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        _require(False, f"{module} not installed: pip install -e '.[dev]' to validate the manifests")


def crd_errors(doc: dict, defaults: bool = True) -> list[str]:
    """Why the API server would refuse this RayJob/RayCluster (as far as the schema says); [] when it is valid."""
    Draft7Validator = _import("jsonschema").Draft7Validator
    schema = _crd_schema(doc["kind"])
    doc = copy.deepcopy(doc)
    if defaults:
        _fill_defaults(schema, doc)
    errors = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
              for e in Draft7Validator(schema).iter_errors(doc)]
    # the CRD leaves metadata open (the API server checks ObjectMeta itself): at least a name
    if not isinstance(doc.get("metadata", {}).get("name"), str) or not doc["metadata"]["name"]:
        errors.append("metadata.name: missing")
    if doc.get("apiVersion") != "ray.io/v1":
        errors.append(f"apiVersion: {doc.get('apiVersion')!r} is not 'ray.io/v1'")
    return errors


def core_error(doc: dict) -> str | None:
    """Why Kubernetes 1.32 would refuse this core object (strict: unknown fields too); None when it is valid."""
    kubernetes_validate = _import("kubernetes_validate")
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return str(e)
    return None


# --- validation ---------------------------------------------------------------------------------------------------


def test_renders_expected_kinds(rendered):
    target, docs = rendered
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(RAY_KINDS + CORE_KINDS), f"{target}: rendered kinds {kinds}"
    assert all(d["metadata"].get("namespace") == NAMESPACE for d in docs), f"{target}: a document outside {NAMESPACE}"
    # secret.example.yaml is never rendered: no Secret, and none of its placeholder values
    assert "REPLACE_ME" not in yaml.safe_dump_all(docs)


def test_ray_kinds_match_kuberay_crds(rendered):
    target, docs = rendered
    for doc in (d for d in docs if d["kind"] in RAY_KINDS):
        assert crd_errors(doc) == [], f"{target}: {doc['kind']} {doc['metadata']['name']}"


def test_core_kinds_match_kubernetes_schemas(rendered):
    target, docs = rendered
    for doc in (d for d in docs if d["kind"] in CORE_KINDS):
        assert core_error(doc) is None, f"{target}: {doc['kind']} {doc['metadata']['name']}: {core_error(doc)}"


def test_secret_example_is_valid_and_placeholder_only():
    docs = [d for d in yaml.safe_load_all((KUBERAY / "base" / "secret.example.yaml").read_text()) if d]
    assert {d["metadata"]["name"] for d in docs} == {"sragu-s3", "sragu-mlflow-db", "sragu-ray-auth"}
    for doc in docs:
        assert doc["kind"] == "Secret" and core_error(doc) is None, core_error(doc)
        assert all("REPLACE_ME" in v for v in doc["stringData"].values()), f"{doc['metadata']['name']}: a real value?"
    listed = yaml.safe_load((KUBERAY / "base" / "kustomization.yaml").read_text())["resources"]
    assert "secret.example.yaml" not in listed


# --- the validators bite ------------------------------------------------------------------------------------------


def _rayjob() -> dict:
    return _one(_docs("cpu"), "RayJob")


def _head_pod(rayjob: dict) -> dict:
    return rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]


def test_crd_rejects_misspelled_field():
    job = _rayjob()
    job["spec"]["shutdownAfterJobFinish"] = job["spec"].pop("shutdownAfterJobFinishes")
    errors = crd_errors(job)
    assert any("shutdownAfterJobFinish' was unexpected" in e for e in errors), errors


def test_crd_rejects_wrong_type():
    job = _rayjob()
    job["spec"]["ttlSecondsAfterFinished"] = "an hour"
    errors = crd_errors(job)
    assert any(e.startswith("spec.ttlSecondsAfterFinished:") and "not of type 'integer'" in e for e in errors), errors


def test_crd_rejects_container_without_name():
    job = _rayjob()
    del _head_pod(job)["containers"][0]["name"]
    errors = crd_errors(job)
    assert any("containers.0: 'name' is a required property" in e for e in errors), errors


def test_crd_rejects_misspelled_field_deep_in_pod_spec():
    job = _rayjob()
    _head_pod(job)["containers"][0]["volumeMount"] = _head_pod(job)["containers"][0].pop("volumeMounts")
    assert any("'volumeMount' was unexpected" in e for e in crd_errors(job))
    cluster = _one(_docs("cpu"), "RayCluster")
    cluster["spec"]["enableInTreeAutoscaling"] = "yes"
    assert any("enableInTreeAutoscaling: 'yes' is not of type 'boolean'" in e for e in crd_errors(cluster))


def test_crd_defaults_fill_required_fields():
    """minReplicas/maxReplicas are required with defaults: the API server accepts a group without them, and so must
    the validator, but only because it applies the defaults first."""
    job = _rayjob()
    group = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    del group["minReplicas"], group["maxReplicas"]
    assert crd_errors(job) == []
    assert any("'maxReplicas' is a required property" in e for e in crd_errors(job, defaults=False))


def test_core_validator_rejects_misspelled_field():
    deployment = _one(_docs("cpu"), "Deployment")
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    error = core_error(deployment)
    assert error is not None and "replica" in error, error
    service = _one(_docs("cpu"), "Service")
    service["spec"]["ports"][0]["port"] = "five thousand"
    assert core_error(service) is not None


# --- content ------------------------------------------------------------------------------------------------------


def _pod_specs(doc: dict) -> list[dict]:
    """The pod specs of a RayJob's or RayCluster's head and worker groups."""
    spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
    return [g["template"]["spec"] for g in [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]]


def _workers(doc: dict) -> list[dict]:
    spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
    return spec["workerGroupSpecs"]


def _containers(doc: dict) -> list[dict]:
    if doc["kind"] in RAY_KINDS:
        return [c for pod in _pod_specs(doc) for c in pod["containers"]]
    return doc["spec"]["template"]["spec"]["containers"]


def _entrypoint(docs: list[dict]) -> tuple[list[str], dict[str, str]]:
    """argv of the RayJob's entrypoint and its --set key=value pairs."""
    argv = shlex.split(_one(docs, "RayJob")["spec"]["entrypoint"])
    sets = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--set")
    return argv, sets


def _flag(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


def test_rayjob_runs_the_benchmark_on_an_s3_store(rendered):
    target, docs = rendered
    argv, _ = _entrypoint(docs)
    assert argv[:2] == ["python", "pipelines/benchmark.py"], argv
    assert (ROOT / argv[1]).exists()
    assert _flag(argv, "--store").startswith("s3://")
    assert _flag(argv, "--out").startswith("/"), "a relative --out lands in the job's temporary working dir"
    spec = _one(docs, "RayJob")["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] > 0
    assert spec["submissionMode"] == "K8sJobMode"


def test_runtime_env_carries_no_credentials(rendered):
    _, docs = rendered
    runtime_env = yaml.safe_load(_one(docs, "RayJob")["spec"]["runtimeEnvYAML"])
    env_vars = runtime_env.pop("env_vars")
    assert runtime_env == {}, f"unexpected runtime env keys {list(runtime_env)}"
    assert not [k for k in env_vars if k.startswith(("AWS_", "MLFLOW_")) or any(w in k for w in SECRET_WORDS)]
    # the same non-secret settings as a `ray job submit --runtime-env infra/runtime_env.yaml`
    assert env_vars == yaml.safe_load((ROOT / "infra" / "runtime_env.yaml").read_text())["env_vars"]


def test_credentials_only_through_secret_references(rendered):
    _, docs = rendered
    for doc in docs:
        if doc["kind"] not in RAY_KINDS + ("Deployment",):
            continue
        for c in _containers(doc):
            for env in c.get("env", []):
                if "value" in env:
                    assert not any(w in env["name"].upper() for w in SECRET_WORDS), f"{c['name']}: {env['name']}"
                    assert not env["value"].startswith(("AKIA", "ASIA")), f"{c['name']}: an AWS key id in {env}"
                if env["name"] in ("AWS_SECRET_ACCESS_KEY", "MLFLOW_BACKEND_STORE_URI"):
                    assert "secretKeyRef" in env.get("valueFrom", {}), f"{c['name']}: {env['name']} not from a Secret"
            secrets = {e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e}
            assert "sragu-s3" in secrets, f"{doc['kind']} {c['name']}: no S3 credentials (Secret sragu-s3)"
    config = _one(docs, "ConfigMap")
    assert not [k for k in config["data"] if any(w in k for w in SECRET_WORDS)], config["data"]


def test_referenced_secrets_are_documented(rendered):
    """Every Secret and key the manifests read is in secret.example.yaml (the `kubectl create secret` guide)."""
    _, docs = rendered
    example = {d["metadata"]["name"]: set(d["stringData"])
               for d in yaml.safe_load_all((KUBERAY / "base" / "secret.example.yaml").read_text()) if d}
    for doc in docs:
        if doc["kind"] in RAY_KINDS:
            auth = (doc["spec"].get("rayClusterSpec") or doc["spec"])["authOptions"]
            assert auth["mode"] == "token" and "auth_token" in example[auth["secretName"]]
        if doc["kind"] not in RAY_KINDS + ("Deployment",):
            continue
        for c in _containers(doc):
            for e in c.get("envFrom", []):
                if "secretRef" in e:
                    assert e["secretRef"]["name"] in example
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in example[ref["name"]], ref


def test_gpu_only_in_the_gpu_overlay(rendered):
    target, docs = rendered
    argv, sets = _entrypoint(docs)
    base_argv, _ = _entrypoint(_docs("base"))
    worker_resources = [c["resources"] for doc in docs if doc["kind"] in RAY_KINDS
                        for g in _workers(doc) for c in g["template"]["spec"]["containers"]]
    head_resources = [pod["containers"][0]["resources"] for doc in docs if doc["kind"] in RAY_KINDS
                      for pod in _pod_specs(doc)[:1]]
    assert not any("nvidia.com/gpu" in r.get(k, {}) for r in head_resources for k in ("requests", "limits"))
    if target == "gpu":
        assert argv[: len(base_argv)] == base_argv, "the gpu entrypoint drifted from the base's"
        assert sets == {"ray.cell.num_gpus": "0.25", "ray.train.num_gpus": "1"}, sets
        for r in worker_resources:
            assert str(r["requests"]["nvidia.com/gpu"]) == str(r["limits"]["nvidia.com/gpu"]) == "1", r
        for doc in (d for d in docs if d["kind"] in RAY_KINDS):
            for g in _workers(doc):
                pod = g["template"]["spec"]
                assert pod.get("nodeSelector") and any(t.get("key") == "nvidia.com/gpu" for t in pod["tolerations"])
        assert all(c["image"].endswith(":0.1.0-cuda") for d in docs if d["kind"] in RAY_KINDS for c in _containers(d))
    else:
        assert not [k for k in sets if "gpu" in k], sets
        assert "nvidia.com/gpu" not in yaml.safe_dump_all(docs)
        assert argv == base_argv


def test_ray_pods_mount_shm_run_as_non_root_and_single_threaded(rendered):
    target, docs = rendered
    for doc in (d for d in docs if d["kind"] in RAY_KINDS):
        for pod in _pod_specs(doc):
            shm = {v["name"] for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"}
            sc = pod["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000, f"{target}: {doc['kind']} {sc}"
            for c in pod["containers"]:
                mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
                assert mounts.get("/dev/shm") in shm, f"{target}: {doc['kind']} {c['name']} has no memory /dev/shm"
                assert {"name": "OMP_NUM_THREADS", "value": "1"} in c["env"]
                assert c["image"].split(":")[0].endswith("sragu-bench")
                configs = {e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e}
                assert "sragu-config" in configs


def test_raycluster_autoscales(rendered):
    _, docs = rendered
    cluster = _one(docs, "RayCluster")
    assert cluster["metadata"]["name"] == "sragu-cluster"
    assert cluster["spec"]["enableInTreeAutoscaling"] is True and cluster["spec"]["autoscalerOptions"]
    for g in _workers(cluster):
        assert 0 <= g["minReplicas"] < g["maxReplicas"], g["groupName"]
    ports = {p["name"]: p["containerPort"] for p in _pod_specs(cluster)[0]["containers"][0]["ports"]}
    assert ports == {"gcs-server": 6379, "dashboard": 8265, "client": 10001}


def test_rbac_is_namespaced_least_privilege(rendered):
    _, docs = rendered
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role = _one(docs, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    resources = set()
    for rule in role["rules"]:
        assert rule["apiGroups"] == ["ray.io"], rule
        assert set(rule["verbs"]) <= {"create", "get", "list", "watch", "delete"}, rule
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        resources |= set(rule["resources"])
    assert "rayjobs" in resources and resources <= {"rayjobs", "rayjobs/status"}, resources
    binding = _one(docs, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "sragu-pipeline", "namespace": NAMESPACE}]
    assert _one(docs, "ServiceAccount")["metadata"]["name"] == "sragu-pipeline"


def test_mlflow_server_matches_the_tracking_uri(rendered):
    _, docs = rendered
    service, deployment = _one(docs, "Service"), _one(docs, "Deployment")
    uri = _one(docs, "ConfigMap")["data"]["MLFLOW_TRACKING_URI"]
    assert uri == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}" == \
        "http://sragu-mlflow:5000"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    (c,) = pod["containers"]
    cmd = c["command"] + c["args"]
    assert cmd[:2] == ["mlflow", "server"] and "--serve-artifacts" in cmd
    assert any(a.startswith("--artifacts-destination=s3://") for a in cmd), cmd
    assert not any("$(" in a or "backend-store-uri" in a for a in cmd), "the database URI belongs in the env"
    (db,) = [e for e in c["env"] if e["name"] == "MLFLOW_BACKEND_STORE_URI"]
    assert db["valueFrom"]["secretKeyRef"] == {"name": "sragu-mlflow-db", "key": "backend-store-uri"}
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health", probe
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items(), "the Service selects no MLflow pod"


def test_pipeline_rayjob_body_is_the_manifests_rayjob_and_matches_the_crd(rendered):
    """The Kubeflow run step (mode=rayjob) creates the manifests' RayJob with its own name and entrypoint: valid
    against the CRD, and everything but those fields equal to the rendered base's RayJob."""
    from components.kubeflow import rayjob

    body = rayjob.build_rayjob(rayjob.default_template(), "python pipelines/benchmark.py --preset smoke",
                               "sragu-smoke-1", "sragu", deadline_s=600)
    assert crd_errors(body) == []
    base = _one(_docs("base"), "RayJob")
    strip = ("entrypoint", "activeDeadlineSeconds")
    assert {k: v for k, v in body["spec"].items() if k not in strip} == \
        {k: v for k, v in base["spec"].items() if k not in strip}
    assert body["metadata"]["name"] == "sragu-smoke-1" and body["spec"]["entrypoint"].endswith("--preset smoke")
