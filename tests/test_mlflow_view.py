"""MLflow's UI after a benchmark, in a real browser: the runs it opens on, their metric columns, the report.

Runs ``pipelines/benchmark.py`` twice as a user would (the second run finds every cell cached), starts ``mlflow ui``
on the run's SQLite store, and loads the links the run printed in headless Chromium: Playwright driving the
system's ``chromium`` (Debian package ``chromium``), so nothing is downloaded.  Screenshots of the runs table and
of the rendered report are left in the test's tmp folder.

What a wrong setup gets wrong here, each measured on MLflow 3.17 before the fix: the experiment opened on the
GenAI overview with no run in sight; the runs table showed no metric column; ``report.md`` showed each figure
as the text ``[alt](fig.png)``; a cached rerun's parent had no child.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from conftest import BIN, ROOT, _wait_http, free_port, stop_process_group  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from components.io.tracking import ui_link  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.service]

GRID = ["--preset", "smoke", "--smoke", "--set", "methods=[retrain_indep,agu,sragu]"]  # 6 cells
EXPERIMENT = "sragu-smoke-smoke"
HEADLINE = ("avg_gap", "forget_acc", "kl_to_gold")  # metric columns the view must show


def _browser() -> str:
    """The system Chromium for Playwright; skipped with how to install it, failed under SRAGU_CI=1."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        chromium, why = None, "the Python package playwright is missing: pip install playwright"
    else:
        why = "no headless Chromium on PATH: apt-get install -y chromium (Debian)"
    if chromium is None:
        if os.environ.get("SRAGU_CI") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return chromium


def _bench(tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"})
    r = subprocess.run([sys.executable, "pipelines/benchmark.py", "--out", str(tmp_path / "out"), *GRID], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return r


def test_ui_opens_on_the_cells_with_metrics_and_renders_the_report(tmp_path):
    chromium = _browser()
    _bench(tmp_path)
    second = _bench(tmp_path)
    assert "0 to run, 6 already" in second.stdout
    uri = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    client = MlflowClient(uri)
    eid = client.get_experiment_by_name(EXPERIMENT).experiment_id
    assert ui_link(uri, eid) in second.stdout  # the run prints the link (for `mlflow ui` on port 5000)
    runs = client.search_runs([eid])
    parents = sorted((r for r in runs if r.data.tags.get("sragu.role") == "parent"), key=lambda r: r.info.start_time)
    cells = [r for r in runs if r.data.tags.get("sragu.role") == "cell"]
    assert len(parents) == 2 and len(cells) == 6

    # the cached rerun's parent holds the grid; each cell says it was cached and which run computed it
    assert all(c.data.tags["mlflow.parentRunId"] == parents[1].info.run_id for c in cells)
    assert all(c.data.tags["sragu.cached"] == "true" for c in cells)
    assert {c.data.tags["sragu.computed_under"] for c in cells} == {parents[0].info.run_id}
    # a cell logs the inputs that apply to it, floats shown to 6 significant digits
    params = cells[0].data.params
    assert "forget.fraction" in params and "forget.classes" not in params  # smoke's regimes take a fraction
    assert params["model.name"] == "mlp" and "model.mlp_hidden" in params and "model.cnn_fc" not in params
    assert not [v for r in runs for v in r.data.params.values() if re.search(r"\d\.\d{7,}", v)]
    # the report folder sits beside the rendered report.md: the Markdown with its figures and the verdict table
    latest = parents[1].info.run_id
    report_dir = {Path(a.path).name for a in client.list_artifacts(latest, "report")}
    run_dir = sorted(p for p in (tmp_path / "out").glob("smoke-smoke-*") if p.is_dir())[-1]
    local = run_dir / "report" / "report.md"
    figures = re.findall(r"!\[[^\]]*\]\(([^)\s]+)", local.read_text())
    assert figures and report_dir >= {"report.md", "verdict.csv", *figures}

    from playwright.sync_api import sync_playwright

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # ≈0.4 GB instead of 2.3 GB (docs/design.md §9)
    log = tmp_path / "mlflow-ui.log"
    with log.open("w") as fh:
        ui = subprocess.Popen([str(BIN / "mlflow"), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"], cwd=tmp_path, env=env, stdout=fh,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", ui, 90, log)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])  # root in CI containers
            page = browser.new_page(viewport={"width": 1600, "height": 1000})

            page.goto(ui_link(uri, eid, port=port))
            names = sorted(c.info.run_name for c in cells)
            page.get_by_text(names[0], exact=True).first.wait_for(timeout=90_000)
            page.screenshot(path=tmp_path / "runs.png")
            assert "/runs" in page.url and "workflowType=machine_learning" in page.url  # not the GenAI overview
            assert all(page.get_by_text(n, exact=True).count() == 1 for n in names), names
            assert page.get_by_text(parents[1].info.run_name, exact=True).count() == 0  # cells only, listed flat
            headers = set(page.locator("[role=columnheader]").all_inner_texts())
            assert set(HEADLINE) <= headers, sorted(headers)
            assert page.get_by_text("6 matching runs").count() == 1

            page.goto(ui_link(uri, eid, run_id=latest, artifact="report.md", port=port))
            page.get_by_role("heading", name=re.compile("SRAGU benchmark")).first.wait_for(timeout=60_000)
            page.wait_for_function(
                """n => { const a = [...document.querySelectorAll('img[src*="get-artifact"]')];
                         return a.length === n && a.every(e => e.complete && e.naturalWidth > 100); }""",
                arg=len(figures), timeout=60_000)
            page.locator('img[src*="get-artifact"]').first.scroll_into_view_if_needed()
            page.screenshot(path=tmp_path / "report.png")
            shown = [page.locator('img[src*="get-artifact"]').nth(i).get_attribute("src") for i in range(len(figures))]
            assert [re.search(r"path=report%2F([^&]+)", s).group(1) for s in shown] == figures
            assert page.get_by_text(re.compile(r"\[[^\]]*\]\([^)]*\.png\)")).count() == 0  # no figure left as text
            browser.close()
    finally:
        stop_process_group(ui)
