"""The benchmark as a Kubeflow pipeline (KFP v2): preflight → [tune] → run → publish.

    python infra/kubeflow/pipeline.py --compile                 # rewrites infra/kubeflow/pipeline.yaml
    python infra/kubeflow/pipeline.py --compile --out p.yaml

Each step is a Python-function component on the project's image (``sragu-bench:0.1.0``: the repository at /app,
the package with its ``[kubeflow]`` extra installed, so nothing is pip-installed at run time) whose body calls
one function of ``components/kubeflow/steps.py``:

- **preflight** runs the benchmark's own checks (preset, ``overrides`` as ``KEY=VALUE`` strings, store, data,
  tracking) and fails with the benchmark's one ``error:`` line; outputs the resolved config.
- **tune** (``tune=True``) runs ``pipelines/tune.py`` (``tune_settings`` are its ``--tune KEY=VALUE``); its
  tuned-config file goes to the run step's ``--tuned``.
- **run** (``mode``): ``local`` runs ``pipelines/benchmark.py`` on a local Ray inside the step; ``rayjob`` creates
  a KubeRay RayJob in ``namespace`` and polls it (``poll_s``, ``timeout_s``), then reads the store's consolidated
  table (an ``s3://`` store) and rebuilds the report.  Outputs the table (Parquet) and the report folder.
- **publish**: the report as one Markdown artifact (images inlined) and the headline metrics (per method mean
  js, avg_gap, forget_acc, test_acc over ok cells; cell counts) as a ``Metrics`` artifact.

The tuned and untuned paths are two branches (``dsl.If`` / ``dsl.Else``) that each hold run and publish, rather
than one run fed through ``dsl.OneOf``: kfp.local (2.17) resolves ``OneOf`` for parameters only, not artifacts.
Caching is off: the benchmark's store is the cache, and a cached preflight would skip the store's checks.  Every
step's pod takes the store's endpoint, the MLflow address and the S3 credentials from the ConfigMap ``sragu-config``
and the Secret ``sragu-s3`` as environment variables (``kfp-kubernetes``), never from pipeline parameters, which
KFP records in plain text.  Run the steps under the ServiceAccount ``sragu-pipeline`` (it may create RayJobs in
``sragu``).
"""

# no `from __future__ import annotations`: KFP reads the components' annotations as types
import argparse
import sys
from pathlib import Path

from kfp import compiler, dsl, kubernetes
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Output

BASE_IMAGE = "sragu-bench:0.1.0"
YAML = Path(__file__).resolve().with_name("pipeline.yaml")
# what every step's pod gets from the cluster (infra/kuberay/base: configmap.yaml, secret.example.yaml): the store's
# endpoint and credentials and the MLflow server, as environment variables, never as pipeline parameters
CONFIG_MAP, CONFIG_KEYS = "sragu-config", ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
SECRET, SECRET_KEYS = "sragu-s3", ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def _step(task):
    """No caching (the store is the cache), and the cluster's settings and S3 credentials as env (optional, so a
    pipeline run without them, on a local store, still starts; kfp.local ignores this platform config)."""
    task.set_caching_options(False)
    kubernetes.use_config_map_as_env(task, CONFIG_MAP, {k: k for k in CONFIG_KEYS}, optional=True)
    kubernetes.use_secret_as_env(task, SECRET, {k: k for k in SECRET_KEYS}, optional=True)
    return task


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def preflight(preset: str, smoke: bool, overrides: list, store: str, mode: str, config: Output[Artifact]) -> str:
    """The benchmark's checks, with its one-line errors; the resolved config; returns the benchmark's name."""
    from components.kubeflow.steps import preflight_step

    return preflight_step(preset, smoke, overrides, store, mode, config.path)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def tune_sweep(preset: str, smoke: bool, overrides: list, store: str, settings: list, tuned: Output[Artifact]):
    """pipelines/tune.py on a local Ray; the tuned-config file."""
    from components.kubeflow.steps import tune_step

    tune_step(preset, smoke, overrides, store, settings, tuned.path)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def run_benchmark(mode: str, preset: str, smoke: bool, overrides: list, store: str, name: str, namespace: str,
                  timeout_s: int, poll_s: float, table: Output[Dataset], report: Output[Artifact],
                  tuned: Input[Artifact] = None):
    """pipelines/benchmark.py on a local Ray (mode=local) or as a KubeRay RayJob (mode=rayjob)."""
    from components.kubeflow.steps import run_step

    run_step(mode, preset, smoke, overrides, store, name, tuned.path if tuned is not None else None, table.path,
             report.path, namespace=namespace, timeout_s=timeout_s, poll_s=poll_s)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def publish(table: Input[Dataset], report: Input[Artifact], report_md: Output[Markdown], metrics: Output[Metrics]):
    """The report as one Markdown file with its images; the headline metrics."""
    from components.kubeflow.steps import publish_step

    for key, value in publish_step(table.path, report.path, report_md.path, metrics.path).items():
        metrics.log_metric(key, value)


def _run_and_publish(settings: dict, name, tuned=None) -> None:
    run = _step(run_benchmark(**settings, name=name, **({} if tuned is None else {"tuned": tuned})))
    _step(publish(table=run.outputs["table"], report=run.outputs["report"]))


@dsl.pipeline(name="sragu-benchmark", description="SRAGU unlearning benchmark: preflight, optional tuning, "
              "the benchmark on a local Ray or a KubeRay RayJob, its table, report and headline metrics.")
def sragu_benchmark(preset: str = "default", smoke: bool = False, overrides: list = [],  # noqa: B006 (KFP reads
                    store: str = "", mode: str = "local", tune: bool = False,        # defaults from the signature)
                    tune_settings: list = [], namespace: str = "sragu", timeout_s: int = 86400,  # noqa: B006
                    poll_s: float = 30.0):
    """``store`` empty: a scratch folder per step (mode=local only); ``overrides``: ``["sragu.tau=2.0", ...]``."""
    common = dict(preset=preset, smoke=smoke, overrides=overrides, store=store)
    check = _step(preflight(**common, mode=mode))
    settings = dict(**common, mode=mode, namespace=namespace, timeout_s=timeout_s, poll_s=poll_s)
    with dsl.If(tune == True, name="tune"):  # noqa: E712 — a pipeline-channel comparison, not a Python bool
        sweep = _step(tune_sweep(**common, settings=tune_settings).after(check))
        _run_and_publish(settings, check.outputs["Output"], tuned=sweep.outputs["tuned"])
    with dsl.Else(name="no-tune"):
        _run_and_publish(settings, check.outputs["Output"])


def compile_pipeline(path: Path = YAML) -> Path:
    compiler.Compiler().compile(sragu_benchmark, str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compile", action="store_true", help="write the compiled pipeline YAML")
    ap.add_argument("--out", type=Path, default=YAML, help=f"where (default {YAML.relative_to(YAML.parents[2])})")
    args = ap.parse_args(argv)
    if not args.compile:
        ap.print_help()
        return 2
    print(compile_pipeline(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
