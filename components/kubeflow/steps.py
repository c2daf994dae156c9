"""The Kubeflow pipeline's steps as plain functions over paths; ``infra/kubeflow/pipeline.py`` wraps each in a
component whose body is one call, so the logic lives (and is tested) here and the compiled YAML stays small.

    preflight  the benchmark's own checks (``resolve`` + ``preflight``) plus the pipeline's mode and store
    tune       ``pipelines/tune.py`` in a subprocess → the tuned-config file
    run        mode=local: ``pipelines/benchmark.py`` on a local Ray in a subprocess → its run folder's
               ``results.parquet`` and ``report/``; mode=rayjob: the same command as a KubeRay RayJob, then the
               store's ``tables/<name>.parquet`` and a report rebuilt from it by ``pipelines/report.py``
    publish    the report as one Markdown file with its images inlined, and the headline metrics

Errors look like the entry points' (``components.cli.run_cli``): bad input is one ``error:`` line on stderr and exit
code 2, a failed RayJob or step one ``error:`` line and exit code 1.  The entry points run as subprocesses, each
with ``OMP_NUM_THREADS=1`` and a Ray temp folder of its own; their output is the step's log.

A benchmark exit code 1 (some cells failed) still publishes in mode=local: the run folder is this run's, and the
failed cells are in the table and counted in the metrics.  In mode=rayjob the job must succeed, because the
step only sees the store's consolidated table, which an exit 1 from a store outage would leave stale.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import components
from components.cli import out_folder  # first of the project: thread defaults before torch loads
from components.config import parse_overrides
from components.execution.plan import code_hash
from components.execution.preflight import package_versions, preflight
from components.io.store import Store, reason
from components.presets import resolve
from sragu_core.errors import ConfigError, check

from . import rayjob
from .rayjob import RayJobError

__all__ = ["HEADLINE", "MODES", "StepError", "headline_metrics", "inline_images", "preflight_step",
           "publish_step", "run_step", "tune_step"]

MODES = ("local", "rayjob")
HEADLINE = ("js", "avg_gap", "forget_acc", "test_acc")  # per method, mean over ok cells


class StepError(RuntimeError):
    """A step could not finish (an entry point crashed, an expected file is missing); one line."""


def _repo() -> Path:
    """The checkout that holds ``pipelines/``: the package's parent (a checkout on ``sys.path``, an editable
    install), else the image's ``/app`` (``pip install .`` puts the package, not ``pipelines/``, in site-packages)."""
    for root in (Path(components.__file__).resolve().parents[1], Path(rayjob.APP)):
        if (root / "pipelines" / "benchmark.py").is_file():
            return root
    raise StepError(f"no pipelines/benchmark.py beside {Path(components.__file__).parent} or in {rayjob.APP}")


def one_line(fn):
    """``fn`` with its failures as one ``error:`` line on stderr: exit 2 for bad input, 1 otherwise."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConfigError, StepError, RayJobError) as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2 if isinstance(e, ConfigError) else 1) from None

    return wrapper


def _common(preset: str, smoke: bool, overrides: list[str]) -> list[str]:
    sets = [a for item in overrides for a in ("--set", item)]
    return ["--preset", preset, *(["--smoke"] if smoke else []), *sets]


def _entry(script: str, args: list[str], ok: tuple[int, ...] = (0,)) -> int:
    """``python pipelines/<script> <args>`` with one thread per task and its own Ray temp folder; exit code 2
    (its ``error:`` line is already on stderr) ends the step with 2, any other code outside ``ok`` with 1."""
    ray_tmp = tempfile.mkdtemp(prefix="kfp_ray_", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": ray_tmp}
    sys.stdout.flush()
    try:
        code = subprocess.run([sys.executable, str(_repo() / "pipelines" / script), *args], env=env).returncode
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if code == 2:
        raise SystemExit(2)
    if code not in ok:
        raise StepError(f"pipelines/{script} exited with code {code} (its output is above)")
    return code


@one_line
def preflight_step(preset: str, smoke: bool, overrides: list[str], store: str, mode: str, config_path: str) -> str:
    """Everything the benchmark checks before it starts, with the same messages; writes the resolved config to
    ``config_path`` and returns the benchmark's name (its table is ``<store>/tables/<name>.parquet``)."""
    resolved = resolve(preset, parse_overrides(list(overrides)), smoke=smoke)
    check(mode in MODES, "mode", mode, f"one of {list(MODES)}")
    if mode == "rayjob":  # the RayJob's results come back through the store; a folder in this pod is not shared
        check(store.startswith("s3://"), "store", store, "s3://bucket[/prefix] with mode=rayjob")
    with tempfile.TemporaryDirectory(prefix="sragu-preflight-") as work:  # preflight writes nothing; the tracker
        out = out_folder(work)                                           # and a scratch store may look here
        prepared = preflight(resolved, store_uri=store or str(out / "store"), out=out)
        header = {"config": resolved.as_dict(), "mode": mode, "store": store or "(a scratch folder per step)",
                  "code_version": code_hash(), "packages": package_versions(),
                  "datasets": sorted(prepared.datasets)}
    text = json.dumps(header, indent=2)
    print(text, flush=True)
    Path(config_path).write_text(text)
    return resolved.bench.name


@one_line
def tune_step(preset: str, smoke: bool, overrides: list[str], store: str, settings: list[str],
              tuned_path: str) -> None:
    """``pipelines/tune.py`` (``settings`` are its ``--tune KEY=VALUE``); copies the tuned file to ``tuned_path``.
    Runs in this step's pod in both modes, on a local Ray."""
    with tempfile.TemporaryDirectory(prefix="sragu-tune-") as work:
        out = Path(work) / "out"
        tune_args = [a for item in settings for a in ("--tune", item)]
        _entry("tune.py", [*_common(preset, smoke, overrides), "--out", str(out),
                           "--store", store or str(Path(work) / "store"), *tune_args])
        made = sorted(out.glob("tuned-*.json"))
        if len(made) != 1:
            raise StepError(f"pipelines/tune.py left {len(made)} tuned-*.json files in its --out (expected 1)")
        shutil.copyfile(made[0], tuned_path)


@one_line
def run_step(mode: str, preset: str, smoke: bool, overrides: list[str], store: str, name: str,
             tuned_path: str | None, table_path: str, report_path: str, *, namespace: str = rayjob.NAMESPACE,
             timeout_s: float = 86400, poll_s: float = 30, api=None) -> None:
    """The benchmark, locally or as a RayJob; its results table goes to ``table_path`` and its report folder
    (``report.md`` and the PNGs it links) to ``report_path``.  ``api``: a ``CustomObjectsApi`` (default: the
    pod's service account or the kubeconfig)."""
    check(mode in MODES, "mode", mode, f"one of {list(MODES)}")
    args = _common(preset, smoke, overrides)
    if mode == "local":
        _run_local(args, store, tuned_path, Path(table_path), Path(report_path))
    else:
        _run_rayjob(args, store, name, tuned_path, Path(table_path), Path(report_path), namespace=namespace,
                    timeout_s=timeout_s, poll_s=poll_s, api=api)


def _run_local(args: list[str], store: str, tuned_path: str | None, table: Path, report: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="sragu-run-") as work:
        out = Path(work) / "runs"
        tuned = ["--tuned", tuned_path] if tuned_path else []
        code = _entry("benchmark.py", [*args, "--out", str(out), "--store", store or str(Path(work) / "store"),
                                       *tuned], ok=(0, 1))
        runs = sorted(p.parent for p in out.glob("*/results.parquet"))
        if len(runs) != 1:
            raise StepError(f"pipelines/benchmark.py left {len(runs)} run folders with a results.parquet (expected 1)")
        if code == 1:
            print("incomplete: the benchmark exited 1 (failed or missing cells); publishing its table as it is",
                  flush=True)
        shutil.copyfile(runs[0] / "results.parquet", table)
        shutil.copytree(runs[0] / "report", report, dirs_exist_ok=True)


def _run_rayjob(args: list[str], store: str, name: str, tuned_path: str | None, table: Path, report: Path, *,
                namespace: str, timeout_s: float, poll_s: float, api) -> None:
    job = rayjob.job_name(name, uuid.uuid4().hex[:6])
    files, tuned = {}, []
    if tuned_path:  # a small JSON file: it travels inside the entrypoint, so the head needs no shared volume
        remote = f"/tmp/{job}-tuned.json"
        files[remote], tuned = Path(tuned_path).read_text(), ["--tuned", remote]
    command = rayjob.entrypoint("benchmark.py", [*args, "--out", "/tmp/sragu-runs", "--store", store, *tuned], files)
    body = rayjob.build_rayjob(rayjob.default_template(), command, job, namespace, deadline_s=int(timeout_s))
    api = api if api is not None else rayjob.custom_objects_api()
    rayjob.submit(api, body)
    print(f"created rayjob {namespace}/{job}: {command}", flush=True)
    rayjob.wait(api, job, namespace, timeout_s=timeout_s, poll_s=poll_s)
    key = f"tables/{name}.parquet"
    try:
        table.write_bytes(Store(store).get_bytes(key))
    except Exception as e:  # noqa: BLE001 — whatever the store says, one line naming the object
        raise StepError(f"{store.rstrip('/')}/{key}: unreadable after rayjob {namespace}/{job} succeeded "
                        f"({reason(e)})") from None
    _entry("report.py", ["--table", str(table), "--out", str(report), "--title", f"SRAGU benchmark: {name}"])


def headline_metrics(table) -> dict[str, float]:
    """Cell counts, and per method the mean of :data:`HEADLINE` over its ok cells (``<method>.<metric>``).
    Missing values are skipped, as in the report's tables; a mean that is still not finite (no value at all, an
    infinite one) is left out, since KFP metrics are finite numbers."""
    ok = table[table["status"] == "ok"]
    out = {"cells": float(len(table)), "cells_ok": float(len(ok)),
           "cells_failed": float((table["status"] != "ok").sum())}
    for method, rows in ok.groupby("method", sort=False):
        for metric in HEADLINE:
            if metric in rows and math.isfinite(value := float(rows[metric].astype(float).mean())):
                out[f"{method}.{metric}"] = value
    return out


def inline_images(markdown: str, folder: Path) -> str:
    """``![alt](fig.png)`` links to files in ``folder`` become ``data:`` URIs, so the report is one file."""

    def data_uri(m: re.Match) -> str:
        path = folder / m.group(2)
        if not path.is_file():
            return m.group(0)
        return f"![{m.group(1)}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"

    return re.sub(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)", data_uri, markdown)


@one_line
def publish_step(table_path: str, report_path: str, markdown_path: str, metrics_path: str) -> dict[str, float]:
    """Writes the self-contained report to ``markdown_path`` and the headline metrics (also returned, for the
    KFP ``Metrics`` artifact's metadata) as JSON to ``metrics_path``."""
    import pyarrow.parquet as pq

    table = pq.read_table(table_path).to_pandas()
    report = Path(report_path)
    if not (report / "report.md").is_file():
        raise StepError(f"{report}: no report.md in the run step's report artifact")
    Path(markdown_path).write_text(inline_images((report / "report.md").read_text(), report))
    metrics = headline_metrics(table)
    Path(metrics_path).write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2), flush=True)
    return metrics
