"""Transfer tasks on the tiny clip store: label formats, per-shot probes, zero-shot retrieval."""

import numpy as np
import polars as pl
import pytest

from lmp_bench.cli import main
from lmp_bench.transfer import (
    PERMUTATIONS,
    BaseFeatures,
    TransferFormatError,
    evaluate_transfer,
    shots_batch,
    transfer_features,
)


@pytest.fixture(scope="module")
def transfer_dir(tiny_bench, tmp_path_factory):
    """The demo's formats: shot_attributes.parquet (one attribute planted in the shot's audio) and
    descriptions.npz."""
    from lmp_data import FeatureStore

    mem = FeatureStore.open(tiny_bench[0]).load_all()
    root = tmp_path_factory.mktemp("transfer")
    rng = np.random.default_rng(0)
    ids = mem.movie_ids
    split = {c: ("train" if i < 50 else "val" if i < 70 else "test") for i, c in enumerate(ids)}
    rows = {"clip_id": [], "shot_index": [], "bright": [], "noise": [], "bright_name": [], "split": []}
    for c in ids:
        a = mem.movie(c)["audio"]
        for i in range(len(a)):
            rows["clip_id"].append(c)
            rows["shot_index"].append(i)
            rows["bright"].append(int(a[i, 0] > 0))
            rows["noise"].append(int(rng.integers(0, 3)))
            rows["bright_name"].append("yes" if a[i, 0] > 0 else "no")
            rows["split"].append(split[c])
    pl.DataFrame(rows).with_columns(pl.col("shot_index", "bright", "noise").cast(pl.Int32)).write_parquet(
        root / "shot_attributes.parquet"
    )
    n_tok = rng.integers(3, 8, len(ids))
    np.savez(
        root / "descriptions.npz",
        clip_id=np.array(ids),
        offsets=np.r_[0, np.cumsum(n_tok)],
        tokens=rng.normal(size=(int(n_tok.sum()), 10)).astype(np.float32),
    )
    return root


def test_shots_batch_follows_the_given_order(tiny_bench):
    from lmp_data import FeatureStore

    mem = FeatureStore.open(tiny_bench[0]).load_all()
    c = mem.movie_ids[0]
    b = shots_batch(mem, [(c, [2, 0, 1]), (c, [1])])
    v = mem.movie(c)["video"]
    np.testing.assert_allclose(b["video"][0].numpy(), v[[2, 0, 1]], atol=1e-6)
    assert b["shot_mask"].tolist() == [[True, True, True], [True, False, False]]
    assert b["token_shot"].shape[:2] == b["text"].shape[:2]
    assert len(PERMUTATIONS) == 6 and PERMUTATIONS[0] == (0, 1, 2)


def test_evaluate_transfer_all_tasks(tiny_bench, tiny_cfg, transfer_dir):
    res = evaluate_transfer(None, tiny_bench[0], transfer_dir, seeds=2, features="a_base+v_ctx", k=5,
                            model_config=tiny_cfg)  # fmt: skip
    s = res.summary()
    assert set(s["task"]) == {"ave/bright", "ave/noise", "ave/average", "ordering", "next_shot",
                              "retrieval/scene->soundtrack", "retrieval/soundtrack->scene",
                              "retrieval/description->scene"}  # fmt: skip
    mean = dict(zip(s["task"] + "|" + s["metric"], s["mean"]))
    assert mean["ave/bright|per_class_accuracy"] > 0.85  # planted in the shot's own audio feature
    assert 0.2 < mean["ave/noise|per_class_accuracy"] < 0.5  # 3 random classes
    for t in ("ordering|accuracy", "next_shot|accuracy"):
        assert 0.0 <= mean[t] <= 1.0
    n_test = 20
    r = {
        m: mean[f"retrieval/scene->soundtrack|{m}"]
        for m in ("R@1", "R@5", "R@10", "median_rank", "mean_rank")
    }
    assert 0 <= r["R@1"] <= r["R@5"] <= r["R@10"] <= 1 and 1 <= r["median_rank"] <= n_test
    assert "Transfer tasks" in res.format() and "transfer/ordering/accuracy" in res.metrics()
    assert res.rows.filter(pl.col("task") == "ordering").height == 2  # one row per seed


def test_transfer_bad_labels(tiny_bench, tiny_cfg, tmp_path, capsys):
    pl.DataFrame({"clip_id": ["clip000"], "shot_index": [0], "split": ["dev"], "size": [1]}).write_parquet(
        tmp_path / "shot_attributes.parquet"
    )
    with pytest.raises(TransferFormatError, match=r"shot_attributes.parquet: column 'split' has \['dev'\]"):
        evaluate_transfer(None, tiny_bench[0], tmp_path, tasks="ave", model_config=tiny_cfg, k=5)
    pl.DataFrame({"clip_id": ["nope"], "shot_index": [0], "split": ["test"], "size": [1]}).write_parquet(
        tmp_path / "shot_attributes.parquet"
    )
    with pytest.raises(TransferFormatError, match="clips not in the store"):
        evaluate_transfer(None, tiny_bench[0], tmp_path, tasks="ave", model_config=tiny_cfg, k=5)
    rc = main(["transfer", "--model", "none", "--store", str(tiny_bench[0]), "--labels", str(tmp_path / "x"),
               "--no-mlflow"])  # fmt: skip
    assert rc == 1 and "transfer labels folder not found" in capsys.readouterr().err


def test_transfer_reads_any_recipe_through_its_declared_features(tiny_bench, tiny_cfg, transfer_dir):
    """HSSL / M2S / base features: the per-shot tasks run on the recipe's own features; zero-shot
    retrieval, which needs LMP's joint video/audio/language space, is n/a with its reason, not an error."""
    from lmp_data import FeatureStore
    from lmp_model.recipes import build_recipe, load_recipe_config

    dims = dict(FeatureStore.open(tiny_bench[0]).dims)
    m2s = build_recipe("m2s", load_recipe_config("m2s", None, [
        "shot.hidden=16", "shot.dim=8", "movie.hidden=8", "scene.encoder.d=16", "scene.encoder.layers=1",
        "scene.encoder.heads=2", "scene.encoder.ff_mult=2", "max_shots=16",
    ]), dims)  # fmt: skip
    hssl = build_recipe("hssl", load_recipe_config("hssl", None, [
        "modalities=[video,audio]", "encoder.d=16", "encoder.layers=1", "encoder.heads=2",
        "encoder.ff_mult=2", "max_shots=16",
    ]), dims)  # fmt: skip
    assert transfer_features(m2s) == ("v_scene",) and transfer_features(hssl) == ("v_ctx",)
    assert transfer_features(BaseFeatures()) == ("v_base", "a_base")
    for model, label in ((m2s, "M2S"), (hssl, "HSSL"), ("base", "base")):
        res = evaluate_transfer(model, tiny_bench[0], transfer_dir, seeds=1, k=5, samples_per_clip=2)
        tasks = set(res.summary()["task"])
        assert {"ave/average", "ordering", "next_shot"} <= tasks, label
        assert not any(t.startswith("retrieval") for t in tasks), label
        assert set(res.skipped) == {
            "retrieval/scene->soundtrack", "retrieval/soundtrack->scene", "retrieval/description->scene"
        }  # fmt: skip
        why = res.skipped["retrieval/scene->soundtrack"]
        assert why.startswith("n/a:") and (label in why or "different encoder spaces" in why), why
    with pytest.raises(ValueError, match="not provided by the M2S model"):
        evaluate_transfer(m2s, tiny_bench[0], transfer_dir, tasks="ordering", features="v_ctx", k=5)
    # LMP keeps retrieval; its per-shot default is v_ctx+a_ctx, and any LMP feature may be asked for
    res = evaluate_transfer(None, tiny_bench[0], transfer_dir, tasks="ordering,retrieval", seeds=1, k=5,
                            model_config=tiny_cfg, features="v_cross_a")  # fmt: skip
    assert not res.skipped and "retrieval/description->scene" in set(res.summary()["task"])


def test_shots_batch_of_consecutive_shots_is_the_window_batch(tiny_bench):
    """`shots_batch` pads through `lmp_data.collate_windows`: shots 0..k-1 in order give the batch
    `ShotWindows` builds for that window (the store's shots have no gaps, so the same tokens)."""
    import torch

    from lmp_data import FeatureStore, ShotWindows

    mem = FeatureStore.open(tiny_bench[0]).load_all()
    clips = list(mem.movie_ids[:3])
    k = min(len(mem.movie(c)["shots"]) for c in clips)
    ds = ShotWindows(mem, k, mode="eval", movies=clips)
    first = [int(np.flatnonzero(ds.locate(np.arange(len(ds)))[0] == mem.index[c])[0]) for c in clips]
    ref = ds.__getitems__(first)
    b = shots_batch(mem, [(c, list(range(k))) for c in clips])
    assert b["movie"] == ref["movie"] == clips
    for key in ("video", "audio", "shot_mask", "text", "text_mask", "token_shot"):
        assert b[key].dtype == ref[key].dtype and torch.equal(b[key], ref[key]), key
    assert b["text_mask"].any()  # the comparison covers real tokens
