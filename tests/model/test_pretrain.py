"""lmp_model.pretrain in one process: real DeepSpeed engines (gloo), real Zarr store, real SQLite MLflow.

The store is built here (small, with shared structure across modalities so the losses can fall).
Multi-rank runs and kill-and-resume live in test_pretrain_dist.py.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lmp_model.export import load_pretrained
from lmp_model.pretrain import ConfigError, NonFiniteLossError, load_pretrain_config, run
from lmp_model.pretrain.checkpoint import COMPLETE, latest_tag

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "experiments" / "configs" / "pretrain" / "tiny.yaml"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_store import make_store  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("store") / "store")


def tiny(store: Path, tmp: Path, *overrides: str):
    return load_pretrain_config(
        TINY,
        [
            f"data.store={store}",
            f"train.out_dir={tmp / 'runs'}",
            f"mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
            "train.threads=1",
            *overrides,
        ],
    )


def n_runs(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT run_uuid, status FROM runs").fetchall()


# ------------------------------------------------------------------------------------------ config
def test_invalid_configs_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.no_such_key"):
        load_pretrain_config(TINY, ["train.no_such_key=1"])
    with pytest.raises(ConfigError, match=r"train\.steps.*abc"):
        load_pretrain_config(TINY, ["train.steps=abc"])
    with pytest.raises(ConfigError, match=r"train\.zero_stage: expected 0, 1, 2 or 3, got 4"):
        load_pretrain_config(TINY, ["train.zero_stage=4"])
    with pytest.raises(ConfigError, match=r"data\.k: expected <= model\.max_shots=16, got 20"):
        load_pretrain_config(TINY, ["data.k=20"])
    with pytest.raises(ConfigError, match=r"ModelConfig\.encoder\.heads"):
        load_pretrain_config(TINY, ["model.encoder.heads=5"])
    with pytest.raises(ConfigError, match=r"train\.bf16"):
        load_pretrain_config(TINY, ["train.bf16=maybe"])
    with pytest.raises(ConfigError, match="no such file"):
        load_pretrain_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: -1\n")
    with pytest.raises(ConfigError, match=rf"{bad.name}.*train\.lr: expected > 0"):
        load_pretrain_config(bad, ["data.demo=tiny", "train.steps=1"])


def test_with_overrides_checks_a_recipe_functions_edits_like_a_yaml():
    """A sweep row's recipe function edits the typed config; `with_overrides` rebuilds and validates it."""
    from lmp_model.pretrain import with_overrides

    cfg = load_pretrain_config(TINY)
    cfg.model.loss.inter = 0.0
    out = with_overrides(cfg, ["train.seed=3"])
    assert (out.model.loss.inter, out.train.seed, out.model.loss.intra) == (0.0, 3, cfg.model.loss.intra)
    cfg.data.k = 10_000  # beyond model.max_shots: caught as if a YAML had said it
    with pytest.raises(ConfigError, match=r"data\.k"):
        with_overrides(cfg)
    with pytest.raises(ConfigError, match=r"train\.no_such_key"):
        with_overrides(load_pretrain_config(TINY), ["train.no_such_key=1"])


def test_yaml_configs_load():
    for name in ("tiny", "demo", "paper"):
        cfg = load_pretrain_config(
            REPO / "experiments" / "configs" / "pretrain" / f"{name}.yaml", ["data.store=/x"]
        )
        assert cfg.name == name
    paper = load_pretrain_config(
        REPO / "experiments" / "configs" / "pretrain" / "paper.yaml", ["data.store=/x"]
    )
    with pytest.raises(ConfigError, match=r"data\.store"):
        load_pretrain_config(REPO / "experiments" / "configs" / "pretrain" / "paper.yaml")
    assert (paper.train.lr, paper.train.global_batch, paper.data.k, paper.model.encoder.layers) == (
        1e-3,
        1024,
        30,
        3,
    )
    assert paper.model.loss.temperature == 0.1  # lmp_model.config's default (the paper: 0.3)


def test_ranks_read_disjoint_windows_and_positions_restore(store):
    from lmp_model.pretrain.config import DataConfig
    from lmp_model.pretrain.data import WindowStream, load_train_data

    data = load_train_data(DataConfig(store=str(store), k=8, windows_per_epoch=64), 0, True, lambda: None)
    ranks = [WindowStream(data.windows, r, 2, 8, prefetch=0) for r in (0, 1)]
    assert ranks[0].batches_per_epoch == 4
    seen = [set(), set()]
    for m in range(4):
        for r in (0, 1):
            seen[r] |= set(ranks[r].indices(m).tolist())
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(64))
    assert ranks[0].position(9) == (2, 1)
    # a stream started at micro-step 9 (prefetching thread) yields what a fresh one builds at step 9
    resumed = WindowStream(data.windows, 1, 2, 8, start=9, prefetch=2)
    m, batch = next(resumed)
    resumed.close()
    ref = WindowStream(data.windows, 1, 2, 8, prefetch=0).build(9)
    assert m == 9 and batch["movie"] == ref["movie"] and torch.equal(batch["start"], ref["start"])
    assert torch.equal(batch["video"], ref["video"]) and torch.equal(batch["text"], ref["text"])
    with pytest.raises(ValueError, match="cannot fill one micro-batch"):
        WindowStream(data.windows, 0, 2, 64, prefetch=0)


# ------------------------------------------------------------------------------------- one rank
def test_zero0_trains_tracks_exports_and_reproduces(store, tmp_path):
    res = run(tiny(store, tmp_path, "name=a"))
    totals = [h["loss/total"] for h in res.history]
    assert len(totals) == 12 and all(np.isfinite(totals))
    assert np.mean(totals[-3:]) < 0.8 * np.mean(totals[:3]), totals
    # checkpoints: every 4 steps, the last 2 kept, all complete
    ckpts = tmp_path / "runs" / "a" / "checkpoints"
    assert latest_tag(ckpts) == "step00000012"
    assert sorted(p.name for p in ckpts.iterdir() if p.is_dir()) == ["step00000008", "step00000012"]
    assert all((ckpts / t / COMPLETE).is_file() for t in ("step00000008", "step00000012"))
    # MLflow: one finished run with params, per-step metrics, tags and artifacts
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    r = client.get_run(res.mlflow_run_id)
    assert r.info.status == "FINISHED"
    assert r.data.params["train.zero_stage"] == "0" and r.data.params["data.k"] == "8"
    assert r.data.tags["store"] == str(store.resolve())
    assert "synthetic-video" in r.data.tags["encoders"] and r.data.tags["git_commit"]
    hist = client.get_metric_history(res.mlflow_run_id, "loss/total")
    assert [m.step for m in hist] == list(range(1, 13))
    assert [m.value for m in hist] == pytest.approx(totals)
    for key in (
        "loss/intra/video",
        "loss/inter/v2a",
        "loss/cross/a2l",
        "lr",
        "perf/windows_per_s",
        "perf/data_wait_frac",
    ):
        assert len(client.get_metric_history(res.mlflow_run_id, key)) == 12, key
    arts = {a.path for a in client.list_artifacts(res.mlflow_run_id)}
    assert {"config.yaml", "loss_curve.png", "export"} <= arts
    # export: loads without DeepSpeed, identical to the trained weights, by folder and by run id
    model = load_pretrained(res.export_dir)
    assert model.encoders["video"]["name"] == "synthetic-video"
    via_run = load_pretrained(
        f"runs:/{res.mlflow_run_id}", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"
    )
    for (k, v), (k2, v2) in zip(model.state_dict().items(), via_run.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    # the same config and seed give the same loss curve (also: a second run in this process works)
    res2 = run(tiny(store, tmp_path, "name=b"))
    assert [h["loss/total"] for h in res2.history] == totals
    a, b = load_pretrained(res.export_dir), load_pretrained(res2.export_dir)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    # a different seed gives a different curve
    res3 = run(tiny(store, tmp_path, "name=c", "train.seed=1", "train.steps=3"))
    assert [h["loss/total"] for h in res3.history] != totals[:3]
    assert len(n_runs(tmp_path / "mlflow.db")) == 3


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_stages_one_rank_resume_and_export(store, tmp_path, stage):
    cfg = tiny(store, tmp_path, "name=z", f"train.zero_stage={stage}", "train.steps=6", "train.ckpt_every=3")
    res = run(cfg)
    totals = [h["loss/total"] for h in res.history]
    assert np.mean(totals[-2:]) < np.mean(totals[:2]), totals
    with pytest.raises(FileExistsError, match="--resume"):
        run(cfg)
    # resume the finished run with more steps: continues from step 6, same MLflow run
    more = tiny(store, tmp_path, "name=z", f"train.zero_stage={stage}", "train.steps=8", "train.ckpt_every=3")
    res2 = run(more, resume=True)
    assert res2.resumed_from == 6 and res2.mlflow_run_id == res.mlflow_run_id
    assert [h["step"] for h in res2.history] == list(range(1, 9))
    assert [h["loss/total"] for h in res2.history][:6] == totals
    assert n_runs(tmp_path / "mlflow.db") == [(res.mlflow_run_id, "FINISHED")]
    model = load_pretrained(res2.export_dir)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params > 10_000 and all(torch.isfinite(p).all() for p in model.parameters())


def test_nonfinite_loss_stops_with_step_and_term(store, tmp_path):
    def poison(step, out):
        if step == 6:
            out.terms["inter/v2a"] = out.terms["inter/v2a"] * float("nan")

    cfg = tiny(store, tmp_path, "name=nan", "train.ckpt_every=4")
    with pytest.raises(NonFiniteLossError, match=r"step 6: term 'inter/v2a' = nan") as err:
        run(cfg, loss_hook=poison)
    assert err.value.last_checkpoint.endswith("step00000004")
    ckpts = tmp_path / "runs" / "nan" / "checkpoints"
    assert latest_tag(ckpts) == "step00000004"
    ((run_id, status),) = n_runs(tmp_path / "mlflow.db")
    assert status == "FAILED"
    # the last good checkpoint resumes
    res = run(tiny(store, tmp_path, "name=nan", "train.steps=6"), resume=True)
    assert res.resumed_from == 4 and np.isfinite(res.final_losses["loss/total"])


def test_unreachable_tracking_warns_once_and_trains(store, tmp_path, caplog):
    from lmp_model.pretrain.dist import free_port

    cfg = tiny(
        store,
        tmp_path,
        "name=offline",
        "train.steps=3",
        f"mlflow.tracking_uri=http://127.0.0.1:{free_port()}",
    )
    with caplog.at_level(logging.WARNING, logger="lmp_model.tracking"):
        res = run(cfg)
    warnings = [r for r in caplog.records if r.name == "lmp_model.tracking"]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
    assert res.mlflow_run_id is None and len(res.history) == 3
    assert (res.export_dir / "model.safetensors").is_file()


# ----------------------------------------------------------------------------------------- learning
def test_short_pretraining_drives_every_term_below_its_chance_level(store, tmp_path):
    """On a store with strong cross-shot structure (a drifting latent shared by all modalities) a short
    run of the default recipe takes every term well below ln(candidates); chance is logged beside it."""
    res = run(
        tiny(
            store,
            tmp_path,
            "name=learn",
            "train.steps=60",
            "train.lr=3e-3",
            "train.ckpt_every=0",
            "mlflow.enabled=false",
        )
    )
    last = res.history[-5:]
    terms = [k[5:] for k in res.history[0] if k.startswith("loss/") and k != "loss/total"]
    assert len(terms) == 12  # the paper's nine + the window term of each modality
    ratios = {}
    for t in terms:
        loss = np.mean([h[f"loss/{t}"] for h in last])
        chance = np.mean([h[f"loss_chance/{t}"] for h in last])
        assert chance > 1.0, t  # ln of a real candidate count
        ratios[t] = loss / chance
    assert max(ratios.values()) < 0.85, ratios
    rows = [
        json.loads(line) for line in (tmp_path / "runs" / "learn" / "metrics.jsonl").read_text().splitlines()
    ]
    assert all(f"loss_chance/{t}" in rows[-1] for t in terms)


def test_model_file_override_on_the_command_line_is_used():
    cfg = load_pretrain_config(
        REPO / "experiments/configs/pretrain/demo.yaml", ["model_file=../model/paper_literal.yaml"]
    )
    assert (cfg.model.cross.align, cfg.model.loss.temperature, cfg.model.encoder.rel_pos) == (False, 0.3, 0)
    default = load_pretrain_config(REPO / "experiments/configs/pretrain/demo.yaml")
    assert (default.model.cross.align, default.model.loss.temperature) == (True, 0.1)
