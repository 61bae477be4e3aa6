"""The demo benchmark: determinism, LVU-format labels, stores, transfer labels, the generative model's
carriers (order, cross-modal agreement), headroom, reuse, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from lmp_data.demo import N_CLASSES, TASKS, DemoConfig, DemoError, make_demo, store_checksum
from lmp_data.demo.generate import generate, make_world
from lmp_data.demo.labels import CLASSIFICATION_TASKS, HEADERS, class_names, select_clips
from lmp_data.store import FeatureStore

REAL_LVU = Path(__file__).resolve().parents[3] / "shared" / "data" / "lvu_1.0"
SPLITS = ("train", "val", "test")


def parse_lvu(path: Path) -> tuple[list[str], list[list[str]]]:
    """LVU's rules: space-separated, one header line, every row as many fields as the header."""
    lines = path.read_text().splitlines()
    header = lines[0].split(" ")
    rows = [ln.split(" ") for ln in lines[1:]]
    for i, r in enumerate(rows):
        assert len(r) == len(header), f"{path}:{i + 2}: {len(r)} fields, header has {len(header)}"
    return header, rows


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    return make_demo(out, seed=1, size="tiny")


def test_generation_is_deterministic_and_seed_dependent():
    a, b = generate(DemoConfig.preset("tiny", seed=5)), generate(DemoConfig.preset("tiny", seed=5))
    c = generate(DemoConfig.preset("tiny", seed=6))
    for ma, mb in zip(a.pretrain + a.clips, b.pretrain + b.clips, strict=True):
        assert ma.movie_id == mb.movie_id and ma.meta == mb.meta
        for k, v in ma.store_arrays().items():
            np.testing.assert_array_equal(v, mb.store_arrays()[k])
    assert a.clip_table == b.clip_table
    assert not np.array_equal(a.pretrain[0].video[:5], c.pretrain[0].video[:5])


def test_stores_checksums_and_rebuild_identical(built, tmp_path):
    info = built.info()
    for name, path in (("pretrain.zarr", built.pretrain_store), ("eval.zarr", built.eval_store)):
        assert store_checksum(FeatureStore.open(path)) == info["checksums"][name]
    again = make_demo(tmp_path / "again", seed=1, size="tiny")
    assert again.info()["checksums"] == info["checksums"]
    for f in sorted(built.lvu_dir.rglob("*.csv")):
        assert f.read_bytes() == (again.lvu_dir / f.relative_to(built.lvu_dir)).read_bytes()
    # another seed gives other arrays: test_generation_is_deterministic_and_seed_dependent


def test_store_shapes_tokens_and_metadata(built):
    cfg = DemoConfig.from_dict(built.info()["config"])
    pre, ev = FeatureStore.open(built.pretrain_store), FeatureStore.open(built.eval_store)
    assert pre.dims == ev.dims == {"video": cfg.video_dim, "audio": cfg.audio_dim, "text": cfg.text_dim}
    movies = pre.movies()
    assert movies.height == cfg.pretrain_movies
    assert (
        movies["n_shots"].min() >= cfg.shots_per_movie[0]
        and movies["n_shots"].max() <= cfg.shots_per_movie[1]
    )
    for col in ("imdb_id", "title", "year", "genres", "director", "writer", "synopsis"):
        assert col in movies.columns, col
    assert all(re.fullmatch(r"tt\d{7}", i) for i in movies["imdb_id"])
    assert movies["genres"].dtype == pl.List(pl.String) and movies["genres"].list.len().min() >= 1
    assert movies["year"].is_between(1930, 2019).all()
    m = pre.read_movie(movies["movie_id"][0])
    S = m["shots"].shape[0]
    assert m["video"].shape == (S, cfg.video_dim) and m["audio"].shape == (S, cfg.audio_dim)
    dur = m["shots"][:, 1] - m["shots"][:, 0]
    assert dur.min() >= 1.0 - 1e-3 and dur.max() <= 10.0 + 1e-3
    assert m["text"].shape[1] == cfg.text_dim and m["text"].shape[0] == m["text_spans"].shape[0] > 0
    # speech in only part of the shots: some shots have no token overlapping them
    sp = m["text_spans"]
    has_tok = [((sp[:, 0] < e) & (sp[:, 1] > s)).any() for s, e in m["shots"]]
    assert 0.2 < np.mean(has_tok) < 0.95
    clips = ev.movies()
    assert all(re.fullmatch(r"clip\d{5}", i) for i in clips["movie_id"])
    assert set(clips["imdb_id"]).isdisjoint(set(movies["imdb_id"]))  # clips come from held-out movies


def test_lvu_files_parse_like_the_real_ones(built):
    ev_ids = set(FeatureStore.open(built.eval_store).movies()["movie_id"])
    for task in TASKS:
        real = REAL_LVU / task / "train.csv"
        expected_header = parse_lvu(real)[0] if real.exists() else HEADERS[task].split(" ")
        seen: dict[str, set[str]] = {}
        movies: dict[str, set[str]] = {}
        for split in SPLITS:
            path = built.lvu_dir / task / f"{split}.csv"
            assert path.read_bytes().endswith(b"\n") and b'"' not in path.read_bytes()
            header, rows = parse_lvu(path)
            assert header == expected_header
            assert rows, f"{path} is empty"
            ci = header.index("youtube_id")
            seen[split] = {r[ci] for r in rows}
            movies[split] = {r[ci + 1] for r in rows}
            assert seen[split] <= ev_ids, "labelled clips must exist in the eval store"
            assert all(re.fullmatch(r"tt\d{7}", r[-1]) for r in rows)
            if task in CLASSIFICATION_TASKS:
                ids = [int(r[0]) for r in rows]
                assert min(ids) >= 0 and max(ids) < N_CLASSES[task]
                assert ids == sorted(ids)
            else:
                assert all(int(v) >= 0 for r in rows for v in r[:-2])
        # splits are disjoint by clip and by source movie
        assert not (seen["train"] & seen["test"]) and not (movies["train"] & movies["test"])
        assert not (movies["train"] & movies["val"]) and not (movies["val"] & movies["test"])
    _, writer = parse_lvu(built.lvu_dir / "writer" / "train.csv")
    assert all(r[1] == "\\N" for r in writer if r[0] == "0")  # writer class 0 is unknown, as in LVU


def test_declared_class_counts_and_labelled_sizes():
    demo = generate(
        DemoConfig.preset("tiny", eval_movies=150, clips_per_movie=(3, 5), labels_per_split=(300, 60, 100))
    )
    sel = select_clips(demo)
    for task in CLASSIFICATION_TASKS:
        assert len(class_names(demo, task)) == N_CLASSES[task]
        used = {r[task] for s in SPLITS for r in sel[task][s]}
        assert used == set(range(N_CLASSES[task])), (task, sorted(used))
    n = {s: len(sel["genre"][s]) for s in SPLITS}
    assert n["train"] == 300 and n["val"] == 60 and n["test"] == 100  # hundreds, as in LVU


def test_transfer_labels(built):
    ev = FeatureStore.open(built.eval_store)
    n_shots = dict(zip(*ev.movies().select("movie_id", "n_shots")))
    attrs = pl.read_parquet(built.transfer_dir / "shot_attributes.parquet")
    assert set(attrs.columns) >= {"clip_id", "shot_index", "shot_size", "camera_motion", "split"}
    per_clip = attrs.group_by("clip_id").agg(pl.len(), pl.col("shot_index").max())
    for clip, n, mx in per_clip.iter_rows():
        assert n == n_shots[clip] and mx == n - 1
    assert attrs["shot_size"].is_between(0, 4).all() and attrs["shot_size"].n_unique() >= 3
    d = np.load(built.transfer_dir / "descriptions.npz")
    assert d["offsets"][0] == 0 and d["offsets"][-1] == len(d["tokens"]) and np.all(np.diff(d["offsets"]) > 0)
    assert d["tokens"].shape[1] == ev.dims["text"] and set(d["clip_id"]) <= set(n_shots)
    assert (built.transfer_dir / "README.md").read_text().startswith("# Transfer-task labels")


def test_idempotent_reuse_and_refusals(built, monkeypatch):
    stamp = (built.root / "demo.json").stat().st_mtime_ns
    import lmp_data.demo.build as build

    monkeypatch.setattr(build, "build_into", lambda *a, **k: pytest.fail("regenerated an existing demo"))
    again = make_demo(built.root, seed=1, size="tiny")
    assert again == built and (built.root / "demo.json").stat().st_mtime_ns == stamp
    with pytest.raises(DemoError, match="does not hold a complete demo"):
        make_demo(built.root, seed=2, size="tiny")
    with pytest.raises(ValueError, match="unknown option"):
        make_demo(built.root, seed=1, size="tiny", no_such_knob=3)
    with pytest.raises(ValueError, match="demo size 'huge'"):
        make_demo(built.root, size="huge")


def test_overwrite_and_no_partial_output(tmp_path, monkeypatch):
    out = tmp_path / "d"
    make_demo(out, seed=0, size="tiny", pretrain_movies=2, eval_movies=6)
    import lmp_data.demo.build as build

    def boom(*a, **k):
        raise RuntimeError("killed mid-build")

    monkeypatch.setattr(build, "write_transfer", boom)
    with pytest.raises(RuntimeError, match="killed"):
        make_demo(tmp_path / "e", seed=0, size="tiny", pretrain_movies=2, eval_movies=6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # nothing half-built is visible or left
    monkeypatch.undo()
    p = make_demo(out, seed=3, size="tiny", pretrain_movies=2, eval_movies=6, overwrite=True)
    assert p.info()["config"]["seed"] == 3


def _long_movie(world, director: int, genre: int, lengths: list[int], seed: int = 0):
    rng = np.random.default_rng(seed)
    facts = {**world.movie_facts(rng, lvu_only=True), "director": director, "genre": genre}
    return world.render(rng, "tt0000001", facts, lengths, {})


def test_transition_matrices_are_doubly_stochastic():
    cfg = DemoConfig.preset("tiny", seed=3)
    world = make_world(cfg)
    Z = cfg.n_setups
    for d in range(world.n_people):
        for g in range(4):
            T = world.transition_matrix(d, g)
            assert T.shape == (Z, Z) and T.min() >= 0
            np.testing.assert_allclose(T.sum(1), 1, atol=1e-12)
            np.testing.assert_allclose(T.sum(0), 1, atol=1e-12)  # -> uniform stationary distribution
            np.testing.assert_allclose(np.diag(T), cfg.genre_stay[g] + (1 - cfg.genre_stay[g]) * 0.2 / Z)
    for c in range(5):
        M = world.pairing_matrix(c)
        np.testing.assert_allclose(M.sum(1), 1)
        np.testing.assert_allclose(M.sum(0), 1)


def test_director_setup_marginals_match_but_transitions_differ():
    cfg = DemoConfig.preset("tiny", seed=3)
    world = make_world(cfg)
    Z = cfg.n_setups
    hist, trans = [], []
    for d in (0, 1):
        m = _long_movie(world, d, genre=0, lengths=[40] * 150, seed=d)
        z, same = m.setup, m.scene_of_shot[1:] == m.scene_of_shot[:-1]
        hist.append(np.bincount(z, minlength=Z) / len(z))
        t = np.bincount(z[:-1][same] * Z + z[1:][same], minlength=Z * Z).reshape(Z, Z)
        trans.append(t / t.sum())
        # the empirical transitions follow that director's grammar
        T = world.transition_matrix(d, 0)
        assert 0.5 * np.abs(t / t.sum(1, keepdims=True) - T).sum(1).mean() < 0.25
    assert np.abs(hist[0] - 1 / Z).max() < 0.02 and np.abs(hist[1] - 1 / Z).max() < 0.02
    assert 0.5 * np.abs(hist[0] - hist[1]).sum() < 0.1  # time-averaged histograms: indistinguishable
    assert 0.5 * np.abs(trans[0] - trans[1]).sum() > 0.6  # transition counts: very different


def test_way_speaking_audio_marginal_uniform_pairing_class_specific():
    cfg = DemoConfig.preset("tiny", seed=3)
    world = make_world(cfg)
    Z = cfg.n_setups
    m = _long_movie(world, 0, genre=1, lengths=[20] * 600, seed=7)
    way = np.array([s["way_speaking"] for s in m.scenes])[m.scene_of_shot]
    marg = {}
    for c in np.unique(way):
        sel = way == c
        if sel.sum() < 1000:
            continue
        z, za = m.setup[sel], m.audio_setup[sel]
        marg[c] = np.bincount(za, minlength=Z) / sel.sum()
        assert np.abs(marg[c] - 1 / Z).max() < 0.03, c  # audio alone: uniform for every class
        own = np.mean(za == world.way_perm[c][z])
        assert abs(own - (cfg.agree_prob + (1 - cfg.agree_prob) / Z)) < 0.05
        for o in range(5):
            if o != c:  # another class's mapping explains the pairs no better than chance
                assert np.mean(za == world.way_perm[o][z]) < 0.12
    assert len(marg) >= 2


@pytest.fixture(scope="module")
def headroom_small():
    pytest.importorskip("sklearn")
    from lmp_data.demo.headroom import measure

    demo = generate(
        DemoConfig.preset(
            "tiny",
            eval_movies=150,
            clips_per_movie=(3, 5),
            labels_per_split=(300, 60, 100),
            label_coupling=0.0,  # independent labels: director / way_speaking live ONLY in order / pairing
        )
    )
    tasks = ("director", "way_speaking", "scene", "relationship", "year")
    return measure(demo, tasks, probes=("chance", "base_linear", "oracle"))


def test_headroom_order_and_agreement_labels_need_context(headroom_small):
    res = headroom_small
    for task in ("director", "way_speaking"):
        uniform = 1 / N_CLASSES[task]
        assert res[task]["base_linear"] <= uniform + 0.1, res  # time-averaged features: ~chance
        assert res[task]["oracle"] >= 0.6, res  # the true setup sequences: well above


def test_headroom_content_labels_above_chance_below_oracle(headroom_small):
    res = headroom_small
    tasks = ("scene", "relationship", "year")
    base = np.mean([res[t]["base_linear"] for t in tasks])
    oracle = np.mean([res[t]["oracle"] for t in tasks])
    chance = np.mean([res[t]["chance"] for t in tasks])
    assert base >= chance + 0.1, res
    assert oracle - base >= 0.1, res


def test_truth_files(built):
    d = np.load(built.truth_dir / "clip_setups.npz")
    ev = FeatureStore.open(built.eval_store)
    n_shots = dict(zip(*ev.movies().select("movie_id", "n_shots")))
    assert list(np.diff(d["offsets"])) == [n_shots[c] for c in d["clip_id"]]
    cfg = DemoConfig.from_dict(built.info()["config"])
    assert d["video_setup"].max() < cfg.n_setups and d["audio_setup"].min() >= 0
    assert built.info()["generator_version"] == cfg.generator_version == 2


def test_stale_demo_from_older_generator_is_rebuilt(tmp_path):
    out = tmp_path / "old"
    (out / "pretrain.zarr").mkdir(parents=True)
    cfg = DemoConfig.preset("tiny", seed=0, pretrain_movies=2, eval_movies=6).to_dict()
    del cfg["generator_version"]  # what the sign-carrier generator (format version 1) wrote
    (out / "demo.json").write_text(json.dumps({"format": "lmp-demo", "version": 1, "config": cfg}))
    p = make_demo(out, seed=0, size="tiny", pretrain_movies=2, eval_movies=6)  # neither reused nor refused
    assert p.info()["version"] == 2 and p.info()["config"]["generator_version"] == 2
    with pytest.raises(ValueError, match="generator_version"):
        generate(DemoConfig.preset("tiny", generator_version=1))


def test_cli_help_and_tiny_run(tmp_path, capsys):
    from lmp_data.cli import main

    with pytest.raises(SystemExit) as e:
        main(["demo", "--help"])
    assert e.value.code == 0
    assert "--seed" in capsys.readouterr().out
    out = tmp_path / "cli"
    rc = main(["demo", str(out), "--seed", "4", "--size", "tiny", "--movies", "3", "--set", "eval_movies=9"])
    assert rc == 0
    info = json.loads((out / "demo.json").read_text())
    assert info["config"]["pretrain_movies"] == 3 and info["config"]["eval_movies"] == 9
    assert info["config"]["seed"] == 4 and info["counts"]["pretrain_movies"] == 3
    assert "pretrain_store" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no_such_key"):
        main(["demo", str(out), "--size", "tiny", "--set", "no_such_key=1"])
