"""The MLflow UI in a real browser (Debian chromium driven by Playwright) on a finished smoke sweep, along
the links the sweep prints, in a fresh browser profile (no stored GenAI / Model training choice):

1. the experiment opens in the model-training view (side nav: Runs, Model registry; not the GenAI view's
   "Evaluation runs"), the parent run and, expanded, its children with readable names (row · seed);
2. the parent run's Description: the verdict on the paper's ordering first, our rows beside the paper's
   numbers, the bar chart shown inline (the `results/table.png` artifact);
3. a pretrained child run: its Description (probe scores, the probe over pretraining, each loss term beside
   its chance level, the loss plot inline) and its Model metrics: a term's loss chart with its chance-level
   chart right below (searched by the term's name), the probe scores against the pretraining step;
4. the parent's results-table artifacts (markdown and PNG previews).
Screenshots go to the test's tmp dir."""

from __future__ import annotations

import os
import re
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
PRINTED = "http://127.0.0.1:5000"  # the host the sweep's hint names (the test's server has its own port)


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


def printed_links(stdout: str) -> tuple[str, str]:
    """The parent run's and the experiment's links from the sweep's closing hint (host and port stripped)."""
    run = re.search(rf"then browse {re.escape(PRINTED)}(/#/experiments/\S+)", stdout)
    runs = re.search(rf"all runs: {re.escape(PRINTED)}(/#/experiments/[^\s)]+)", stdout)
    assert run and runs, stdout[-2000:]
    return run.group(1), runs.group(1)


def _image_width(page, src_part: str) -> int:
    """naturalWidth of the first <img> whose src contains `src_part`, once it has loaded (0 if broken)."""
    img = page.locator(f"img[src*='{src_part}']").first
    img.scroll_into_view_if_needed()
    page.wait_for_function(
        "s => { const i = document.querySelector(`img[src*='${s}']`); return i && i.complete; }", arg=src_part
    )
    return int(img.evaluate("i => i.naturalWidth"))


def _expand_description(page) -> str:
    """Click the Description's "Show more" (if it is folded) and return the Description's text."""
    from playwright.sync_api import expect

    more = page.get_by_text("Show more", exact=True)
    if more.count():
        more.first.click()
    note = page.get_by_test_id("note-editor-preview-content").first
    expect(note).to_be_visible()
    return note.inner_text()


def browse_sweep(base: str, links: tuple[str, str], eid: str, parent, child, shots: Path) -> dict[str, str]:
    """The user's path through the UI; returns what it read off the pages. Screenshots into `shots`."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=90_000)
    seen: dict[str, str] = {}
    run_link, runs_link = links
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        # a fresh profile: no stored workflow type (the view must come from the link); only the assistant
        # side panel is kept closed, so that it does not cover the pages in the screenshots
        context.add_init_script(
            "window.localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
            "window.localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
        )
        page = context.new_page()
        page.set_default_timeout(90_000)

        # 1. the experiment, as printed: the model-training view, the parent run; its children when expanded
        page.goto(base + runs_link)
        parent_link = page.get_by_role("link", name=parent.info.run_name, exact=True).first
        expect(parent_link).to_be_visible()
        nav = page.locator("nav, aside").first
        seen["view"] = page.locator("body").inner_text()
        seen["url"] = page.url
        seen["nav"] = nav.inner_text() if nav.count() else ""
        child_link = page.get_by_role("link", name=child.info.run_name, exact=True).first
        assert child_link.count() == 0 or not child_link.is_visible()  # collapsed
        page.screenshot(path=str(shots / "1_experiment.png"), full_page=True)
        page.get_by_role("row").filter(has=parent_link).first.get_by_role("button").first.click()
        expect(child_link).to_be_visible()
        seen["runs_table"] = page.get_by_role("grid").first.inner_text()
        page.screenshot(path=str(shots / "2_children.png"), full_page=True)

        # 2. the parent run, as printed: Description = verdict, ours beside the paper's, the chart inline
        page.goto(base + run_link)
        expect(page.get_by_text("Verdict:").first).to_be_visible()  # above the fold, before "Show more"
        seen["parent_view"] = page.locator("body").inner_text()
        seen["parent_note"] = _expand_description(page)
        seen["parent_chart_width"] = str(_image_width(page, "table.png"))
        page.screenshot(path=str(shots / "3_parent_description.png"), full_page=True)

        # 3. a pretrained child: Description (probe, probe curve, loss per term beside chance), metrics
        ml = "?workflowType=machine_learning"
        page.goto(f"{base}/#/experiments/{eid}/runs/{child.info.run_id}{ml}")
        expect(page.get_by_text(child.info.run_name).first).to_be_visible()
        seen["child_note"] = _expand_description(page)
        seen["child_loss_plot_width"] = str(_image_width(page, "loss_curve.png"))
        page.screenshot(path=str(shots / "4_child_description.png"), full_page=True)
        page.goto(f"{base}/#/experiments/{eid}/runs/{child.info.run_id}/model-metrics{ml}")
        expect(page.get_by_text(f"{child.info.run_name} (loss/total)").first).to_be_visible()  # a legend
        expect(page.get_by_text("Step", exact=True).first).to_be_visible()  # a plot is drawn (axis title)
        search = page.get_by_placeholder("Search metric charts")  # charts render when in view: filter
        search.fill("intra/video")  # a term: its loss chart, its chance-level chart right below
        for metric in ("loss/intra/video", "loss_chance/intra/video"):
            expect(page.get_by_text(f"{child.info.run_name} ({metric})").first).to_be_visible()
        seen["child_term_charts"] = page.locator("main").first.inner_text()
        page.screenshot(path=str(shots / "5_child_loss_beside_chance.png"), full_page=True)
        search.fill("probe/")  # the probe over pretraining: probe/content, probe/metadata, probe/user
        for metric in ("probe/content", "probe/metadata", "probe/user"):
            expect(page.get_by_text(f"{child.info.run_name} ({metric})").first).to_be_visible()
        seen["child_probe_charts"] = page.locator("main").first.inner_text()
        page.screenshot(path=str(shots / "6_child_probe_curve.png"), full_page=True)

        # 4. the parent's results table (markdown) and bar chart (PNG) artifacts
        page.goto(f"{base}/#/experiments/{eid}/runs/{parent.info.run_id}/artifacts/results/table.md{ml}")
        expect(page.get_by_text(child.info.run_id).first).to_be_visible()
        seen["table_md"] = page.locator("main").first.inner_text()
        page.screenshot(path=str(shots / "7_parent_table_md.png"), full_page=True)
        page.get_by_text("table.png", exact=True).first.click()  # in the artifact tree
        img = page.get_by_alt_text("results/table.png").first  # the preview is a blob: URL
        expect(img).to_be_visible()
        seen["png_width"] = str(img.evaluate("i => i.naturalWidth"))
        page.screenshot(path=str(shots / "8_parent_table_png.png"), full_page=True)
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
    links = printed_links(smoke_sweep.stdout)
    assert (
        links[0]
        == f"/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}?workflowType=machine_learning"
    )
    seen = browse_sweep(mlflow_ui, links, exp.experiment_id, parent, child, shots)

    # 1. the model-training view, not the GenAI one; every child listed under the parent, by row and seed
    assert "workflowType=machine_learning" in seen["url"]
    for view in ("view", "parent_view"):
        assert "Model registry" in seen[view] and "Evaluation runs" not in seen[view], seen[view][:800]
    assert child.info.run_name == "All three · seed 0"
    for run in children:
        name = run.info.run_name
        assert re.fullmatch(r".+ · seed \d+( · attempt \d+)?", name), name
        assert name in seen["runs_table"], name
    assert "No pretraining: frozen random init · seed 0 · attempt 2" in seen["runs_table"]  # the retry

    # 2. the parent's Description: the verdict, our rows beside the paper's, the chart inline
    note = seen["parent_note"]
    assert note.lstrip().startswith("Table 1: pretraining losses"), note[:300]
    assert re.search(
        r"Verdict: the paper's ordering (holds|holds in part|does not hold), \d+ of 27 pairs", note
    )
    assert "rows ahead of base features: Content " in note
    assert "Content ↑ ours" in note and "Content ↑ paper" in note
    all_three = next(ln for ln in note.splitlines() if ln.startswith("All three"))
    assert "60.53" in all_three and "57.67" in all_three and "1.16" in all_three, all_three  # the paper's
    assert "44.87" in note  # the paper's no-pretraining (scratch) row
    assert int(seen["parent_chart_width"]) > 300  # the bar chart, shown in the Description

    # 3. the child: probe scores, the probe over pretraining (steps 0 and 12), loss per term vs chance
    cnote = seen["child_note"]
    assert "All three, seed 0" in cnote and "LVU probe" in cnote and "Probe over pretraining" in cnote
    steps = [m.step for m in client.get_metric_history(child.info.run_id, "probe/content")]
    assert sorted(steps) == [0, 12], steps  # smoke.yaml: probe.curve_every=12 (the random init, the end)
    assert "Loss per term beside its chance level" in cnote and "Last / chance" in cnote
    chance = client.get_run(child.info.run_id).data.metrics["loss_chance/intra/video"]
    intra = next(ln for ln in cnote.splitlines() if ln.startswith("intra/video"))
    assert f"{chance:.4f}" in intra, intra  # the term's row holds its chance level
    assert int(seen["child_loss_plot_width"]) > 300
    term = seen["child_term_charts"].splitlines()  # the section headers: the loss, then its chance level
    assert term.index("loss/intra") < term.index("loss_chance/intra"), term
    assert "probe" in seen["child_probe_charts"].splitlines()

    # 4. the artifacts
    assert "Table 1: pretraining losses" in seen["table_md"] and "All three" in seen["table_md"]
    assert int(seen["png_width"]) > 300
    for name in (
        "1_experiment",
        "2_children",
        "3_parent_description",
        "4_child_description",
        "5_child_loss_beside_chance",
        "6_child_probe_curve",
        "7_parent_table_md",
        "8_parent_table_png",
    ):
        assert (shots / f"{name}.png").stat().st_size > 5_000
