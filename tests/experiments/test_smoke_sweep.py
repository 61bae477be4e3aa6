"""The smoke sweep end to end: Ray Tune trials running DeepSpeed pretraining + LVU probes, an MLflow
parent run with one child run per trial, a retried trial, and the results table (markdown, Parquet, PNG)."""

from __future__ import annotations

import math

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
    arts = {a.path for a in client.list_artifacts(parent, "results")}
    assert {"results/table.md", "results/table.parquet", "results/table.png"} <= arts
    children = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    finished = {r.data.tags["lmp.trial"]: r for r in children if r.info.status == "FINISHED"}
    failed = [r.data.tags["lmp.trial"] for r in children if r.info.status == "FAILED"]
    assert sorted(finished) == sorted(KEYS) and failed == ["none-random-s0"]
    trials = pl.read_parquet(smoke_sweep.sweep_dir / "results" / "trials.parquet")
    assert set(trials["child_run_id"]) == {r.info.run_id for r in finished.values()}

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
