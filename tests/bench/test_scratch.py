"""The paper's no-pretraining row: the architecture trained from scratch per task (lmp_bench.scratch)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from lmp_bench import evaluate_lvu
from lmp_bench.api import NO_PRETRAIN
from lmp_bench.probe import ProbeConfig
from lmp_bench.scratch import ScratchConfig


@pytest.fixture(scope="module")
def scratch_result(tiny_bench, tiny_cfg):
    store, labels, _, _ = tiny_bench
    return evaluate_lvu(
        None,
        store,
        labels,
        features="v_ctx+a_ctx+v_cross_a",
        seeds=[1000, 1001],
        probe=ProbeConfig(epochs=30),
        k=5,
        model_config=tiny_cfg,
        no_pretrain="scratch",
        init_seed=0,
        scratch=ScratchConfig(epochs=4, lr=1e-3, head_lr=1e-3, batch_clips=10),
    )


def test_scratch_scores_every_task(scratch_result):
    runs = scratch_result.runs
    assert set(runs["method"]) == {NO_PRETRAIN["scratch"]}
    assert set(runs["task"]) == {"genre", "view_count"} and runs.height == 4
    assert set(runs["seed"]) == {1000, 1001}
    assert runs["value"].is_finite().all()
    assert scratch_result.missing == {"genre": 1, "view_count": 1}
    assert set(scratch_result.group_means()) == {"metadata", "user"}
    assert "no pretraining: scratch (supervised)" in scratch_result.format()


def test_scratch_trains_loss_goes_down(scratch_result):
    h = scratch_result.history
    for (task, seed), g in h.group_by("task", "seed"):
        g = g.sort("epoch")
        assert g["epoch"].to_list() == [0, 1, 2, 3, 4]
        loss = g.filter(pl.col("epoch") >= 1)["train_loss"].to_numpy()  # end-to-end epochs
        assert np.isfinite(loss).all()
        assert loss[-1] < loss[0], (task, seed, loss)


def test_scratch_selected_on_val(scratch_result):
    """The reported epoch is the (first) argmax of the val score, and the reported val score is its."""
    h, runs = scratch_result.history, scratch_result.runs
    for r in runs.iter_rows(named=True):
        g = h.filter((pl.col("task") == r["task"]) & (pl.col("seed") == r["seed"])).sort("epoch")
        val = g["val_score"].to_numpy()
        assert r["best_epoch"] == int(np.argmax(val))
        best = val.max()
        expect = 100 * best if r["metric"] != "mse" else -best
        assert r["val_score"] == pytest.approx(expect)


def test_epochs_zero_is_the_frozen_random_init_probe(tiny_bench, tiny_cfg):
    """With no end-to-end epoch the scratch row is the frozen random-init probe of the same seeds."""
    store, labels, _, _ = tiny_bench
    kw = dict(features="v_ctx", tasks="genre", seeds=[1000], probe=ProbeConfig(epochs=20), k=5)
    kw |= dict(model_config=tiny_cfg, init_seed=0)
    s = evaluate_lvu(None, store, labels, no_pretrain="scratch", scratch=ScratchConfig(epochs=0), **kw)
    r = evaluate_lvu(None, store, labels, no_pretrain="random_init", **kw)
    assert r.runs["method"][0] == NO_PRETRAIN["random_init"]
    assert s.runs["value"][0] == pytest.approx(r.runs["value"][0])
    assert s.runs["val_score"][0] == pytest.approx(r.runs["val_score"][0])
