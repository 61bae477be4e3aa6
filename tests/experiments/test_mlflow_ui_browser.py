"""The MLflow UI in a real browser (Debian chromium driven by Playwright) on a finished smoke sweep:
the experiment's runs table, the parent run and its nested children, a child's loss chart, the parent's
results-table artifacts. Screenshots go to the test's tmp dir."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_ui(smoke_sweep, tmp_path_factory):
    """scripts/mlflow_ui.sh --background on the sweep's store; yields the base URL; stops its process group."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    port = _free_port()
    tmp = tmp_path_factory.mktemp("ui")
    pid_file, log_file = tmp / "ui.pgid", tmp / "ui.log"
    cmd = [
        "bash",
        str(REPO / "scripts" / "mlflow_ui.sh"),
        "--background",
        "--port",
        str(port),
        "--backend-store-uri",
        smoke_sweep.tracking_uri,
        "--pid-file",
        str(pid_file),
        "--log-file",
        str(log_file),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    pgid = int(pid_file.read_text()) if pid_file.exists() else None
    try:
        assert proc.returncode == 0, f"{proc.stderr}\n{log_file.read_text() if log_file.exists() else ''}"
        base = f"http://127.0.0.1:{port}"
        assert urllib.request.urlopen(f"{base}/health", timeout=10).read().decode().strip() == "OK"
        yield base
    finally:
        if pgid:
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            for _ in range(50):
                try:
                    os.killpg(pgid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
            else:
                os.killpg(pgid, signal.SIGKILL)


def browse_sweep(base: str, eid: str, parent, child, shots: Path) -> dict[str, str]:
    """The user's path through the UI; returns what it read off the pages. Screenshots into `shots`."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=90_000)
    seen: dict[str, str] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        # classic ML mode (not the GenAI traces view); the assistant panel neither open nor auto-opening
        ml_mode = json.dumps(json.dumps("machine_learning"))
        context.add_init_script(
            f"window.localStorage.setItem('mlflow.workflowType_v1', {ml_mode});"
            "window.localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
            "window.localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
        )
        page = context.new_page()
        page.set_default_timeout(90_000)

        # 1. the experiment's runs table: the parent run; its children once its row is expanded
        page.goto(f"{base}/#/experiments/{eid}/runs?workflowType=machine_learning")
        parent_link = page.get_by_role("link", name=parent.info.run_name, exact=True).first
        expect(parent_link).to_be_visible()
        child_link = page.get_by_role("link", name=child.info.run_name, exact=True).first
        assert child_link.count() == 0 or not child_link.is_visible()  # collapsed
        page.screenshot(path=str(shots / "1_experiment.png"), full_page=True)
        page.get_by_role("row").filter(has=parent_link).first.get_by_role("button").first.click()
        expect(child_link).to_be_visible()
        seen["runs_table"] = page.get_by_role("grid").first.inner_text()
        page.screenshot(path=str(shots / "2_children.png"), full_page=True)

        # 2. a child's loss chart: section "loss", chart "total"
        page.goto(f"{base}/#/experiments/{eid}/runs/{child.info.run_id}/model-metrics")
        expect(page.get_by_text(child.info.run_name).first).to_be_visible()
        expect(page.get_by_text("total", exact=True).first).to_be_visible()
        expect(page.get_by_text(f"{child.info.run_name} (loss/total)").first).to_be_visible()  # the legend
        expect(page.get_by_text("Step", exact=True).first).to_be_visible()  # the plot is drawn (axis title)
        seen["child_metrics"] = page.locator("main").first.inner_text()
        page.screenshot(path=str(shots / "3_child_loss_chart.png"), full_page=True)

        # 3. the parent's results table (markdown) and bar chart (PNG) artifacts
        page.goto(f"{base}/#/experiments/{eid}/runs/{parent.info.run_id}/artifacts/results/table.md")
        expect(page.get_by_text(child.info.run_id).first).to_be_visible()
        seen["table_md"] = page.locator("main").first.inner_text()
        page.screenshot(path=str(shots / "4_parent_table_md.png"), full_page=True)
        page.get_by_text("table.png", exact=True).first.click()  # in the artifact tree
        img = page.get_by_alt_text("results/table.png").first  # the preview is a blob: URL
        expect(img).to_be_visible()
        seen["png_width"] = str(img.evaluate("i => i.naturalWidth"))
        page.screenshot(path=str(shots / "5_parent_table_png.png"), full_page=True)
        browser.close()
    return seen


def test_mlflow_ui_shows_sweep(mlflow_ui, smoke_sweep, tmp_path):
    client = MlflowClient(smoke_sweep.tracking_uri)
    exp = client.get_experiment_by_name(smoke_sweep.experiment)
    parent = client.search_runs([exp.experiment_id], filter_string="tags.`lmp.table` = 'losses'")[0]
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    child = next(r for r in children if r.data.tags["lmp.trial"] == "full-s0" and r.info.status == "FINISHED")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    seen = browse_sweep(mlflow_ui, exp.experiment_id, parent, child, shots)
    # every child run of the sweep is listed under the expanded parent
    for run in children:
        assert run.info.run_name in seen["runs_table"], run.info.run_name
    assert (
        "\nloss\n" in seen["child_metrics"] and f"{child.info.run_name} (loss/total)" in seen["child_metrics"]
    )
    assert "Table 1: pretraining losses" in seen["table_md"] and "All three" in seen["table_md"]
    assert int(seen["png_width"]) > 300
    for name in (
        "1_experiment",
        "2_children",
        "3_child_loss_chart",
        "4_parent_table_md",
        "5_parent_table_png",
    ):
        assert (shots / f"{name}.png").stat().st_size > 5_000
