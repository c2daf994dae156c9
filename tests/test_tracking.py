"""components.io.tracking against real MLflow stores: a SQLite file, a real `mlflow server`, a dead port.

Everything is read back through a fresh MlflowClient, never through the Tracker that wrote it.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import json
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

from components.io.mlflow_values import display_value, flatten  # noqa: E402
from components.io.tracking import (  # noqa: E402
    CELLS,
    TrackedRun,
    Tracker,
    alpha_omega_figure,
    applicable_params,
    default_tracking_uri,
    resolve_tracking_uri,
    ui_link,
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
    """A cell's MLflow figure is the report's (components.report.plots): the layer without α is marked."""
    fig = alpha_omega_figure(ALPHA_OMEGA)
    ax_a, ax_w = fig.axes
    heights = [b.get_height() for b in ax_a.patches]
    assert heights[0] == 2.4 and heights[2] == 4.1 and not (heights[1] > 0)  # no α bar for fc2
    assert "no α" in [t.get_text() for t in ax_a.texts] and "1 with no α" in fig.get_suptitle()
    assert [b.get_height() for b in ax_w.patches] == [1.3, 1.0, 0.7]
    assert [t.get_text() for t in ax_w.get_xticklabels()] == ["fc1", "fc2 *", "out"]


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


# ---------------------------------------------------------------------- what the UI shows (issue 13)
def test_cell_params_keep_only_what_applies_and_floats_are_rounded():
    base = {"forget.regime": "random", "forget.fraction": 0.1, "forget.classes": (0,), "forget.steps": 1,
            "forget.neighbor_fraction": 0.5, "forget.mem_models": 16, "forget.copies": 1, "forget.clusters": 5,
            "model.name": "mlp", "model.mlp_hidden": (128, 64), "model.cnn_channels": (32, 64), "model.cnn_fc": 128,
            "model.resnet_width": 64, "model.deep_width": 512, "train.lr": 0.01, "sragu.tau": 1.5}
    kept = applicable_params(base, model="cnn_small")  # the cell's model wins over a stale model.name
    assert set(kept) == {"forget.regime", "forget.fraction", "forget.steps", "model.name", "model.cnn_channels",
                         "model.cnn_fc", "train.lr", "sragu.tau"}
    assert kept["model.name"] == "cnn_small"
    cls = applicable_params({**base, "forget.regime": "class"})
    assert {k for k in cls if k.startswith(("forget.", "model."))} == {
        "forget.regime", "forget.classes", "forget.steps", "model.name", "model.mlp_hidden"}
    mem = applicable_params({**base, "forget.regime": "memorised", "forget.mem_subset": 0.7})
    assert {k for k in mem if k.startswith("forget.")} == {"forget.regime", "forget.fraction", "forget.steps",
                                                          "forget.mem_models", "forget.mem_subset"}
    deep = applicable_params(base, model="mlp_planted")
    assert {k for k in deep if k.startswith("model.")} == {"model.name", "model.deep_width"}  # the ones present
    unknown = {**base, "forget.regime": "no_such"}
    assert applicable_params(unknown, model="no_such") == {**unknown, "model.name": "no_such"}  # all kept

    assert display_value(0.06499999999999999) == "0.065" and display_value(2.0) == "2.0"
    assert display_value(1e-05) == "1e-05" and display_value(np.float32(0.1)) == "0.1"
    assert display_value(123456789.0) == "123457000.0" and display_value(3) == "3" and display_value(True) == "True"


def test_experiment_opens_on_a_view_of_the_cells_with_metric_columns(tmp_path):
    uri = default_tracking_uri(tmp_path / "runs")
    tracker = Tracker(uri, EXP)
    parent = tracker.start_parent("smoke-1", {"lr": 0.06499999999999999, "seeds": [0.1234567891, 2]}, {})
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXP)
    tags = exp.tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert "one cell" in tags["mlflow.note.content"]
    view = json.loads(tags["mlflow.sharedViewState.sragu-cells"])
    state = json.loads(view["state"])
    assert view["name"] == CELLS.name and state["searchFilter"] == "tags.`sragu.role` = 'cell'"
    assert state["selectedColumns"][0] == "metrics.`forget_acc`" and "metrics.`avg_gap`" in state["selectedColumns"]
    assert "tags.`method`" in state["selectedColumns"] and state["columnOrder"] == state["selectedColumns"]
    run = client.get_run(parent)
    assert run.data.params == {"lr": "0.065", "seeds": "[0.123457, 2]"}  # shown rounded; config.json keeps all
    assert json.loads(Path(client.download_artifacts(parent, "config.json", str(tmp_path))).read_text())["lr"] == \
        0.06499999999999999
    assert "running" in run.data.tags["mlflow.note.content"]

    # a user's own description survives the next run; an unchanged view is not rewritten
    client.set_experiment_tag(exp.experiment_id, "mlflow.note.content", "mine")
    Tracker(uri, EXP).start_parent("smoke-2", {}, {})
    again = client.get_experiment(exp.experiment_id).tags
    assert again["mlflow.note.content"] == "mine"
    assert again["mlflow.sharedViewState.sragu-cells"] == tags["mlflow.sharedViewState.sragu-cells"]

    eid = exp.experiment_id
    assert ui_link(uri, eid, port=5123) == (f"http://127.0.0.1:5123/#/experiments/{eid}/runs?"
                                            "workflowType=machine_learning&viewStateShareKey=sragu-cells")
    assert ui_link("https://user:pw@mlflow.example.org/prefix/", "7", run_id="abc", artifact="report.md") == \
        "https://mlflow.example.org/prefix/#/experiments/7/runs/abc/artifacts/report.md?workflowType=machine_learning"
    hint = tracker.ui_hint(parent, "report.md")
    assert hint.splitlines()[0] == f"mlflow ui --backend-store-uri {uri} --port 5000 --workers 1"
    assert ui_link(uri, eid) in hint and ui_link(uri, eid, run_id=parent, artifact="report.md") in hint
    assert Tracker(uri, EXP).ui_hint().splitlines() == [hint.splitlines()[0]]  # no id known yet: no request made


def test_markdown_report_is_logged_with_its_figures_served(tmp_path):
    uri = default_tracking_uri(tmp_path / "runs")
    tracker = Tracker(uri, EXP)
    parent = tracker.start_parent("smoke-1", {}, {})
    rep = tmp_path / "run" / "report"
    rep.mkdir(parents=True)
    (rep / "fig01.png").write_bytes(b"\x89PNG fig01")
    (tmp_path / "run" / "outside.png").write_bytes(b"\x89PNG outside")
    md = ("# Bench\n\nopening line\n\n![fig one](fig01.png)\n\n## Section\n\n![up](../outside.png \"t\")\n"
          "![web](https://example.org/x.png) ![gone](missing.png)\n")
    (rep / "report.md").write_text(md)
    tracker.finish_parent(parent, artifacts={"report.md": rep / "report.md", "report": rep},
                          metrics={"cells_ok": 6, "cells_failed": 0})
    client = MlflowClient(uri)
    root = {a.path for a in client.list_artifacts(parent)}
    assert root == {"config.json", "report.md", "report", "outside.png"}
    assert {a.path for a in client.list_artifacts(parent, "report")} == {"report/report.md", "report/fig01.png"}
    served = Path(client.download_artifacts(parent, "report.md", str(tmp_path / "dl"))).read_text()
    assert f"![fig one](http:get-artifact?path=report%2Ffig01.png&run_uuid={parent})" in served
    assert f"![up](http:get-artifact?path=outside.png&run_uuid={parent} \"t\")" in served  # logged beside it
    assert "![web](https://example.org/x.png)" in served and "![gone](missing.png)" in served  # left as they were
    portable = Path(client.download_artifacts(parent, "report/report.md", str(tmp_path / "dl2"))).read_text()
    assert portable == md  # the folder's copy keeps its relative links (for a download)
    note = client.get_run(parent).data.tags["mlflow.note.content"]
    assert note.startswith("**FINISHED** — cells_ok 6 · cells_failed 0") and "opening line" in note
    assert "Section" not in note and "fig01" not in note and "artifact `report.md`" in note

    from components.io.mlflow_view import server_image_links as _server_image_links

    text, extra = _server_image_links("![a](fig01.png)", rep / "report.md", "report.md", "r1", {}, "https")
    assert text == "![a](https:get-artifact?path=fig01.png&run_uuid=r1)" and extra == {"fig01.png": rep / "fig01.png"}


def test_cached_cells_move_under_the_new_parent(tmp_path):
    uri = default_tracking_uri(tmp_path / "runs")
    tracker = Tracker(uri, EXP)
    first = tracker.start_parent("run-1", {}, {})
    ok = tracker.log_cell(first, "k/ok", "ok", {}, {"js": 0.1}, {})
    bad = tracker.log_cell(first, "k/bad", "bad", {}, {}, {"error": "boom"}, status="FAILED")
    tracker.finish_parent(first)
    second = tracker.start_parent("run-2", {}, {})
    assert tracker.adopt_cells(second, ["k/ok", "k/bad", "k/absent"]) == 1  # a FAILED cell is rerun, not moved
    client = MlflowClient(uri)
    t = client.get_run(ok).data.tags
    assert t["mlflow.parentRunId"] == second and t["sragu.cached"] == "true" and t["sragu.computed_under"] == first
    assert client.get_run(bad).data.tags["mlflow.parentRunId"] == first
    assert tracker.adopt_cells(second, ["k/ok"]) == 0  # already there
    third = tracker.start_parent("run-3", {}, {})
    assert tracker.adopt_cells(third, ["k/ok"]) == 1
    t = client.get_run(ok).data.tags
    assert t["mlflow.parentRunId"] == third and t["sragu.computed_under"] == first  # who computed it, kept
    assert tracker.logged_cells() == {"k/ok": "FINISHED", "k/bad": "FAILED"} and tracker.find_cell("k/ok") == ok
    assert client.get_run(ok).data.metrics == {"js": 0.1}
    with TrackedRun(Tracker(uri, EXP), "run-4", {}, {}) as tracked:
        assert tracked.adopt_cells(["k/ok"]) == 1
        assert client.get_run(ok).data.tags["mlflow.parentRunId"] == tracked.parent.run_id


class _Trial:
    """What Ray's MLflowLoggerCallback reads of a Tune trial (hashable, like Tune's)."""

    def __init__(self, tag: str, config: dict, last_result: dict):
        from components.execution.tune_run import TrialName

        self.experiment_tag, self.trial_id, self.config, self.last_result = tag, "ab12_00000", config, last_result
        self.local_path = None
        self.name = TrialName("sragu")(self)

    def __str__(self) -> str:
        return self.name


def test_tune_trials_are_named_and_early_stops_marked(tmp_path, monkeypatch):
    import mlflow

    from components.execution.tune_run import trial_logger

    uri = default_tracking_uri(tmp_path / "runs")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # Ray's logger sets it process-wide; restored afterwards
    client = MlflowClient(uri)
    tracker = Tracker(uri, "sragu-tune-test")
    started = tracker.start_parent("sweep", {}, {"sweep": "sw"})  # the run that started the sweep ...
    client.set_terminated(started, status="KILLED")  # ... was interrupted; a --resume run holds the sweep now
    parent = tracker.start_parent("sweep", {}, {"sweep": "sw"})
    tracker.start_parent("other", {}, {"sweep": "other"})  # a newer sweep of another name is not it
    try:
        cb = trial_logger(uri, "sragu-tune-test", {"mlflow.parentRunId": started, "method": "sragu",
                                                   "sragu.role": "trial"}, "sw")  # as restored from the pickle
        cb.setup()
        full = _Trial("1_eta=0.065", {"eta": 0.06499999999999999}, {"complete": 1, "cells_done": 2})
        cut = _Trial("12_eta=0.3", {"eta": 0.3}, {"complete": 0, "cells_done": 1})
        for t in (full, cut):
            cb.log_trial_start(t)
            cb.log_trial_result(1, t, {"objective": 0.5, "training_iteration": 1})
            cb.log_trial_end(t)
    finally:
        mlflow.set_tracking_uri(None)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("sragu-tune-test")
                                                            .experiment_id], "tags.`sragu.role` = 'trial'")}
    assert set(runs) == {"sragu-trial-1", "sragu-trial-12"}
    done, stopped = runs["sragu-trial-1"], runs["sragu-trial-12"]
    assert done.info.status == "FINISHED" and "asha_stopped" not in done.data.tags
    assert done.data.params == {"eta": "0.065"} and done.data.metrics["objective"] == 0.5
    assert stopped.info.status == "KILLED" and stopped.data.tags["asha_stopped"] == "true"
    assert stopped.data.tags["stop_reason"] == "stopped early by ASHA after 1 cell(s)"
    assert all(r.data.tags["mlflow.parentRunId"] == parent for r in runs.values())
