"""experiments/compare_recipes.py at smoke scale: Ray Tune trials pretraining LMP, M2S (its three stages,
mined scene pairs) and HSSL through the same DeepSpeed path at the same optimizer steps, each probed on
its own features (LVU and the transfer tasks), beside the no-pretraining rows; the table, the transfer
columns, the budget (steps, wall time) and one MLflow child run per trial."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import polars as pl
import pytest
from mlflow.tracking import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_helpers import run_script, sweep_args  # noqa: E402

pytestmark = pytest.mark.slow  # ~3-4 min on 2 cores (3 pretrainings, 5 probe trials, Ray start)


def test_compare_recipes_smoke(tmp_path):
    proc = run_script(
        "compare_recipes.py",
        [*sweep_args(tmp_path, "smoke-recipes"), "--only", "none-base,lmp,m2s,hssl"],
        timeout=1500,  # measured: 4 min at a load average of ~7, 11 min at 15-18 (2 cores)
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    (sweep_dir,) = sorted((tmp_path / "sweeps").glob("recipes-smoke-*"))
    summary = pl.read_parquet(sweep_dir / "results" / "table.parquet")
    assert summary["variant"].to_list() == [
        "No pretraining: base features",
        "LMP",
        "M2S (shot → movie → scene, mined pairs)",
        "HSSL (mask prediction)",
    ]
    assert summary["status"].to_list() == ["ok"] * 4
    assert summary["Recipe"].to_list() == ["—", "lmp", "m2s", "hssl"]
    for g in ("content", "metadata"):
        assert all(0.0 <= v <= 100.0 for v in summary[f"{g}_mean"].to_list())
    assert all(math.isfinite(v) for v in summary["user_mean"].to_list())
    # the transfer columns: per-shot tasks for every row, zero-shot retrieval where a joint space exists
    for key in ("transfer_ave", "transfer_ordering", "transfer_next_shot"):
        assert all(0.0 <= v <= 100.0 for v in summary[f"{key}_mean"].to_list()), key
    retrieval = ("transfer_v2a_r1", "transfer_v2a_mdr", "transfer_a2v_r1", "transfer_a2v_mdr",
                 "transfer_d2v_r1", "transfer_d2v_mdr")  # fmt: skip
    for key in retrieval:
        values = dict(zip(summary["Recipe"], summary[f"{key}_mean"]))
        assert values["lmp"] is not None and math.isfinite(values["lmp"]), key
        assert values["—"] is None and values["m2s"] is None and values["hssl"] is None, key  # n/a
    assert 1.0 <= dict(zip(summary["Recipe"], summary["transfer_v2a_mdr_mean"]))["lmp"]
    na = dict(zip(summary["Recipe"], summary["transfer_na"]))
    assert na["lmp"] == "" and "different encoder spaces" in na["—"] and "no a_ctx" in na["hssl"]
    trials = pl.read_parquet(sweep_dir / "results" / "trials.parquet").sort("order")
    pre = trials.filter(pl.col("pretrain_wall_s").is_not_null())
    assert pre["key"].to_list() == ["lmp-s0", "m2s-s0", "hssl-s0"]
    assert set(pre["optimizer_steps"].to_list()) == {12.0}  # tiny.yaml's budget for every recipe
    assert all(w > 0 for w in pre["pretrain_wall_s"].to_list())
    md = (sweep_dir / "results" / "table.md").read_text()
    assert "## Budget" in md and "| HSSL (mask prediction) | 12 |" in md
    assert "## Transfer tasks" in md and (sweep_dir / "results" / "transfer.md").is_file()

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke-recipes")
    runs = {  # a retried trial's failed attempt is a FAILED run of the same trial: the finished one counts
        r.data.tags.get("lmp.trial"): r
        for r in client.search_runs([exp.experiment_id])
        if r.info.status == "FINISHED"
    }
    (parent,) = client.search_runs([exp.experiment_id], filter_string="tags.`lmp.table` = 'recipes'")
    assert "results/budget.md" in {a.path for a in client.list_artifacts(parent.info.run_id, "results")}
    assert runs["hssl-s0"].data.params["recipe"] == "hssl"
    assert runs["hssl-s0"].data.params["probe.features"] == "v_ctx"
    assert runs["m2s-s0"].data.params["probe.features"] == "v_scene"
    assert runs["m2s-s0"].data.params["m2s.scene.encoder.d"] == runs["lmp-s0"].data.params["model.encoder.d"]
    assert (
        "loss/mp/video" in runs["hssl-s0"].data.metrics and "loss/scene/moco" in runs["m2s-s0"].data.metrics
    )
    assert runs["lmp-s0"].data.metrics["compare/optimizer_steps"] == 12.0
    assert "transfer/ordering/accuracy" in runs["hssl-s0"].data.metrics
    assert "transfer/retrieval/scene-_soundtrack/R_1" in runs["lmp-s0"].data.metrics
    assert "M2S model provides no v_ctx/a_ctx/l_ctx" in runs["m2s-s0"].data.tags["transfer.na"]
    m2s = runs["m2s-s0"].data.metrics  # the stages before the child run's (scene) and the mined pairs
    assert m2s["m2s/shot/steps"] + m2s["m2s/movie/steps"] + m2s["m2s/scene/steps"] == 12.0
    assert "m2s/movie/final_movie_bce" in m2s and m2s["m2s/mining/scene_pairs"] > 0
