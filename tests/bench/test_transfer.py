"""Transfer tasks on the tiny clip store: label formats, per-shot probes, zero-shot retrieval."""

import numpy as np
import polars as pl
import pytest

from lmp_bench.cli import main
from lmp_bench.transfer import PERMUTATIONS, TransferFormatError, evaluate_transfer, shots_batch


@pytest.fixture(scope="module")
def transfer_dir(tiny_bench, tmp_path_factory):
    from lmp_data import FeatureStore

    store = FeatureStore.open(tiny_bench[0])
    mem = store.load_all()
    root = tmp_path_factory.mktemp("transfer")
    rng = np.random.default_rng(0)
    ids = mem.movie_ids
    split = {"train": ids[:50], "val": ids[50:70], "test": ids[70:]}
    for d in ("ave", "ordering", "next_shot", "retrieval"):
        (root / d).mkdir()
    for s, clips in split.items():
        ave = ["clip_id,shot,bright"]
        order = ["clip_id,start,label"]
        nxt = ["clip_id,context_start,cand0,cand1,cand2,cand3,cand4,label"]
        for c in clips:
            v, a = mem.movie(c)["video"], mem.movie(c)["audio"]
            ave += [f"{c},{i},{int(a[i, 0] > 0)}" for i in range(len(v))]  # planted in the shot's audio
            if len(v) >= 3:
                order.append(f"{c},0,{rng.integers(0, 6)}")
            if len(v) >= 9:
                cands = list(rng.permutation([4, 5, 6, 7, 8]))
                nxt.append(f"{c},0,{','.join(map(str, cands))},{cands.index(4)}")
        (root / "ave" / f"{s}.csv").write_text("\n".join(ave) + "\n")
        (root / "ordering" / f"{s}.csv").write_text("\n".join(order) + "\n")
        (root / "next_shot" / f"{s}.csv").write_text("\n".join(nxt) + "\n")
    scenes = ["clip_id,first_shot,last_shot"] + [f"{c},0,{len(mem.movie(c)['video']) - 1}" for c in ids[:40]]
    (root / "retrieval" / "scenes.csv").write_text("\n".join(scenes) + "\n")
    n_tok = rng.integers(3, 8, 30)
    np.savez(
        root / "retrieval" / "descriptions.npz",
        clip_id=np.array(ids[:30]),
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
    tasks = set(s["task"])
    assert {"ave/bright", "ave/average", "ordering", "next_shot", "retrieval/scene->soundtrack",
            "retrieval/soundtrack->scene", "retrieval/description->scene"} <= tasks  # fmt: skip
    ave = s.filter(pl.col("task") == "ave/bright")["mean"][0]
    assert ave > 0.85  # planted in the shot's own base feature
    for t in ("ordering", "next_shot"):
        assert 0.0 <= s.filter(pl.col("task") == t)["mean"][0] <= 1.0
    r = s.filter(pl.col("task") == "retrieval/scene->soundtrack")
    vals = dict(zip(r["metric"], r["mean"]))
    assert 0 <= vals["R@1"] <= vals["R@5"] <= vals["R@10"] <= 1 and 1 <= vals["median_rank"] <= 40
    assert "Transfer tasks" in res.format() and "transfer/ordering/accuracy" in res.metrics()


def test_transfer_bad_labels(tiny_bench, tiny_cfg, tmp_path, capsys):
    (tmp_path / "ordering").mkdir()
    for s in ("train", "val", "test"):
        (tmp_path / "ordering" / f"{s}.csv").write_text("clip_id,start,label\nclip000,0,x\n")
    with pytest.raises(TransferFormatError, match=r"ordering/train.csv:2: column 'label' value 'x'"):
        evaluate_transfer(None, tiny_bench[0], tmp_path, tasks="ordering", model_config=tiny_cfg, k=5)
    (tmp_path / "ordering" / "val.csv").write_text("clip_id,start,label\nnope,0,1\n")
    (tmp_path / "ordering" / "train.csv").write_text("clip_id,start,label\nclip000,0,1\n")
    (tmp_path / "ordering" / "test.csv").write_text("clip_id,start,label\nclip000,0,1\n")
    with pytest.raises(TransferFormatError, match="clips not in the store"):
        evaluate_transfer(None, tiny_bench[0], tmp_path, tasks="ordering", model_config=tiny_cfg, k=5)
    rc = main(["transfer", "--model", "none", "--store", str(tiny_bench[0]), "--labels", str(tmp_path / "x"),
               "--no-mlflow"])  # fmt: skip
    assert rc == 1 and "transfer labels folder not found" in capsys.readouterr().err
