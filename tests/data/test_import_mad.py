"""`lmp-data import-mad` on small files written in MAD's released layout, then the path a researcher
takes from there: a few pretraining steps on the video + text store and an LVU probe of the export.

MAD's layout (its README's data documentation and its baselines' loaders): the frame feature file has
one [frames, D] dataset per movie id at its root (5 fps); each split's annotation JSON maps an
annotation id to {movie, sentence, timestamps, ext_timestamps, movie_duration}; the token feature file
has one [tokens, D] dataset per annotation id.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from lmp_data import FeatureStore, ShotWindows  # noqa: E402
from lmp_data.windows import overlaps  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "experiments" / "configs" / "pretrain" / "tiny.yaml"
FPS = 5.0
FRAMES = "CLIP_B32_frames_features_5fps.h5"
TOKENS = "CLIP_B32_language_tokens_features.h5"
DV, DL = 32, 16


def run_cli(*argv: str) -> int:
    from lmp_data.cli import main

    return main([str(a) for a in argv])


def write_mad(root: Path, movies: dict[str, dict], seed: int = 0, centres=None) -> dict[str, dict]:
    """MAD-layout files under `root` for `movies` {id: {"cuts": [frame, ...], "frames": n, "split": s,
    "genre": g (optional)}}. Frames of a shot are its centre plus small noise (CLIP-like: a cut is a
    jump of direction). One sentence lies inside every other shot. Returns per movie the truth:
    cuts, and [(annotation id, shot index, token features)]."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    truth: dict[str, dict] = {}
    anns: dict[str, dict] = {}
    ann_id = 1000 * (seed + 1)
    with h5py.File(root / FRAMES, "w") as ff, h5py.File(root / TOKENS, "w") as tf:
        for movie, spec in movies.items():
            n, cuts = spec["frames"], list(spec["cuts"])
            edges = [0, *cuts, n]
            parts = []
            for a, b in zip(edges, edges[1:]):
                c = rng.normal(size=DV)
                if centres is not None and "genre" in spec:
                    c = c + centres[spec["genre"]]
                parts.append(c + 0.15 * rng.normal(size=(b - a, DV)))
            ff.create_dataset(movie, data=np.concatenate(parts).astype(np.float32))
            sents = []
            for j, (a, b) in enumerate(zip(edges, edges[1:])):
                if j % 2 or b - a < 4:
                    continue
                ann_id += 1
                start, end = (a + 1) / FPS + 0.05, (b - 1) / FPS - 0.05
                tok = rng.normal(size=(int(rng.integers(3, 7)), DL)).astype(np.float32)
                tf.create_dataset(str(ann_id), data=tok)
                anns.setdefault(spec["split"], {})[str(ann_id)] = {
                    "movie": movie,
                    "sentence": f"Someone walks through shot {j} of {movie}.",
                    "timestamps": [start, end],
                    "ext_timestamps": [start, end],
                    "movie_duration": n / FPS,
                }
                sents.append((str(ann_id), j, tok))
            truth[movie] = {"cuts": cuts, "sentences": sents, "frames": n}
    for split, entries in anns.items():
        (root / f"MAD_{split}.json").write_text(json.dumps(entries))
    return truth


def random_movie(rng, split: str, n_shots: int, **extra) -> dict:
    lengths = rng.integers(8, 30, n_shots)
    cuts = np.cumsum(lengths)[:-1].tolist()
    return {"cuts": cuts, "frames": int(lengths.sum()), "split": split, **extra}


@pytest.fixture(scope="module")
def mad(tmp_path_factory):
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("mad")
    movies = {
        "3001_21_JUMP_STREET": random_movie(rng, "train", 14),
        "3002_30_MINUTES_OR_LESS": random_movie(rng, "train", 12),
        "3003_A_GOOD_DAY": random_movie(rng, "train", 16),
        "1004_TEST_MOVIE": random_movie(rng, "test", 10),
    }
    return root, write_mad(root, movies)


@pytest.fixture(scope="module")
def store(mad, tmp_path_factory) -> Path:
    root, _ = mad
    out = tmp_path_factory.mktemp("stores") / "mad.zarr"
    anns = sorted(root.glob("MAD_*.json"))
    rc = run_cli("import-mad", root / FRAMES, out, "--annotations", *anns, "--text-features", root / TOKENS,
                 "--dtype", "float32")  # fmt: skip
    assert rc == 0
    return out


# ------------------------------------------------------------------------------------- round trip
def test_round_trip_recovers_shots_and_places_sentences(mad, store):
    _, truth = mad
    st = FeatureStore.open(store)
    assert st.modalities == ("video", "text") and st.missing == ("audio",)
    assert st.dims == {"video": DV, "text": DL}
    assert st.encoders["video"]["name"] == f"mad:{Path(FRAMES).stem}"
    assert st.encoders["video"]["fps"] == FPS and st.encoders["text"]["source"] == TOKENS
    df = st.movies()
    assert sorted(df["movie_id"]) == sorted(truth)
    assert dict(zip(df["movie_id"], df["split"]))["1004_TEST_MOVIE"] == "test"
    assert set(df["shot_source"]) == {"detected"}
    for movie, t in truth.items():
        arr = st.read_movie(movie)
        assert set(arr) == {"shots", "video", "text", "text_spans"}  # no audio array on disk
        shots = arr["shots"]
        found = np.rint(shots[1:, 0] * FPS).astype(int)
        # every known boundary recovered within one frame (0.2 s at 5 fps), and nothing else
        assert len(found) == len(t["cuts"]), (movie, found.tolist(), t["cuts"])
        assert np.abs(found - np.asarray(t["cuts"])).max() <= 1, (movie, found.tolist(), t["cuts"])
        assert shots[0, 0] == 0 and shots[-1, 1] == pytest.approx(t["frames"] / FPS)
        # tokens: MAD's own features, each on the shot its sentence lies in (and on no other)
        n_tok = sum(len(tok) for _, _, tok in t["sentences"])
        assert arr["text"].shape == (n_tok, DL)
        starts = arr["text_spans"][:, 0]
        for _ann, shot, tok in t["sentences"]:
            a = (([0, *t["cuts"]][shot]) + 1) / FPS + 0.05
            rows = np.flatnonzero(np.isclose(starts, a))
            assert len(rows) == len(tok)
            np.testing.assert_allclose(arr["text"][rows], tok, rtol=1e-6)
            span = arr["text_spans"][rows[0]]
            hit = np.flatnonzero(overlaps(span[0], span[1], shots[:, 0], shots[:, 1]))
            assert hit.tolist() == [shot]


def test_sentences_reach_the_right_shots_in_window_batches(mad, store):
    """What the model sees: `token_shot` of a window batch puts each sentence's tokens on its shot."""
    _, truth = mad
    st = FeatureStore.open(store)
    movie = "3001_21_JUMP_STREET"
    t = truth[movie]
    k = len(t["cuts"]) + 1
    ds = ShotWindows(st, k, mode="eval", movies=[movie])
    b = ds.__getitems__([0])
    assert tuple(b["audio"].shape) == (1, k, 0)  # the missing modality: zero width
    per_shot = b["token_shot"][0].sum(0).tolist()
    expect = [0] * k
    for _ann, shot, tok in t["sentences"]:
        expect[shot] += len(tok)
    assert per_shot == expect
    assert (b["token_shot"][0].sum(1) == 1).all()  # every token on exactly one shot


def test_resume_skips_and_boundaries_file_is_used(mad, store, tmp_path, capsys):
    root, truth = mad
    anns = sorted(root.glob("MAD_*.json"))
    assert (
        run_cli("import-mad", root / FRAMES, store, "--annotations", *anns, "--text-features", root / TOKENS)
        == 0
    )
    assert "imported 0, skipped 4" in capsys.readouterr().out
    # given boundaries (seconds) replace detection for the movies they list
    movie = "3002_30_MINUTES_OR_LESS"
    given = [1.0, 2.4, 7.0]
    (tmp_path / "cuts.json").write_text(json.dumps({movie: given}))
    out = tmp_path / "given.zarr"
    rc = run_cli("import-mad", root / FRAMES, out, "--annotations", *anns, "--text-features", root / TOKENS,
                 "--boundaries", tmp_path / "cuts.json", "--movies", f"{movie},1004_TEST_MOVIE")  # fmt: skip
    assert rc == 0
    st = FeatureStore.open(out)
    assert st.read_movie(movie)["shots"][1:, 0].tolist() == pytest.approx(given)
    df = st.movies()
    assert dict(zip(df["movie_id"], df["shot_source"])) == {
        movie: "boundaries",
        "1004_TEST_MOVIE": "detected",
    }


def test_offline_text_encoder_when_no_token_features(mad, tmp_path, capsys):
    """Without MAD's token file the sentences go through the repo's offline text encoder (minilm)."""
    root, truth = mad
    out = tmp_path / "minilm.zarr"
    movie = "1004_TEST_MOVIE"
    rc = run_cli("import-mad", root / FRAMES, out, "--annotations", root / "MAD_test.json", "--movies", movie,
                 "--device", "cpu")  # fmt: skip
    assert rc == 0, capsys.readouterr()
    st = FeatureStore.open(out)
    assert st.encoders["text"]["name"] == "minilm" and st.dims["text"] == 384
    arr = st.read_movie(movie)
    assert len(arr["text"]) >= 6 * len(truth[movie]["sentences"])  # word tokens of each sentence
    starts = np.unique(arr["text_spans"][:, 0]).round(6).tolist()
    assert len(starts) == len(truth[movie]["sentences"])


# ----------------------------------------------------------------------------------- bad input
def test_bad_movies_are_reported_and_do_not_sink_the_import(tmp_path, capsys):
    rng = np.random.default_rng(3)
    root = tmp_path / "mad"
    write_mad(root, {f"m{i}": random_movie(rng, "train", 5) for i in range(3)})
    with h5py.File(root / FRAMES, "a") as f:
        nan = np.array(f["m1"][()])
        nan[4, 2] = np.nan
        del f["m1"]
        f.create_dataset("m1", data=nan)
        f.create_dataset("flat", data=np.zeros(10, np.float32))  # a 1-D dataset: not [frames, D]
        f.create_group("a_group")
    anns = json.loads((root / "MAD_train.json").read_text())
    first = next(k for k, v in anns.items() if v["movie"] == "m2")
    del anns[first]["sentence"]
    anns["999"] = {"sentence": "no movie"}
    (root / "MAD_train.json").write_text(json.dumps(anns))
    out = tmp_path / "store"
    rc = run_cli("import-mad", root / FRAMES, out, "--annotations", root / "MAD_train.json",
                 "--text-features", root / TOKENS)  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 1
    lines = [line for line in cap.err.splitlines() if line.startswith("FAILED")]
    assert len(lines) == 4, cap.err
    msg = "\n".join(lines)
    assert f"FAILED m1: {root / FRAMES}: movie 'm1': frame features hold NaN or inf" in msg
    assert "FAILED flat: " in msg and "movie 'flat': frame features must be [frames >= 1, dim >= 1]" in msg
    assert "FAILED a_group:" in msg and "not a dataset" in msg
    assert f"FAILED m2: MAD_train.json: annotation {first!r}: field 'sentence'" in msg
    assert "SKIPPED annotation MAD_train.json: annotation '999': field 'movie' is None" in cap.err
    assert "imported 1, skipped 0 (already in store), failed 4, 1 bad annotations skipped" in cap.out
    st = FeatureStore.open(out)
    assert st.movies()["movie_id"].to_list() == ["m0"]
    chk = st.check()
    assert chk.ok and not chk.temporary  # nothing half-written is left or visible


@pytest.mark.parametrize(
    "case, expect",
    [
        ("frames_not_h5", "not a readable HDF5 frame features file"),
        ("annotations_missing", "annotation file not found"),
        ("annotations_list", "expected MAD's JSON object"),
        ("tokens_missing", "token features file not found"),
    ],
)
def test_an_import_that_cannot_start_is_one_line(tmp_path, capsys, case, expect):
    rng = np.random.default_rng(4)
    root = tmp_path / "mad"
    write_mad(root, {"m0": random_movie(rng, "train", 4)})
    frames, ann, tokens = root / FRAMES, root / "MAD_train.json", root / TOKENS
    if case == "frames_not_h5":
        frames.write_text("not hdf5")
    elif case == "annotations_missing":
        ann = root / "MAD_val.json"
    elif case == "annotations_list":
        ann.write_text("[1, 2]")
    else:
        tokens = root / "nope.h5"
    rc = run_cli("import-mad", frames, tmp_path / "store", "--annotations", ann, "--text-features", tokens)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("lmp-data import-mad: error: ") and expect in err[0]
    assert not (tmp_path / "store" / "store.json").exists() or case == "tokens_missing"


def test_detector_is_pyscenedetects_adaptive_threshold():
    """One jump in a calm series is a cut; a slow drift (camera motion) is none; min shot length holds."""
    from lmp_data.feature_shots import FeatureShotConfig, detect_cuts

    calm = np.full(60, 0.06)
    calm[20] = 0.6
    calm[22] = 0.6  # 2 frames after a cut: shorter than min_shot_frames=3
    calm[40] = 0.6
    assert detect_cuts(calm).tolist() == [20, 40]
    drift = np.linspace(0.05, 0.3, 60)
    assert detect_cuts(drift).tolist() == []
    assert detect_cuts(calm, FeatureShotConfig(min_content_val=0.7)).tolist() == []
    # the vectorised engine (the default) makes exactly PySceneDetect's own AdaptiveDetector decisions
    rng = np.random.default_rng(0)
    for trial in range(60):
        n = int(rng.integers(1, 200))
        s = rng.uniform(0, 0.1, n)
        s[rng.integers(0, n, max(1, n // 15))] = rng.uniform(0.05, 1, max(1, n // 15))
        if trial % 5 == 0:
            s[rng.integers(0, n, n // 3)] = 0  # zero local means: PySceneDetect's ratio of 255
        cfg = FeatureShotConfig(
            adaptive_threshold=float(rng.uniform(1.5, 4)),
            window_width=int(rng.integers(1, 4)),
            min_content_val=float(rng.uniform(0, 0.2)),
            min_shot_frames=int(rng.integers(1, 6)),
        )
        fast = detect_cuts(s, cfg)
        assert fast.tolist() == detect_cuts(s, cfg, engine="scenedetect").tolist(), (trial, cfg)


# ------------------------------------------------------ pretraining and a probe on a video+text store
@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """An LVU-style clip store imported from MAD-layout files (same encoders as the pretraining store),
    whose genre is planted in the frame features, and LVU genre labels for it."""
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(11)
    centres = np.random.default_rng(99).normal(size=(4, DV)) * 1.5
    ids = [f"clip{i:03d}" for i in range(48)]
    genre = rng.integers(0, 4, len(ids))
    movies = {c: random_movie(rng, "test", int(rng.integers(3, 7)), genre=int(g)) for c, g in zip(ids, genre)}
    write_mad(root / "mad", movies, seed=5, centres=centres)
    out = root / "clips.zarr"
    rc = run_cli("import-mad", root / "mad" / FRAMES, out, "--annotations", root / "mad" / "MAD_test.json",
                 "--text-features", root / "mad" / TOKENS, "--dtype", "float32")  # fmt: skip
    assert rc == 0
    labels = root / "lvu"
    (labels / "genre").mkdir(parents=True)
    split = ["train"] * 28 + ["val"] * 10 + ["test"] * 10
    for s in ("train", "val", "test"):
        rows = [f"{genre[i]} g{genre[i]} {c} tt{i:07d}" for i, c in enumerate(ids) if split[i] == s]
        (labels / "genre" / f"{s}.csv").write_text(
            "class_id class_name youtube_id imdb_id\n" + "\n".join(rows) + "\n"
        )
    return out, labels


def test_pretrain_on_video_text_store_then_probe_its_export(store, clips, tmp_path, caplog, capsys):
    from lmp_bench.cli import main as bench
    from lmp_model.export import load_pretrained
    from lmp_model.pretrain.cli import main as pretrain

    caplog.set_level(logging.INFO, logger="lmp_model.pretrain")
    rc = pretrain([
        str(TINY), f"data.store={store}", f"train.out_dir={tmp_path / 'runs'}", "train.steps=3",
        "train.ckpt_every=0", "train.threads=1", "mlflow.enabled=false", "name=mad",
    ])  # fmt: skip
    assert rc == 0
    said = [r.getMessage() for r in caplog.records if "has no audio" in r.getMessage()]
    assert len(said) == 1, said  # said once, naming what falls with the missing modality
    for term in ("intra/audio", "inter/v2a", "inter/a2v", "cross/a2l", "cross/l2a", "window/audio"):
        assert term in said[0]
    run = tmp_path / "runs" / "mad"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = {k for r in rows for k in r if k.startswith("loss/")}
    assert {"loss/intra/video", "loss/intra/text", "loss/inter/v2l", "loss/inter/l2v"} <= logged
    assert not any("audio" in k or "cross" in k or "v2a" in k for k in logged)
    assert all(np.isfinite(r[k]) for r in rows for k in r if k.startswith("loss/"))
    model = load_pretrained(run / "export")
    assert model.modalities == ("video", "text") and model.dims == {"video": DV, "text": DL}
    assert not [k for k in model.state_dict() if ".audio" in k or k.startswith("cross.")]

    # a probe on the export: the default features become the ones that exist (v_ctx)
    clip_store, labels = clips
    capsys.readouterr()
    out = tmp_path / "lvu.parquet"
    rc = bench(["lvu", "--model", str(run / "export"), "--store", str(clip_store), "--labels", str(labels),
                "--tasks", "genre", "--seeds", "1", "--no-mlflow", "--out", str(out)])  # fmt: skip
    assert rc == 0
    import polars as pl

    res = pl.read_parquet(out)
    assert res["features"].unique().to_list() == ["v_ctx"] and res.height == 1
    assert res["value"][0] > 40.0  # 4 genres planted in the frames: chance is 25 %
    # asking for a feature that needs audio: one line saying so
    capsys.readouterr()
    rc = bench(["lvu", "--model", str(run / "export"), "--store", str(clip_store), "--labels", str(labels),
                "--tasks", "genre", "--seeds", "1", "--no-mlflow", "--features", "v_ctx+a_ctx"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert "a_ctx" in err[0] and "need audio" in err[0] and "v_ctx+l_ctx+l_shot" in err[0]
