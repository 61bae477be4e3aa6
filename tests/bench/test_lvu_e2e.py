"""End to end: a tiny clip store, LVU-format labels and an exported LMP -> evaluate_lvu and `lmp-bench lvu`."""

import numpy as np
import polars as pl
import pytest
import torch

from lmp_bench import evaluate_lvu
from lmp_bench.cli import main
from lmp_bench.features import base_features, clear_cache, encode_clips


@pytest.fixture(scope="module")
def export(tiny_bench, tiny_cfg, tmp_path_factory):
    """A random tiny LMP saved with `save_pretrained`, recording a pretraining MLflow run."""
    import mlflow

    from lmp_data import FeatureStore
    from lmp_model.export import save_pretrained
    from lmp_model.model import LMP

    root = tmp_path_factory.mktemp("export")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.create_experiment("lmp-pretrain-test", artifact_location=(root / "art").as_uri())
    run_id = client.create_run(exp).info.run_id
    client.set_terminated(run_id)
    store = FeatureStore.open(tiny_bench[0])
    torch.manual_seed(0)
    model = LMP(tiny_cfg, store.dims)
    out = save_pretrained(
        root / "export",
        model,
        encoders=store.encoders,
        meta={"mlflow_run_id": run_id},
        pretrain_yaml="data:\n  k: 5\n",
    )
    return out, uri, run_id


def test_time_average_counts_each_shot_once(tiny_bench, tiny_cfg):
    from lmp_bench.api import random_model
    from lmp_data import FeatureStore

    store = FeatureStore.open(tiny_bench[0])
    clear_cache()
    model = random_model(store, tiny_cfg)
    f = encode_clips(model, store, k=5, batch_size=7)  # clips of 3..13 shots: padded and overlapping windows
    b = base_features(store)
    assert f.clip_ids == b.clip_ids
    np.testing.assert_allclose(f.arrays["v_base"], b.arrays["v_base"], atol=1e-5)
    np.testing.assert_allclose(f.arrays["a_base"], b.arrays["a_base"], atol=1e-5)
    # v_ctx depends on the window split, but stays finite and per clip
    assert f.arrays["v_ctx"].shape == (len(f.clip_ids), 16) and np.isfinite(f.arrays["v_ctx"]).all()
    assert encode_clips(model, store, k=5, batch_size=7) is f  # cached per (model, store, k, stride)
    assert f.combine("v_ctx+a_ctx+v_cross_a").shape == (len(f.clip_ids), 48)
    with pytest.raises(ValueError, match="unknown feature"):
        f.combine("v_ctx+x_ctx")


def test_evaluate_lvu_from_export(tiny_bench, export):
    store, labels, ids, _ = tiny_bench
    res = evaluate_lvu(str(export[0]), store, labels, features="v_base", seeds=2, k=5)
    assert res.missing == {"genre": 1, "view_count": 1}
    pt = res.per_task()
    assert set(pt["task"]) == {"genre", "view_count"} and pt["n_seeds"].to_list() == [2, 2]
    genre = pt.filter(pl.col("task") == "genre")["mean"][0]
    assert genre > 70  # genre is planted in the base video features (chance 25 %)
    res2 = evaluate_lvu(
        str(export[0]), store, labels, features="v_ctx+a_ctx+v_cross_a", tasks="genre", seeds=1
    )
    assert res2.runs.height == 1 and res2.runs["features"][0] == "v_ctx+a_ctx+v_cross_a"
    assert 0 <= res2.runs["value"][0] <= 100


def test_cli_lvu_logs_linked_mlflow_run(tiny_bench, export, tmp_path, monkeypatch, capsys):
    import mlflow

    store, labels, _, _ = tiny_bench
    folder, uri, pretrain_run = export
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "lvu.parquet"
    rc = main(
        [
            "lvu",
            "--model",
            str(folder),
            "--store",
            str(store),
            "--labels",
            str(labels),
            "--features",
            "v_ctx+a_ctx",
            "--seeds",
            "2",
            "--out",
            str(out),
            "--set",
            "epochs=20",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0
    assert "Genre" in text and "Views" in text and "Metadata ↑" in text and "genre 1" in text
    df = pl.read_parquet(out)
    assert df.height == 4 and set(df["seed"]) == {0, 1} and (df["features"] == "v_ctx+a_ctx").all()
    client = mlflow.tracking.MlflowClient(uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("lmp-pretrain-test").experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{pretrain_run}'",
    )
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["lmp.pretrain_run_id"] == pretrain_run
    assert run.data.params["features"] == "v_ctx+a_ctx" and run.data.params["probe.epochs"] == "20"
    assert run.data.metrics["lvu/genre"] == pytest.approx(
        df.filter(pl.col("task") == "genre")["value"].mean()
    )
    assert "lvu/metadata" in run.data.metrics and "lvu/user" in run.data.metrics
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"lvu_table.txt", "lvu.parquet"} <= arts


def test_cli_model_none_gives_two_baselines(tiny_bench, tiny_cfg, tmp_path, capsys):
    from omegaconf import OmegaConf

    store, labels, _, _ = tiny_bench
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(OmegaConf.to_yaml(OmegaConf.structured(tiny_cfg)))
    rc = main(
        [
            "lvu",
            "--model",
            "none",
            "--model-config",
            str(cfg),
            "--store",
            str(store),
            "--labels",
            str(labels),
            "--tasks",
            "genre",
            "--seeds",
            "1",
            "--k",
            "5",
            "--no-mlflow",
            "--out",
            str(tmp_path / "x.parquet"),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0
    assert "no pretraining: base features" in text and "no pretraining: frozen random init" in text
    df = pl.read_parquet(tmp_path / "x.parquet")
    assert set(df["method"]) == {"no pretraining: base features", "no pretraining: frozen random init"}
    assert df.filter(pl.col("method") == "no pretraining: base features")["features"][0] == "v_base+a_base"


def test_cli_strict_and_bad_input(tiny_bench, tmp_path, capsys):
    store, labels, _, _ = tiny_bench
    base = ["lvu", "--model", "none", "--store", str(store), "--labels", str(labels), "--tasks", "genre"]
    opts = ["--seeds", "1", "--no-mlflow", "--out", str(tmp_path / "y.parquet")]
    assert main([*base, "--features", "v_base", *opts, "--strict"]) == 1
    assert "genre: 1 of 91 labelled clips not in the store" in capsys.readouterr().err
    assert main([*base, "--features", "v_foo", *opts]) == 1
    assert "unknown feature(s) ['v_foo']" in capsys.readouterr().err
    assert main([*base[:-4], "--labels", str(tmp_path / "nowhere"), "--features", "v_base", *opts]) == 1
    assert "nowhere" in capsys.readouterr().err
