"""A KubeRay ``RayJob`` (``ray.io/v1``) from Python: its body, its creation, and polling it to the end.

KFP v2 has no resource op for custom resources, so the pipeline's run step (``mode=rayjob``) calls these
functions with the ``kubernetes`` client's ``CustomObjectsApi``: :func:`build_rayjob` fills a template
(:func:`default_template`: the RayJob of ``infra/kuberay/base``, on the project's image) with an entrypoint, a
name and a namespace; :func:`submit` creates it; :func:`wait` polls ``status.jobDeploymentStatus`` /
``status.jobStatus`` until the job ends or a timeout.  Every failure is a :class:`RayJobError` with one line that
names the RayJob: an API error with its HTTP status and reason, an unreachable API server, the timeout, or a job
that ended without SUCCEEDED with KubeRay's status message.

The RayJob body is the manifests' own (``infra/kuberay/base/rayjob.yaml``); the names shared with them
(namespace, ServiceAccount, ConfigMap, Secret, image) are the constants below.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shlex
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["API_VERSION", "CONFIG_MAP", "IMAGE", "KIND", "NAMESPACE", "S3_SECRET", "SERVICE_ACCOUNT",
           "RayJobError", "build_rayjob", "custom_objects_api", "default_template", "entrypoint", "job_name",
           "submit", "wait"]

GROUP, VERSION, PLURAL, KIND = "ray.io", "v1", "rayjobs", "RayJob"
API_VERSION = f"{GROUP}/{VERSION}"
IMAGE = "sragu-bench:0.1.0"  # the project's image: the repository at /app, the package and its extras installed
APP = "/app"
RAY_VERSION = "2.60.0"  # constraints.txt
NAMESPACE, SERVICE_ACCOUNT = "sragu", "sragu-pipeline"  # the pipeline step's identity (a Role on rayjobs)
CONFIG_MAP, S3_SECRET = "sragu-config", "sragu-s3"
MAX_NAME = 47  # KubeRay refuses longer RayJob names: the cluster and service names it derives must fit in 63

DONE_DEPLOYMENT = frozenset({"Complete", "Failed", "ValidationFailed"})
DONE_JOB = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


class RayJobError(RuntimeError):
    """The RayJob could not be created, did not finish in time, or ended without SUCCEEDED; one line."""


def default_template() -> dict:
    """The RayJob of the manifests, ``infra/kuberay/base/rayjob.yaml`` (one source: a head that runs the driver,
    one worker group, /dev/shm, Ray's token from the Secret ``sragu-ray-auth``, S3 keys from ``sragu-s3``,
    non-root), its containers on :data:`IMAGE`, without name and namespace; :func:`build_rayjob` sets those and
    the entrypoint.  Change sizes by editing the returned dict."""
    import yaml

    import components

    path = Path(components.__file__).resolve().parents[1] / "infra" / "kuberay" / "base" / "rayjob.yaml"
    if not path.is_file():
        path = Path(APP) / "infra" / "kuberay" / "base" / "rayjob.yaml"  # the image's copy of the repository
    body = yaml.safe_load(path.read_text())
    body["metadata"] = {k: v for k, v in body.get("metadata", {}).items() if k not in ("name", "namespace")}
    cluster = body["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster.get("workerGroupSpecs", []))]
    for pod in pods:
        for c in pod["spec"]["containers"]:
            if c.get("image", "").split(":")[0] == IMAGE.split(":")[0]:
                c["image"] = IMAGE  # kustomize's images: sets the tag when rendering the manifests
    return body


def job_name(bench: str, suffix: str) -> str:
    """``sragu-<benchmark name>-<suffix>`` as a DNS-1123 label of at most 47 characters."""
    tail = re.sub(r"[^a-z0-9]+", "-", suffix.lower()).strip("-")
    head = re.sub(r"[^a-z0-9]+", "-", f"sragu-{bench}".lower()).strip("-")[:MAX_NAME - len(tail) - 1].rstrip("-")
    return f"{head}-{tail}"


def entrypoint(script: str, args: list[str], files: dict[str, str] | None = None) -> str:
    """The shell command the RayJob runs on its head: ``python3 /app/pipelines/<script> <args>``, after writing
    ``files`` (absolute path → text, e.g. a tuned-config file) there; each travels base64-encoded, so no
    quoting can break it."""
    steps = [f"printf %s {base64.b64encode(text.encode()).decode()} | base64 -d > {shlex.quote(path)}"
             for path, text in (files or {}).items()]
    return " && ".join([*steps, shlex.join(["python3", f"{APP}/pipelines/{script}", *args])])


def build_rayjob(template: dict, entrypoint: str, name: str, namespace: str, *,
                 deadline_s: int | None = None) -> dict:
    """``template`` (unchanged) with apiVersion, kind, name, namespace and entrypoint set; ``deadline_s`` becomes
    ``spec.activeDeadlineSeconds``, so KubeRay itself stops a job the pipeline has stopped waiting for."""
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > MAX_NAME:
        raise RayJobError(f"rayjob name {name!r}: not a DNS-1123 label of at most {MAX_NAME} characters")
    body = copy.deepcopy(template)
    body["apiVersion"], body["kind"] = API_VERSION, KIND
    body.setdefault("metadata", {}).update(name=name, namespace=namespace)
    body.setdefault("spec", {})["entrypoint"] = entrypoint
    if deadline_s is not None:
        body["spec"]["activeDeadlineSeconds"] = int(deadline_s)
    return body


def custom_objects_api(configuration=None):
    """A ``CustomObjectsApi`` on ``configuration``; else on ``$KUBECONFIG`` when it is set (explicit beats
    implicit), the pod's service account in a cluster, or ``~/.kube/config``."""
    from kubernetes import client, config

    if configuration is None:
        configuration = client.Configuration()
        try:
            if os.environ.get("KUBECONFIG") or not os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_kube_config(client_configuration=configuration)
            else:
                config.load_incluster_config(client_configuration=configuration)
        except (config.ConfigException, OSError) as e:
            raise RayJobError(f"no Kubernetes API: neither a usable kubeconfig nor a pod's service account "
                              f"({_one_line(e, 300)})") from None
    return client.CustomObjectsApi(client.ApiClient(configuration))


def _one_line(text: str, keep: int = 800) -> str:
    """Whitespace collapsed; a long text keeps its start and its end (where a job log's error line is)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= keep else f"{flat[:200]} … {flat[-(keep - 203):]}"


def _api_error(e: Exception, what: str, where: str, host: str) -> RayJobError:
    """An ApiException as ``<what> <where>: <status> <reason>: <the API's message>``; anything else (no
    answer) names the host."""
    status = getattr(e, "status", None)
    if status is None or status == 0:  # urllib3 raised: nobody answered
        return RayJobError(f"{what} {where}: the Kubernetes API at {host} did not answer ({_one_line(e, 300)})")
    message = ""
    try:
        message = json.loads(e.body or b"{}").get("message", "")
    except (ValueError, AttributeError):
        message = (e.body or b"").decode(errors="replace") if isinstance(e.body, bytes) else str(e.body or "")
    return RayJobError(f"{what} {where}: {status} {e.reason}" + (f": {_one_line(message, 300)}" if message else ""))


def _host(api) -> str:
    return api.api_client.configuration.host


def submit(api, body: dict) -> dict:
    """Create the RayJob; returns what the API server answered."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    try:
        return api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body, _request_timeout=30)
    except (ApiException, HTTPError) as e:
        raise _api_error(e, "creating rayjob", f"{ns}/{name}", _host(api)) from None


def wait(api, name: str, namespace: str, *, timeout_s: float, poll_s: float,
         log: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic) -> dict:
    """Poll the RayJob until it ends; returns its ``status`` when ``jobStatus`` is SUCCEEDED.

    Ends: ``jobDeploymentStatus`` Complete, Failed or ValidationFailed, or ``jobStatus`` SUCCEEDED, FAILED or
    STOPPED.  A 4xx answer (the job deleted, the permission withdrawn) fails at once; a 5xx or no answer is
    logged and retried until ``timeout_s``, since one API-server restart should not end an hours-long run."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    where = f"{namespace}/{name}"
    deadline, seen, status = clock() + timeout_s, None, {}
    while True:
        try:
            obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, _request_timeout=30)
            status = obj.get("status") or {}
        except (ApiException, HTTPError) as e:
            err = _api_error(e, "reading rayjob", where, _host(api))
            if 400 <= (getattr(e, "status", None) or 0) < 500:
                raise err from None
            log(f"retrying: {err}")
        deployment, job = status.get("jobDeploymentStatus", ""), status.get("jobStatus", "")
        if (deployment, job) != seen:
            seen = (deployment, job)
            log(f"rayjob {where}: {deployment or '-'} / {job or '-'}")
        if deployment in DONE_DEPLOYMENT or job in DONE_JOB:
            if job == "SUCCEEDED" and deployment != "Failed":
                return status
            why = " ".join(str(status[k]) for k in ("reason", "message") if status.get(k)) or "no message"
            raise RayJobError(f"rayjob {where} ended with jobDeploymentStatus={deployment or '-'} "
                              f"jobStatus={job or '-'}: {_one_line(why)}")
        left = deadline - clock()
        if left <= 0:
            raise RayJobError(f"rayjob {where} not finished after {timeout_s:g} s (jobDeploymentStatus="
                              f"{deployment or '-'} jobStatus={job or '-'}); it is left to its activeDeadlineSeconds, "
                              f"or stop it now: kubectl -n {namespace} delete rayjob {name}")
        sleep(min(poll_s, left))
