"""The smoke sweep end to end: Ray Tune trials running DeepSpeed pretraining + LVU probes, an MLflow
parent run with one child run per trial, a retried trial, and the results table (markdown, Parquet, PNG)."""

from __future__ import annotations

import math
import sys

import polars as pl
import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

KEYS = [
    "none-base-s0",
    "none-random-s0",
    "none-scratch-s0",
    "no-intra-s0",
    "no-inter-s0",
    "no-cross-s0",
    "full-s0",
]


def test_smoke_sweep_table(smoke_sweep):
    out = smoke_sweep.stdout
    assert "## Table 1: pretraining losses" in out
    assert "bash scripts/mlflow_ui.sh --backend-store-uri " + smoke_sweep.tracking_uri in out
    res = smoke_sweep.sweep_dir / "results"
    summary = pl.read_parquet(res / "table.parquet")
    assert summary["variant"].to_list() == [
        "No pretraining: base features",
        "No pretraining: frozen random init",
        "No pretraining: scratch (supervised)",
        "w/o L_intra",
        "w/o L_inter",
        "w/o L_cross",
        "All three",
    ]
    assert summary["status"].to_list() == ["ok"] * 7
    assert summary.row(0, named=True)["Pretrain"] == "✗" and summary.row(4, named=True)["L_inter"] == "✗"
    for g in ("content", "metadata"):
        assert all(0.0 <= v <= 100.0 for v in summary[f"{g}_mean"].to_list()), summary
    assert all(math.isfinite(v) and v >= 0 for v in summary["user_mean"].to_list())
    trials = pl.read_parquet(res / "trials.parquet")
    assert trials["key"].to_list() == KEYS
    assert dict(zip(trials["key"], trials["attempts"]))["none-random-s0"] == 2  # failed once, retried
    assert all(trials["git_commit"].str.len_chars() >= 40)
    md = (res / "table.md").read_text()
    for run_id in trials["child_run_id"].to_list():
        assert run_id in md
    assert (res / "table.png").stat().st_size > 10_000


def test_smoke_sweep_mlflow_runs(smoke_sweep):
    client = MlflowClient(smoke_sweep.tracking_uri)
    exp = client.get_experiment_by_name(smoke_sweep.experiment)
    assert exp.artifact_location.startswith("file:///")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`lmp.table` = 'losses'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    # the UI: model-training view, the table beside the paper's numbers, the verdict and the chart as the
    # parent run's Description (the chart shown inline from the run's artifact)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    note = parents[0].data.tags["mlflow.note.content"]
    assert note.startswith("## Table 1: pretraining losses\n\n**Verdict:** the paper's ordering ")
    assert "| All three |" in note and "results/table.png" in note
    assert "| 60.53 |" in note and "| 44.87 |" in note  # the paper's numbers (All three, scratch)
    assert (
        f"![bar chart: Table 1. Pretraining losses](get-artifact?path=results%2Ftable.png&run_uuid={parent})"
        in note
    )
    arts = {a.path for a in client.list_artifacts(parent, "results")}
    assert {"results/table.md", "results/table.parquet", "results/table.png"} <= arts
    children = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    finished = {r.data.tags["lmp.trial"]: r for r in children if r.info.status == "FINISHED"}
    failed = [r.data.tags["lmp.trial"] for r in children if r.info.status == "FAILED"]
    assert sorted(finished) == sorted(KEYS) and failed == ["none-random-s0"]
    trials = pl.read_parquet(smoke_sweep.sweep_dir / "results" / "trials.parquet")
    assert set(trials["child_run_id"]) == {r.info.run_id for r in finished.values()}

    for key, run in finished.items():  # readable names: the row and the seed
        assert run.info.run_name == f"{run.data.tags['lmp.variant']} · seed 0" + (
            " · attempt 2" if key == "none-random-s0" else ""
        )
    # the probe over pretraining on a pretrained child (smoke: probe.curve_every=12, steps 0 and 12), and
    # its Description: probe scores, the curve's points, each loss term beside its chance level
    full = finished["full-s0"].info.run_id
    assert sorted(m.step for m in client.get_metric_history(full, "probe/content")) == [0, 12]
    assert (
        finished["full-s0"].data.metrics["probe/content"]
        == trials.filter(pl.col("key") == "full-s0")["content"][0]
    )
    child_note = finished["full-s0"].data.tags["mlflow.note.content"]
    assert child_note.startswith("**All three**, seed 0 (probe seed 1000)")
    assert "**Probe over pretraining**" in child_note and "| 0 | " in child_note and "| 12 | " in child_note
    assert "**Loss per term beside its chance level**" in child_note and "| intra/video | " in child_note
    assert "get-artifact?path=loss_curve.png" in child_note
    assert "no pretraining run" in finished["none-base-s0"].data.tags["mlflow.note.content"]

    no_intra = finished["no-intra-s0"]
    assert float(no_intra.data.params["model.loss.intra"]) == 0.0
    assert float(finished["full-s0"].data.params["model.loss.intra"]) == 1.0
    steps = int(no_intra.data.params["derived.total_steps"])
    history = client.get_metric_history(no_intra.info.run_id, "loss/total")
    assert len(history) >= steps >= 2 and all(math.isfinite(m.value) for m in history)
    for key in KEYS:
        m = finished[key].data.metrics
        assert {"probe/content", "probe/metadata", "probe/user"} <= set(m), (key, m)
        assert finished[key].data.params["probe.seed"] == "1000"  # seed 0 + probe.seed_offset
    # the trial's exported weights are an artifact of its child run; DeepSpeed wrote its checkpoint
    export = {a.path for a in client.list_artifacts(finished["full-s0"].info.run_id, "export")}
    assert any(p.endswith(".safetensors") for p in export), export
    ckpts = list((smoke_sweep.sweep_dir / "trials" / "full-s0").glob("attempt-1/full-s0/checkpoints/*"))
    assert ckpts, "no DeepSpeed checkpoint in the trial folder"


NOISE = ("Setting accelerator to CPU", "No CUDA runtime is found", "Trial status", "(run_trial pid=", "╭")


def test_smoke_sweep_console(smoke_sweep):
    """Not a TTY: the log's path first, one line per finished trial (+ a status line), the table; Ray's,
    Tune's and the trials' output only in sweep.log; no control codes. Measured: 47 lines (624 before)."""
    out, err = smoke_sweep.stdout, smoke_sweep.stderr
    log = smoke_sweep.sweep_dir / "sweep.log"
    lines = out.splitlines()
    assert len(lines) <= 60, out
    assert any(ln == f"[sweep] Ray, Tune and trial output: {log} (-v: on the console)" for ln in lines[:4]), (
        out
    )
    for key in KEYS:
        assert sum(ln.startswith("[") and f"] ✓ {key}  content " in ln for ln in lines) == 1, (key, out)
    retry = [ln for ln in lines if "↻ none-random-s0" in ln]
    assert (
        len(retry) == 1 and "retrying: InjectedFailure: injected failure in trial none-random-s0" in retry[0]
    )
    assert lines[lines.index("## Table 1: pretraining losses") - 1].startswith("[sweep] 7/7 done, 0 running")
    assert sum(ln.startswith("Verdict: the paper's ordering ") for ln in lines) == 1  # after the table
    for noise in (*NOISE, "\x1b", "\r"):
        assert noise not in out and noise not in err, noise
    full = log.read_text()
    assert "(run_trial pid=" in full and "Started a local Ray instance" in full  # the full stream is there
    assert "## Table 1: pretraining losses" in full and "↻ none-random-s0" in full
    assert (
        "Setting accelerator to CPU" not in full and "No CUDA runtime is found" not in full
    )  # at the source


def test_smoke_sweep_on_a_terminal(tmp_path):
    """A pseudo-terminal: a live bar redrawn in place, the trial's line, the table; still no Ray output."""
    import os

    from sweep_helpers import PY, REPO, sweep_args

    sys.path.insert(0, str(REPO / "tests"))
    from pty_run import run_on_a_terminal

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env |= {"TERM": "xterm", "COLUMNS": "160"}
    rc, out = run_on_a_terminal(
        [str(PY), str(REPO / "experiments" / "ablate_losses.py"), *sweep_args(tmp_path, "tty"), "--only", "none-base"],
        cwd=REPO, env=env, size=(40, 160), timeout=600,
    )  # fmt: skip
    assert rc == 0, out[-3000:]
    assert "\r" in out.replace("\r\n", "\n") and "1/1 done" in out  # the bar, redrawn in place
    assert "✓ none-base-s0  content " in out and "## Table 1: pretraining losses" in out
    assert "sweep.log" in out
    for noise in NOISE:
        assert noise not in out, noise
    assert "[sweep] 1/1 done" not in out  # plain status lines are for logs, the bar replaces them
