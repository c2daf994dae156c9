"""The command line's discoverability: ``--help`` before heavy imports, ``--list`` from the registries, ``--dry-run``
writing nothing, the note when ``--preset`` is omitted, and relative outputs refused inside a Ray job's copy.

In-process tests load each entry point from its file (as ``python pipelines/x.py`` would) and replace ``ray.init``
by a tripwire, so an input that is wrongly accepted fails at once instead of running a benchmark.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from conftest import ROOT

from components.cli import check_job_paths
from components.config import parse_overrides
from components.execution.plan import plan_cells
from components.execution.tasks import cell_path
from components.io.store import Store
from components.listing import config_keys, preset_names, set_keys
from components.presets import PRESETS, resolve
from sragu_core.config import flatten, to_dict
from sragu_core.evaluate import METRICS
from sragu_core.forget import REGIMES, parse_regime
from sragu_core.methods import METHODS
from sragu_core.training import TrainConfig

_ENTRY = {"benchmark": "pipelines/benchmark.py", "tune": "pipelines/tune.py", "report": "pipelines/report.py"}
_MODULES: dict = {}
SMALL = ["--preset", "smoke", "--smoke", "--set", "methods=[retrain_indep,sragu]"]  # 4 cells
HEAVY = ("torch", "ray", "mlflow", "pandas", "pyarrow", "numpy", "matplotlib", "sragu_core")


def _main(entry: str):
    if entry not in _MODULES:
        spec = importlib.util.spec_from_file_location(f"{entry}_cli_main", ROOT / _ENTRY[entry])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _MODULES[entry] = module
    return _MODULES[entry].main


class RayStarted(BaseException):
    """Raised by the ``ray.init`` tripwire."""


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A working directory in the test's folder, no cluster or tracking variables, ``ray.init`` a tripwire."""
    for k in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "RAY_JOB_CONFIG_JSON_ENV_VAR", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(k, raising=False)

    def tripwire(*args, **kwargs):
        raise RayStarted(f"ray.init(address={kwargs.get('address')!r})")

    monkeypatch.setattr(ray, "init", tripwire)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def _call(entry: str, argv: list[str]) -> int:
    try:
        return _main(entry)(argv)
    except SystemExit as e:
        return e.code


# ------------------------------------------------------------------------------------------------------------ --help
@pytest.mark.parametrize("entry", sorted(_ENTRY))
def test_help_is_answered_before_torch_ray_or_mlflow_load(entry):
    """``--help`` in a fresh interpreter imports none of the heavy packages (they take seconds to load), and the
    help names every preset and points to ``--list``."""
    probe = ("import runpy, sys\n"
             f"sys.argv = [{_ENTRY[entry]!r}, '--help']\n"
             "try:\n"
             f"    runpy.run_path({_ENTRY[entry]!r}, run_name='__main__')\n"
             "except SystemExit as e:\n"
             "    code = e.code\n"
             f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
             "print('RESULT', code, heavy, file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.stderr.strip().splitlines()[-1] == "RESULT 0 []", r.stderr[-2000:]
    if entry != "report":
        assert all(name in r.stdout for name in PRESETS), r.stdout
        assert "--list" in r.stdout


def test_preset_names_read_from_the_source_are_the_registry():
    assert preset_names() == list(PRESETS)


# ------------------------------------------------------------------------------------------------------------ --list
def test_list_methods_names_every_method_with_its_role(sandbox, capsys):
    assert _call("benchmark", ["--list", "methods"]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()[2:]}
    assert set(lines) == set(METHODS)
    assert "gold retrain" in lines["retrain_indep"] and "no-op" in lines["original"] and "unlearning" in lines["sragu"]
    assert "AGU" in lines["agu"]  # the module's opening line


def test_list_regimes_gives_a_syntax_and_an_example_that_parses(sandbox, capsys):
    assert _call("benchmark", ["--list", "regimes"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()[1:]
    a, b = header.index("example"), header.index("needs")  # the syntax column has spaces: cut by position
    assert sorted(r[a:b].strip() for r in rows) == sorted(REGIMES[n].example for n in REGIMES)
    for name in REGIMES:
        assert parse_regime(REGIMES[name].example).regime == name


def test_list_metrics_gives_every_metric_its_direction(sandbox, capsys):
    assert _call("benchmark", ["--list", "metrics"]) == 0
    rows = {ln.split()[0]: ln.split()[1] for ln in capsys.readouterr().out.splitlines()[2:]}
    assert rows == {s.name: s.direction for s in METRICS.values()}


def test_list_presets_gives_the_grid_sizes(sandbox, capsys):
    assert _call("benchmark", ["--list", "presets"]) == 0
    rows = {ln.split()[0]: ln.split()[1:3] for ln in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == set(PRESETS)
    assert rows["default"] == [str(len(plan_cells(resolve("default")))), str(len(plan_cells(resolve("default",
                                                                                                    smoke=True))))]


def test_list_keys_shows_the_preset_values_and_the_overrides(sandbox, capsys):
    assert _call("benchmark", ["--list", "keys", "--preset", "smoke", "--smoke", "--set", "sragu.tau=2.5"]) == 0
    rows = {ln.split()[0]: ln.split()[-1] for ln in capsys.readouterr().out.splitlines()[2:]}
    assert rows["seeds"] == "[0]" and rows["data.max_train"] == "2000" and rows["sragu.tau"] == "2.5"
    assert "train.epochs" not in rows and "retrain.lr" not in rows  # keys the config refuses


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_listed_key_is_accepted_and_its_shown_value_round_trips(preset):
    """Each key ``--list keys`` shows is accepted by ``--set`` and, set to the value shown, gives the same config;
    together the keys cover every leaf of the benchmark config and of every method's config."""
    r = resolve(preset)
    rows = set_keys(r)
    for key, _, value in rows:
        again = resolve(preset, parse_overrides([f"{key}={value}"]))
        assert again.as_dict() == r.as_dict() and again.methods == r.methods, key
    listed = {k for k, _, _ in rows}
    recipe = {f.name for f in dataclasses.fields(TrainConfig)}
    expected = set(flatten(to_dict(r.bench))) - {"train.epochs", "model.name"}  # refused keys
    for name in METHODS:
        expected |= {f"{name}.{k}" for k, _, _ in config_keys(r.methods[name])
                     if not (METHODS[name].retrains and k in recipe)}
    assert listed == expected


@pytest.mark.parametrize("argv, words", [
    (["--list", "bogus"], ["--list", "bogus", "methods", "keys"]),
    (["--list", "keys", "--preset", "nope"], ["preset=", "nope", "smoke"]),
    (["--list", "keys", "--set", "nope=1"], ["nope=", "1", "BenchmarkConfig"]),
    (["--list", "methods", "--dry-run"], ["--dry-run", "--list"]),
])
def test_bad_list_input_is_one_error_line(argv, words, sandbox, capsys):
    assert _call("benchmark", argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert all(w in err for w in words), err


def test_tune_lists_its_own_settings(sandbox, capsys):
    assert _call("tune", ["--list", "tune"]) == 0
    rows = {ln.split()[0] for ln in capsys.readouterr().out.splitlines()[2:]}
    assert {"trials", "protocol", "objective", "trial.num_cpus"} <= rows


# ------------------------------------------------------------------------------------------------------------ --dry-run
def test_dry_run_counts_cached_cells_lists_the_store_once_and_writes_nothing(sandbox, capsys, monkeypatch):
    tmp = sandbox
    out, store_dir = tmp / "out", tmp / "store"
    cells = plan_cells(resolve("smoke", parse_overrides(SMALL[4:]), smoke=True))
    assert len(cells) == 4
    for c in cells[:2]:  # two cells finished earlier; a file of another grid does not count
        (store_dir / cell_path(c.key)).parent.mkdir(parents=True, exist_ok=True)
        (store_dir / cell_path(c.key)).write_bytes(b"x")
    (store_dir / "cells" / "0123456789abcdef.parquet").write_bytes(b"x")
    listed = []
    real_list = Store.list
    monkeypatch.setattr(Store, "list", lambda self, prefix="": listed.append(prefix) or real_list(self, prefix))
    monkeypatch.setattr(Store, "exists", lambda self, key: pytest.fail(f"one existence check per cell ({key})"))
    before = _tree(tmp)

    assert _call("benchmark", [*SMALL, "--dry-run", "--out", str(out), "--store", str(store_dir)]) == 0
    text, err = capsys.readouterr()
    assert err == ""
    assert "= 4 cells" in text and "2 already in the store, 2 to run" in text, text
    assert "1 original, 2 forget sets, 2 golds" in text, text
    assert f"store:  {store_dir}" in text and f"run:    {out}/smoke-smoke-<time>/" in text
    assert f"sqlite:///{out}/mlflow.db" in text
    assert listed == ["cells/"]
    assert _tree(tmp) == before and not out.exists() and not ray.is_initialized()


def test_dry_run_with_a_store_that_does_not_exist_creates_nothing(sandbox, capsys):
    assert _call("benchmark", ["--dry-run", "--out", str(sandbox / "a" / "out")]) == 0
    text = capsys.readouterr().out
    assert "no --preset given" in text and "= 360 cells" in text and "0 already in the store, 360 to run" in text
    assert not (sandbox / "a").exists()


# ------------------------------------------------------------------------------------------------------------ --preset
def test_omitted_preset_is_named_before_the_run_starts(sandbox, capsys):
    """Without ``--preset`` the run says which preset runs and how to pick another, after the checks (so bad
    input stays one line) and before any work; with ``--preset`` it does not."""
    for argv, noted in ((["--set", "methods=[retrain_indep]"], True), (["--preset", "smoke"], False)):
        with pytest.raises(RayStarted):
            _main("benchmark")([*argv, "--out", str(sandbox / "out")])
        lines = capsys.readouterr().out.splitlines()
        notes = [ln for ln in lines if ln.startswith("note: no --preset given")]
        assert len(notes) == int(noted), lines
        if noted:
            assert "'default'" in notes[0] and "24 cells" in notes[0] and "--preset smoke" in notes[0]
            assert "--list presets" in notes[0]


# ------------------------------------------------------------------------------------------------------------ ray job
def _job_copy(tmp: Path, monkeypatch) -> Path:
    """Pretend to be a ``ray job submit`` driver: Ray's job variable set, cwd a working-dir copy."""
    copy = tmp / "session_x" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"working_dir": "gcs://x.zip"}}))
    return copy


@pytest.mark.parametrize("entry, argv, words", [
    ("benchmark", ["--out", "runs"], ["--out=", "runs", "absolute", "runtime_resources", "Ray job"]),
    ("benchmark", [], ["--out=", "runs", "absolute"]),  # the default --out is relative too
    ("benchmark", ["--out", "{abs}", "--store", "store"], ["--store=", "store", "s3://", "absolute"]),
    ("benchmark", ["--out", "{abs}", "--store", "file://st"], ["--store=", "file://st", "s3://"]),
    ("benchmark", ["--out", "runs", "--dry-run"], ["--out=", "runs", "absolute"]),
    ("tune", ["--out", "runs"], ["--out=", "runs", "absolute", "runtime_resources"]),
    ("tune", ["--out", "{abs}", "--store", "rel/store"], ["--store=", "rel/store", "s3://"]),
])
def test_relative_outputs_in_a_ray_job_copy_are_refused(entry, argv, words, sandbox, capsys, monkeypatch):
    copy = _job_copy(sandbox, monkeypatch)
    argv = [a.replace("{abs}", str(sandbox / "out")) for a in argv]
    assert _call(entry, ["--preset", "smoke", "--smoke", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert all(w in err for w in words) and str(copy) in err, err
    assert os.listdir(copy) == []


def test_absolute_outputs_in_a_ray_job_copy_and_relative_ones_elsewhere_are_accepted(sandbox, capsys, monkeypatch):
    _job_copy(sandbox, monkeypatch)
    assert _call("benchmark", [*SMALL, "--dry-run", "--out", str(sandbox / "out"), "--store", str(sandbox / "st")]) == 0
    check_job_paths(str(sandbox / "out"), "s3://my-bucket/sragu")  # no error (a dry run would probe the endpoint)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR")  # the same folder outside a Ray job: a plain relative path
    assert _call("benchmark", [*SMALL, "--dry-run", "--out", "runs"]) == 0
    assert "error" not in capsys.readouterr().err
