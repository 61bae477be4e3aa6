"""A corrupt checkpoint never blocks resume, fatal errors end the MLflow run as FAILED, and lmp-pretrain
reports bad input in one line (issue 12)."""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
from pathlib import Path

import pytest

from lmp_model.pretrain import ConfigError, load_pretrain_config, run
from lmp_model.pretrain import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "experiments" / "configs" / "pretrain" / "tiny.yaml"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_store import make_store  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("store") / "store", movies=3)


def tiny(store: Path, tmp: Path, *overrides: str) -> list[str]:
    return [
        f"data.store={store}",
        f"train.out_dir={tmp / 'runs'}",
        f"mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
        "train.threads=1",
        *overrides,
    ]


def runs(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT run_uuid, status FROM runs").fetchall()


# ------------------------------------------------------------------------------------------ unit
def fake_checkpoint(d: Path, step: int) -> Path:
    tag = ckpt.tag_for(step)
    (d / tag / "global_step").mkdir(parents=True)
    (d / tag / "global_step" / "mp_rank_00_model_states.pt").write_bytes(bytes(range(256)) * (40 + step))
    (d / tag / "pretrain.yaml").write_text(f"step: {step}\n")
    ckpt.mark_complete(d, tag, {"step": step, "mlflow_run_id": f"run{step}"}, keep_last=0)
    return d / tag


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "marker"])
def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, caplog, damage):
    d = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        fake_checkpoint(d, step)
    f = d / "step00000006" / "global_step" / "mp_rank_00_model_states.pt"
    manifest = json.loads((d / "step00000006" / ckpt.COMPLETE).read_text())["files"]
    assert manifest[f.relative_to(d / "step00000006").as_posix()]["size"] == f.stat().st_size
    data = bytearray(f.read_bytes())
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data[100] ^= 1
        f.write_bytes(bytes(data))
    elif damage == "delete":
        f.unlink()
    else:
        (d / "step00000006" / ckpt.COMPLETE).write_text("{not json")
    assert ckpt.latest_tag(d) == "step00000006"  # completeness alone would trust it
    with caplog.at_level(logging.WARNING, logger="lmp_model.pretrain"):
        assert ckpt.resume_tag(d) == "step00000004"
    assert "step00000006 is corrupt" in caplog.text and "step00000004" in caplog.text
    assert ckpt.complete_tags(d) == ["step00000002", "step00000004"] and ckpt.latest_tag(d) == "step00000004"
    aside = [p.name for p in d.iterdir() if p.name.startswith("corrupt-step00000006-")]
    assert len(aside) == 1 and ckpt.remove_incomplete(d) == []  # kept for inspection, never deleted
    assert ckpt.last_run_id(d) == "run6" if damage != "marker" else "run4"


def test_no_intact_checkpoint_is_an_error_naming_each(tmp_path):
    d = tmp_path / "checkpoints"
    for step in (2, 4):
        p = fake_checkpoint(d, step)
        (p / "pretrain.yaml").write_text("changed\n")
    with pytest.raises(
        ckpt.CheckpointError, match=r"step00000004 \(pretrain.yaml .*step00000002 \(pretrain.yaml"
    ):
        ckpt.resume_tag(d)
    assert ckpt.resume_tag(tmp_path / "none") is None


# ------------------------------------------------------------------------------------ training
def test_truncated_newest_checkpoint_resumes_from_the_older_one(store, tmp_path, caplog):
    args = tiny(store, tmp_path, "name=c", "train.steps=4", "train.ckpt_every=2", "train.keep_last=2")
    res = run(load_pretrain_config(TINY, args))
    ckpts = res.run_dir / "checkpoints"
    newest = ckpts / "step00000004"
    big = max((p for p in newest.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    big.write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="lmp_model.pretrain"):
        res2 = run(load_pretrain_config(TINY, [*args[:-3], "train.steps=5"]), resume=True)
    assert res2.resumed_from == 2 and res2.mlflow_run_id == res.mlflow_run_id
    assert f"{newest} is corrupt" in caplog.text
    assert [h["step"] for h in res2.history] == [1, 2, 3, 4, 5]
    assert runs(tmp_path / "mlflow.db") == [(res.mlflow_run_id, "FINISHED")]


def test_fatal_error_outside_the_loop_ends_the_run_failed(store, tmp_path, monkeypatch):
    from lmp_model.pretrain import train

    def broken(*a, **k):
        raise RuntimeError("window stream broke")

    monkeypatch.setattr(train, "WindowStream", broken)
    with pytest.raises(RuntimeError, match="window stream broke"):
        run(load_pretrain_config(TINY, tiny(store, tmp_path, "name=f", "train.steps=2")))
    [(run_id, status)] = runs(tmp_path / "mlflow.db")
    assert status == "FAILED"
    from mlflow.tracking import MlflowClient

    tags = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id).data.tags
    assert "window stream broke" in tags["error"]


def test_no_intact_checkpoint_ends_the_previous_run_failed(store, tmp_path):
    args = tiny(store, tmp_path, "name=g", "train.steps=2", "train.ckpt_every=1", "train.keep_last=1")
    res = run(load_pretrain_config(TINY, args))
    (res.run_dir / "checkpoints" / "step00000002" / "pretrain.yaml").write_text("tampered\n")
    with pytest.raises(ckpt.CheckpointError, match="no intact checkpoint"):
        run(load_pretrain_config(TINY, [*args, "train.steps=3"]), resume=True)
    assert runs(tmp_path / "mlflow.db") == [(res.mlflow_run_id, "FAILED")]


# ------------------------------------------------------------------------------------ config, CLI
def test_lr_must_be_finite():
    for bad in ("inf", "-inf", "nan"):
        with pytest.raises(ConfigError, match=r"train\.lr: expected > 0 and finite"):
            load_pretrain_config(TINY, ["data.store=/x", f"train.lr={bad}"])


def one_line(err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.startswith("lmp-pretrain")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("lmp-pretrain: error: "), err
    for n in needles:
        assert n in lines[0], (n, err)


def test_cli_bad_inputs_are_one_line(store, tmp_path, capsys):
    from lmp_data import FeatureStore
    from lmp_model.pretrain.cli import main

    enc = {m: {"name": f"synthetic-{m}", "dim": d} for m, d in zip(("video", "audio", "text"), (24, 16, 16))}
    empty = FeatureStore.create(tmp_path / "empty", enc, dtype="float32").path
    assert main([str(TINY), *tiny(empty, tmp_path, "name=e")]) == 2
    one_line(capsys.readouterr().err, "no movies to train on")

    assert main([str(TINY), *tiny(store, tmp_path, "name=k", "model.max_tokens=4")]) == 2
    one_line(capsys.readouterr().err, "model.max_tokens=4")

    (tmp_path / "file").write_text("x")
    args = [f"data.store={store}", f"train.out_dir={tmp_path / 'file' / 'runs'}", "mlflow.enabled=false"]
    assert main([str(TINY), *args]) == 2
    one_line(capsys.readouterr().err, str(tmp_path / "file"))

    assert main([str(TINY), *tiny(store, tmp_path, "train.lr=inf")]) == 2
    one_line(capsys.readouterr().err, "train.lr")

    assert main([str(TINY), *tiny(empty, tmp_path, "name=e"), "-v"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("lmp-pretrain: error: ")
