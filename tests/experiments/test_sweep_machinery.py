"""The sweep machinery with a stand-in work function: Ray Tune, retries, failures, MLflow, the table."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow  # ~1 min idle; Ray worker start-up dominates (6 min measured under load 14)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "experiments"))
sys.path.insert(0, str(HERE))

import standin_work  # noqa: E402
from _sweep.config import load_sweep_config  # noqa: E402
from _sweep.runner import Stage, run_sweep  # noqa: E402
from _sweep.spec import TrialSpec  # noqa: E402

# beta fails once (retried, then fine); gamma-s1 fails every time (reported failed)
FAIL_TIMES = {"beta-s0": 1, "beta-s1": 1, "gamma-s1": 9}


def _specs(seeds):
    out = []
    for i, (slug, score) in enumerate([("alpha", 10.0), ("beta", 20.0), ("gamma", 30.0)]):
        for seed in seeds:
            key = f"{slug}-s{seed}"
            params = {"score": score, "fail_times": FAIL_TIMES.get(key, 0)}
            out.append(
                TrialSpec(
                    key=key, slug=slug, variant=slug, seed=seed, order=i, work=standin_work.run, params=params
                )
            )
    return out


def test_sweep_retries_reports_failures_and_writes_table(tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    standin_work.ship_by_value()  # the workers do not have tests/ on their path
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_sweep_config(
        "smoke",
        [
            f"out_dir={tmp_path / 'sweeps'}",
            f"mlflow.tracking_uri={uri}",
            f"mlflow.artifact_root={tmp_path / 'artifacts'}",
            "ray.num_cpus=2",
            "ray.max_failures=1",
            "ray.verbose=0",
            "verbose=true",  # -v: the full stream stays on the console, no sweep.log
        ],
    )
    out = run_sweep("machinery", "Stand-in", [Stage("main", _specs([0, 1]))], cfg)
    assert out.complete and out.exit_code == 0
    printed = capfd.readouterr()
    assert not (out.sweep_dir / "sweep.log").exists()  # (Ray's own lines went to pytest's sys capture)
    assert sum("] ✓ " in ln for ln in printed.out.splitlines()) == 5, printed.out
    assert sum("↻ beta-s" in ln and "retrying: InjectedFailure" in ln for ln in printed.out.splitlines()) == 2
    assert "/6] ✗ gamma-s1  failed: InjectedFailure: injected failure in trial gamma-s1" in printed.out
    assert "| alpha |" in printed.out and "[sweep] 1 trial(s) failed after retries: gamma-s1" in printed.out

    trials = pl.read_parquet(out.sweep_dir / "results" / "trials.parquet")
    status = dict(zip(trials["key"], trials["status"]))
    assert status == {k: "ok" for k in ("alpha-s0", "alpha-s1", "beta-s0", "beta-s1", "gamma-s0")} | {
        "gamma-s1": "failed"
    }
    attempts = dict(zip(trials["key"], trials["attempts"]))
    assert attempts["alpha-s0"] == 1 and attempts["beta-s0"] == 2 and attempts["gamma-s1"] == 2
    assert "injected failure" in trials.filter(pl.col("key") == "gamma-s1")["error"][0]

    summary = pl.read_parquet(out.sweep_dir / "results" / "table.parquet")
    rows = {r["variant"]: r for r in summary.iter_rows(named=True)}
    assert rows["alpha"]["content_mean"] == pytest.approx(10.5)  # seeds 0, 1: 10 and 11
    assert rows["alpha"]["content_std"] == pytest.approx(0.70710678, rel=1e-6)
    assert rows["gamma"]["status"] == "partial (1/2 failed)" and rows["gamma"]["seeds_ok"] == 1
    assert rows["gamma"]["content_mean"] == pytest.approx(30.0)
    assert "| alpha |" in out.markdown and "10.50 ± 0.71" in out.markdown

    client = MlflowClient(uri)
    parent = client.get_run(out.parent_run_id)
    assert parent.info.status == "FINISHED"
    names = {a.path for a in client.list_artifacts(out.parent_run_id, "results")}
    assert names == {f"results/{n}" for n in ("table.md", "table.parquet", "trials.parquet", "table.png")}
    children = client.search_runs(
        [out.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{out.parent_run_id}'"
    )
    by_status: dict[str, list[str]] = {}
    for run in children:
        by_status.setdefault(run.info.status, []).append(run.data.tags["lmp.trial"])
    assert sorted(by_status["FAILED"]) == ["beta-s0", "beta-s1", "gamma-s1", "gamma-s1"]
    assert sorted(by_status["FINISHED"]) == ["alpha-s0", "alpha-s1", "beta-s0", "beta-s1", "gamma-s0"]
    # every row names its child run and the commit
    ok_ids = set(trials.filter(pl.col("status") == "ok")["child_run_id"])
    assert ok_ids == {r.info.run_id for r in children if r.info.status == "FINISHED"}
    assert all(c for c in trials["git_commit"])
    assert len(client.get_metric_history(trials["child_run_id"][0], "loss/total")) == 3
