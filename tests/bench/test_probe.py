"""Probes: a planted linear signal is found, pure noise stays at chance, seeds differ."""

import numpy as np
import pytest

from lmp_bench.lvu_probe import MissingClipsError, probe_lvu
from lmp_bench.probe import ProbeConfig, fit_probe

RNG = np.random.default_rng(0)


def planted(n, d=64, c=6, signal=3.0, rng=RNG):
    centres = np.random.default_rng(123).normal(size=(c, d))
    y = rng.integers(0, c, n)
    return (rng.normal(size=(n, d)) + signal * centres[y]).astype(np.float32), y


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_planted_signal_is_near_perfect(head):
    (xt, yt), (xv, yv), (xs, ys) = planted(600), planted(200), planted(200)
    p = fit_probe(xt, yt, xv, yv, "classification", 6, ProbeConfig(head=head, epochs=30), seed=0)
    assert (p.predict(xs) == ys).mean() > 0.97


def test_noise_stays_at_chance():
    accs = []
    for seed in range(3):
        xt, yt = RNG.normal(size=(600, 64)), RNG.integers(0, 6, 600)
        xv, yv = RNG.normal(size=(200, 64)), RNG.integers(0, 6, 200)
        xs, ys = RNG.normal(size=(1000, 64)), RNG.integers(0, 6, 1000)
        p = fit_probe(xt, yt, xv, yv, "classification", 6, ProbeConfig(epochs=30), seed=seed)
        accs.append((p.predict(xs) == ys).mean())
    assert abs(np.mean(accs) - 1 / 6) < 0.05


def test_regression_and_choice():
    w = RNG.normal(size=32)
    x = RNG.normal(size=(500, 32)).astype(np.float32)
    y = x @ w
    p = fit_probe(x[:300], y[:300], x[300:400], y[300:400], "regression", 1, ProbeConfig(epochs=80), seed=0)
    assert np.mean((p.predict(x[400:]) - y[400:]) ** 2) < 0.05 * y.var()
    # choice: the right candidate is the one aligned with a planted direction
    n, c = 400, 5
    cand = RNG.normal(size=(n, c, 32)).astype(np.float32)
    right = RNG.integers(0, c, n)
    cand[np.arange(n), right] += 4.0 * w / np.linalg.norm(w)
    p = fit_probe(cand[:250], right[:250], cand[250:320], right[250:320], "choice", c, ProbeConfig(epochs=60))
    assert (p.predict(cand[320:]) == right[320:]).mean() > 0.9


def test_bad_features_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        fit_probe(np.full((4, 3), np.nan), [0, 1, 0, 1], np.zeros((2, 3)), [0, 1], "classification", 2)


def write_lvu(root, task_rows):
    """Write LVU-format (space-separated, header) files: task -> {split: [(class_id, clip)]}."""
    for task, splits in task_rows.items():
        (root / task).mkdir(parents=True)
        for split, rows in splits.items():
            if task == "view_count":
                body = "".join(f"{v} {c} tt{i:07d}\n" for i, (v, c) in enumerate(rows))
                (root / task / f"{split}.csv").write_text("view_count youtube_id imdb_id\n" + body)
            else:
                body = "".join(f"{k} name{k} {c} tt{i:07d}\n" for i, (k, c) in enumerate(rows))
                (root / task / f"{split}.csv").write_text("class_id class_name youtube_id imdb_id\n" + body)


def test_probe_lvu_seeds_groups_and_missing(tmp_path):
    n = 500
    x, y = planted(n, c=4, signal=0.35)  # weak signal: seeds land on different probes
    ids = [f"clip{i:04d}" for i in range(n)]
    views = np.exp(11.76 + x[:, 0])  # a planted regression target
    split = {"train": range(0, 300), "val": range(300, 400), "test": range(400, n)}
    write_lvu(
        tmp_path,
        {
            "genre": {s: [(int(y[i]), ids[i]) for i in r] for s, r in split.items()},
            "view_count": {s: [(int(views[i]), ids[i]) for i in r] for s, r in split.items()},
        },
    )
    # two labelled clips have no features (LVU's broken links)
    keep = [i for i in range(n) if i not in (5, 450)]
    res = probe_lvu([ids[i] for i in keep], x[keep], tmp_path, tasks="genre,view_count", seeds=3)
    assert res.missing == {"genre": 2, "view_count": 2}
    pt = res.per_task()
    genre = pt.filter(pt["task"] == "genre")
    assert genre["n_seeds"][0] == 3
    assert 30 < genre["mean"][0] <= 100  # percent, above 25 % chance
    assert genre["std"][0] > 0  # seeds differ
    vc = pt.filter(pt["task"] == "view_count")
    assert vc["metric"][0] == "mse" and vc["mean"][0] < 0.5  # var of the target is ~1
    g = res.group_means()
    assert g["metadata"] == pytest.approx(genre["mean"][0]) and g["user"] == pytest.approx(vc["mean"][0])
    text = res.format()
    assert "Genre" in text and "Views" in text and "Metadata ↑" in text and "genre 2" in text
    out = res.write_parquet(tmp_path / "out" / "lvu.parquet")
    import polars as pl

    back = pl.read_parquet(out)
    assert back.height == 6 and set(back["seed"]) == {0, 1, 2}
    with pytest.raises(MissingClipsError, match="genre: 2 of 500"):
        probe_lvu([ids[i] for i in keep], x[keep], tmp_path, tasks="genre", seeds=1, strict=True)


def test_unused_declared_classes_do_not_break(tmp_path):
    # writer declares 10 classes; only 0, 1, 2 occur
    x, y = planted(300, c=3)
    ids = [f"c{i}" for i in range(300)]
    split = {"train": range(0, 200), "val": range(200, 250), "test": range(250, 300)}
    write_lvu(tmp_path, {"writer": {s: [(int(y[i]), ids[i]) for i in r] for s, r in split.items()}})
    res = probe_lvu(ids, x, tmp_path, tasks=["writer"], seeds=1)
    assert res.per_task()["mean"][0] > 95
