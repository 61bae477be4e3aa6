"""experiments/compare_recipes.py at smoke scale: Ray Tune trials pretraining LMP, M2S and HSSL through the
same DeepSpeed path at the same optimizer steps, each probed on its own features, beside the
no-pretraining rows; the table, the budget (steps, wall time) and one MLflow child run per trial."""

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
        "compare_recipes.py", [*sweep_args(tmp_path, "smoke-recipes"), "--only", "none-base,lmp,m2s,hssl"]
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    (sweep_dir,) = sorted((tmp_path / "sweeps").glob("recipes-smoke-*"))
    summary = pl.read_parquet(sweep_dir / "results" / "table.parquet")
    assert summary["variant"].to_list() == [
        "No pretraining: base features",
        "LMP",
        "M2S (scene stage, split pairs)",
        "HSSL (mask prediction)",
    ]
    assert summary["status"].to_list() == ["ok"] * 4
    assert summary["Recipe"].to_list() == ["—", "lmp", "m2s", "hssl"]
    for g in ("content", "metadata"):
        assert all(0.0 <= v <= 100.0 for v in summary[f"{g}_mean"].to_list())
    assert all(math.isfinite(v) for v in summary["user_mean"].to_list())
    trials = pl.read_parquet(sweep_dir / "results" / "trials.parquet").sort("order")
    pre = trials.filter(pl.col("pretrain_wall_s").is_not_null())
    assert pre["key"].to_list() == ["lmp-s0", "m2s-s0", "hssl-s0"]
    assert set(pre["optimizer_steps"].to_list()) == {12.0}  # tiny.yaml's budget for every recipe
    assert all(w > 0 for w in pre["pretrain_wall_s"].to_list())
    md = (sweep_dir / "results" / "table.md").read_text()
    assert "## Budget" in md and "| HSSL (mask prediction) | 12 |" in md

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke-recipes")
    runs = {r.data.tags.get("lmp.trial"): r for r in client.search_runs([exp.experiment_id])}
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
