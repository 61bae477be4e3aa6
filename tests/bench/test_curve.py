"""Probe-over-training curve: a tiny pretraining with `train.snapshot_every`, then `probe_curve` on it."""

import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "experiments" / "configs" / "pretrain" / "tiny.yaml"
STEPS, EVERY = 6, 3


@pytest.fixture(scope="module")
def pretrained(tiny_bench, tmp_path_factory):
    """A 6-step tiny pretraining on the tiny clip store, snapshots every 3 steps; (result, tracking uri)."""
    from lmp_model.pretrain import load_pretrain_config, run

    tmp = tmp_path_factory.mktemp("curve")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    cfg = load_pretrain_config(
        TINY,
        [
            f"data.store={tiny_bench[0]}",
            "data.k=4",
            f"train.out_dir={tmp / 'runs'}",
            f"mlflow.tracking_uri={uri}",
            "train.threads=1",
            f"train.steps={STEPS}",
            "train.ckpt_every=0",
            f"train.snapshot_every={EVERY}",
            "mlflow.log_weights=false",
        ],
    )
    return run(cfg), uri


def test_snapshot_every_must_not_be_negative():
    from lmp_model.pretrain import ConfigError, load_pretrain_config

    with pytest.raises(ConfigError, match=r"train\.snapshot_every: expected >= 0, got -1"):
        load_pretrain_config(TINY, ["train.snapshot_every=-1"])
    assert load_pretrain_config(TINY).train.snapshot_every == 0


def test_snapshots_then_probe_curve_logged_to_the_pretraining_run(pretrained, tiny_bench, tmp_path):
    import mlflow

    from lmp_bench.cli import main
    from lmp_bench.curve import find_points, probe_curve
    from lmp_bench.probe import ProbeConfig
    from lmp_model.export import load_pretrained

    res, uri = pretrained
    snaps = res.run_dir / "snapshots"
    assert sorted(p.name for p in snaps.iterdir()) == ["step_0", "step_3", "step_6"]
    for step in (0, 3, 6):
        meta = json.loads((snaps / f"step_{step}" / "lmp.json").read_text())["meta"]
        assert meta["step"] == step and meta["mlflow_run_id"] == res.mlflow_run_id and meta["k"] == 4
    assert not list(snaps.glob("step_0/*optim*"))  # weights only
    # the init snapshot differs from the trained one
    w0 = load_pretrained(snaps / "step_0").state_dict()
    w6 = load_pretrained(snaps / "step_6").state_dict()
    assert any(not (w0[k] == w6[k]).all() for k in w0)
    points = find_points(res.run_dir)
    assert [(p.step, p.source) for p in points] == [(0, "snapshot"), (3, "snapshot"), (6, "export")]

    df = probe_curve(
        res.run_dir,
        tiny_bench[0],
        tiny_bench[1],
        seeds=2,
        features="v_ctx+a_ctx",
        probe=ProbeConfig(epochs=15),
    )
    assert df["step"].to_list() == [0, 3, 6]
    assert df["source"].to_list() == ["snapshot", "snapshot", "export"]
    for col in ("metadata", "user", "genre", "view_count"):
        assert all(math.isfinite(v) for v in df[col].to_list()), col
    assert df["content"].null_count() == 3  # no content task in the tiny labels
    assert (res.run_dir / "probe_curve.parquet").is_file() and (res.run_dir / "probe_curve.png").is_file()

    client = mlflow.tracking.MlflowClient(uri)
    run = client.get_run(res.mlflow_run_id)
    assert run.info.status == "FINISHED"  # logged to without reopening it
    for key in ("probe/metadata", "probe/user", "probe/lvu/genre", "probe/lvu/view_count"):
        hist = client.get_metric_history(res.mlflow_run_id, key)
        assert sorted(m.step for m in hist) == [0, 3, 6], key
        assert all(math.isfinite(m.value) for m in hist)
    genre = {m.step: m.value for m in client.get_metric_history(res.mlflow_run_id, "probe/lvu/genre")}
    assert genre == pytest.approx(dict(zip(df["step"].to_list(), df["genre"].to_list())))
    arts = {a.path for a in client.list_artifacts(res.mlflow_run_id, "probe_curve")}
    assert arts == {"probe_curve/probe_curve.parquet", "probe_curve/probe_curve.png"}

    # the CLI: same curve from the snapshots folder, no MLflow, table printed
    out = tmp_path / "cli"
    rc = main(
        ["curve", str(snaps), "--store", str(tiny_bench[0]), "--labels", str(tiny_bench[1]),
         "--tasks", "genre", "--seeds", "1", "--features", "v_ctx", "--set", "epochs=5",
         "--out-dir", str(out), "--no-mlflow"]
    )  # fmt: skip
    assert rc == 0 and (out / "probe_curve.parquet").is_file()
