"""components.io.tracking against real MLflow stores: a SQLite file, a real `mlflow server`, a dead port.

Everything is read back through a fresh MlflowClient, never through the Tracker that wrote it.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import json
import math
import socket
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import free_port  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from components.io.tracking import (  # noqa: E402
    Tracker,
    alpha_omega_figure,
    default_tracking_uri,
    flatten,
    resolve_tracking_uri,
)
from sragu_core.errors import ConfigError  # noqa: E402

EXP = "sragu-test"
CONFIG = {"name": "smoke", "train": {"lr": 0.1, "epochs": 2, "opt": {"momentum": 0.9}},
          "seeds": (0, 1), "note": "x" * 7000}
ALPHA_OMEGA = [{"name": "fc1", "alpha": 2.4, "omega": 1.3, "status": "ok"},
               {"name": "fc2", "alpha": float("nan"), "omega": 1.0, "status": "too_few_evals"},
               {"name": "out", "alpha": 4.1, "omega": 0.7, "status": "ok"}]


def _scenario(tracker: Tracker, tmp: Path) -> dict:
    """What a benchmark invocation does: parent, one good and one failed cell, finish with files."""
    tracker.check()
    parent = tracker.start_parent("smoke-1", CONFIG, {"code_version": "abc123", "preset": "smoke"})
    good = tracker.log_cell(
        parent, "mnist_5k/mlp/s0/random:0.1/sragu", "sragu s0", params={"tau": 2.0, "omega": {"map": "linear"}},
        metrics={"forget_acc": 0.5, "test_acc": np.float32(0.875), "diverged": False, "mia_auc": float("nan"),
                 "rte": None, "stop_reason": "max_steps"},
        tags={"method": "sragu", "dataset": "mnist_5k", "model": "mlp", "regime": "random:0.1", "seed": 0},
        tables={"alpha_omega": ALPHA_OMEGA}, figures={"alpha_omega": alpha_omega_figure(ALPHA_OMEGA)})
    bad = tracker.log_cell(
        parent, "mnist_5k/mlp/s0/random:0.1/grad_ascent", "grad_ascent s0", params={"lr": 0.01}, metrics={},
        tags={"method": "grad_ascent", "error": "RuntimeError: boom"}, status="FAILED")
    (tmp / "out").mkdir()
    (tmp / "out" / "cells.parquet").write_bytes(b"PAR1fake")
    (tmp / "out" / "report.md").write_text("# report\n")
    tracker.finish_parent(parent, artifacts={"cells.parquet": tmp / "out" / "cells.parquet",
                                             "report/summary.md": tmp / "out" / "report.md"},
                          metrics={"cells": 2, "cells_failed": 1, "preset": "smoke"})
    return {"parent": parent, "good": good, "bad": bad}


def _verify(client: MlflowClient, ids: dict) -> None:
    exp = client.get_experiment_by_name(EXP)
    assert exp is not None and exp.lifecycle_stage == "active"
    parent = client.get_run(ids["parent"])
    assert parent.info.status == "FINISHED" and parent.info.experiment_id == exp.experiment_id
    p = parent.data.params
    assert p["train.lr"] == "0.1" and p["train.opt.momentum"] == "0.9" and p["seeds"] == "[0, 1]"
    assert len(p["note"]) == 6000  # clipped to MLflow's limit instead of failing the batch
    assert parent.data.tags["sragu.role"] == "parent" and parent.data.tags["code_version"] == "abc123"
    assert parent.data.metrics == {"cells": 2.0, "cells_failed": 1.0} and parent.data.tags["preset"] == "smoke"
    assert {f.path for f in client.list_artifacts(ids["parent"])} == {"config.json", "cells.parquet", "report"}
    assert [f.path for f in client.list_artifacts(ids["parent"], "report")] == ["report/summary.md"]
    cfg = json.loads(Path(client.download_artifacts(ids["parent"], "config.json")).read_text())
    assert cfg["train"]["opt"]["momentum"] == 0.9 and cfg["seeds"] == [0, 1]

    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{ids['parent']}'")
    assert {r.info.run_id for r in children} == {ids["good"], ids["bad"]}
    good = client.get_run(ids["good"])
    assert good.info.status == "FINISHED" and good.info.run_name == "sragu s0"
    assert good.data.metrics == {"forget_acc": 0.5, "test_acc": 0.875, "diverged": 0.0}
    t = good.data.tags
    assert t["mlflow.parentRunId"] == ids["parent"] and t["sragu.role"] == "cell"
    assert t["sragu.cell_key"] == "mnist_5k/mlp/s0/random:0.1/sragu" and t["seed"] == "0"
    assert t["stop_reason"] == "max_steps" and t["sragu.skipped_metrics"] == "mia_auc,rte"
    assert good.data.params == {"tau": "2.0", "omega.map": "linear"}
    files = {f.path: f for f in client.list_artifacts(ids["good"])}
    assert set(files) == {"alpha_omega.json", "alpha_omega.png"} and files["alpha_omega.png"].file_size > 1000
    table = json.loads(Path(client.download_artifacts(ids["good"], "alpha_omega.json")).read_text())
    assert [r["alpha"] for r in table] == [2.4, None, 4.1]  # NaN → null: strict JSON other tools can read
    bad = client.get_run(ids["bad"])
    assert bad.info.status == "FAILED" and bad.data.tags["error"] == "RuntimeError: boom"


def test_flatten_and_uris(tmp_path, monkeypatch):
    assert flatten({"a": {"b": {"c": 1}}, "d": {}, "e": [1]}) == {"a.b.c": 1, "d": {}, "e": [1]}
    with pytest.raises(ValueError, match="a.b"):
        flatten({"a.b": 1, "a": {"b": 2}})
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(Path("runs")) == f"sqlite:///{Path('runs').resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert resolve_tracking_uri(Path("runs")) == "http://mlflow:5000"
    Tracker(default_tracking_uri(tmp_path / "runs"), EXP)
    assert not (tmp_path / "runs").exists()  # construction is free of side effects


def test_sqlite_store_layout(tmp_path, monkeypatch):
    # A bogus global URI and a foreign cwd prove the Tracker uses neither.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    uri = default_tracking_uri(tmp_path / "runs")
    tracker = Tracker(uri, EXP)
    ids = _scenario(tracker, tmp_path)
    client = MlflowClient(uri)
    _verify(client, ids)

    art = tmp_path / "runs" / "mlartifacts"
    assert client.get_experiment_by_name(EXP).artifact_location == art.as_uri()
    assert (art / ids["good"] / "artifacts" / "alpha_omega.png").read_bytes()[:4] == b"\x89PNG"
    assert list((tmp_path / "cwd").iterdir()) == []  # no ./mlruns, no ./mlartifacts

    assert tracker.find_cell("mnist_5k/mlp/s0/random:0.1/sragu") == ids["good"]
    assert tracker.find_cell("mnist_5k/mlp/s0/random:0.1/nope") is None
    assert Tracker(uri, EXP).find_cell("mnist_5k/mlp/s0/random:0.1/grad_ascent") == ids["bad"]

    # A rerun of the failed cell replaces it: one active run per key, the old one soft-deleted.
    fig = plt.figure()
    again = tracker.log_cell(ids["parent"], "mnist_5k/mlp/s0/random:0.1/grad_ascent", "grad_ascent s0",
                             params={"lr": 0.01}, metrics={"forget_acc": 0.1}, tags={}, figures={"curve": fig})
    assert not plt.fignum_exists(fig.number)  # logged figures are closed
    assert tracker.find_cell("mnist_5k/mlp/s0/random:0.1/grad_ascent") == again != ids["bad"]
    assert client.get_run(ids["bad"]).info.lifecycle_stage == "deleted"
    assert client.get_run(again).data.tags["sragu.replaces"] == ids["bad"]
    assert "curve.png" in {f.path for f in client.list_artifacts(again)}

    with pytest.raises(ConfigError, match="status"):
        tracker.log_cell(ids["parent"], "k", "k", {}, {}, {}, status="DONE")
    with pytest.raises(FileNotFoundError):
        tracker.finish_parent(ids["parent"], artifacts={"x.md": tmp_path / "missing.md"})
    client.delete_experiment(client.create_experiment("gone"))
    with pytest.raises(ConfigError, match="experiment='gone'"):
        Tracker(uri, "gone").check()


def test_alpha_omega_figure_marks_missing_alpha():
    fig = alpha_omega_figure(ALPHA_OMEGA)
    ax_a, ax_w = fig.axes
    heights = [b.get_height() for b in ax_a.patches]
    assert heights[0] == 2.4 and math.isnan(heights[1]) and heights[2] == 4.1
    assert [t.get_text() for t in ax_a.texts] == ["n/a"] and "1 layer(s) without α" in ax_a.get_title()
    assert [b.get_height() for b in ax_w.patches] == [1.3, 1.0, 0.7]
    assert [t.get_text() for t in ax_w.get_xticklabels()] == ["fc1", "fc2", "out"]


def test_check_unreachable_server_fails_fast():
    # A listening socket nobody answers: construction must not even connect, check() must time out in ~5 s.
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        port = srv.getsockname()[1]
        tracker = Tracker(f"http://127.0.0.1:{port}", EXP)
        srv.settimeout(0.3)
        with pytest.raises(TimeoutError):
            srv.accept()  # nothing was sent by the constructor
        t0 = time.monotonic()
        with pytest.raises(ConfigError) as err:
            tracker.check()
        assert time.monotonic() - t0 < 10 and "no answer within 5 s" in str(err.value)
    closed = Tracker(f"http://user:secret@127.0.0.1:{free_port()}", EXP)
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as err:
        closed.check()
    assert time.monotonic() - t0 < 10
    assert err.value.field == "MLFLOW_TRACKING_URI" and "Connection refused" in str(err.value)
    assert "secret" not in str(err.value)
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the fail-fast settings were scoped


@pytest.mark.slow
@pytest.mark.service
def test_real_server(mlflow_server, tmp_path):
    uri, art = mlflow_server
    tracker = Tracker(uri, EXP)
    ids = _scenario(tracker, tmp_path)
    client = MlflowClient(uri)
    _verify(client, ids)
    assert client.get_experiment_by_name(EXP).artifact_location.startswith("mlflow-artifacts:")
    exp_id = client.get_experiment_by_name(EXP).experiment_id  # the server is shared by the session's tests
    stored = list((art / exp_id).rglob("alpha_omega.png"))  # uploaded through the server's proxy
    assert len(stored) == 1 and ids["good"] in str(stored[0])
    assert tracker.find_cell("mnist_5k/mlp/s0/random:0.1/sragu") == ids["good"]


_INIT = """
import sys
sys.path.insert(0, {root!r})
from components.io.tracking import Tracker
t = Tracker({uri!r}, "race")
print(t.experiment_id())
"""


def test_two_drivers_creating_one_new_sqlite_store_both_succeed(tmp_path):
    """Two drivers on a *new* SQLite database: its creation and migration are serialised (a folder lock), and the
    experiment one of them creates is the other's too.  Without the lock one driver failed with MLflow's
    "Online migration expected to match one row" (measured in tests/test_faults.py's concurrent-runs test)."""
    import subprocess
    import sys

    from conftest import ROOT

    for attempt in range(1):  # without the lock the first attempt already failed here
        uri = f"sqlite:///{tmp_path / f'db{attempt}' / 'mlflow.db'}"
        code = _INIT.format(root=str(ROOT), uri=uri)
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), [e[-1500:] for _, e in outs]
        ids = {o.strip().splitlines()[-1] for o, _ in outs}
        assert len(ids) == 1  # one experiment, shared
