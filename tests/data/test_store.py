"""FeatureStore: round trip, manifest, every rejection, overwrite, atomicity and concurrent writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from lmp_data import FeatureStore, StoreError

ENC = {
    "video": {"name": "vid", "dim": 8, "checksum": "abc"},
    "audio": {"name": "aud", "dim": 4},
    "text": {"name": "txt", "dim": 6},
}
SRC = str(Path(__file__).resolve().parents[2] / "packages" / "data" / "src")


def make_movie(seed: int, n_shots: int = 12, n_tokens: int = 20, dims=(8, 4, 6)) -> dict[str, np.ndarray]:
    """A valid random movie: shots with gaps, tokens inside the movie (some long, some zero-length)."""
    rng = np.random.default_rng(seed)
    b = 5.0 + np.cumsum(rng.uniform(0.5, 3.0, n_shots + 1))
    shots = np.stack([b[:-1], b[1:] - rng.uniform(0.0, 0.3, n_shots)], 1)
    a = rng.uniform(b[0], b[-1] - 0.4, n_tokens)
    spans = np.stack([a, np.minimum(a + rng.uniform(0.0, 4.0, n_tokens), shots[-1, 1])], 1)
    spans[::5, 1] = spans[::5, 0]
    return {
        "shots": shots,
        "video": rng.normal(size=(n_shots, dims[0])),
        "audio": rng.normal(size=(n_shots, dims[1])),
        "text": rng.normal(size=(n_tokens, dims[2])),
        "text_spans": spans,
    }


@pytest.fixture
def store(tmp_path):
    return FeatureStore.create(tmp_path / "store", encoders=ENC)


def test_create_open_round_trip(store, tmp_path):
    mv = make_movie(0)
    meta = {
        "imdb_id": "tt0001",
        "title": "A film",
        "year": 1999,
        "genres": ["drama", "crime"],
        "split": "train",
    }
    store.write_movie("tt0001", **mv, meta=meta)
    s2 = FeatureStore.open(tmp_path / "store")
    assert s2.encoders == ENC and s2.dims == {"video": 8, "audio": 4, "text": 6}
    got = s2.read_movie("tt0001")
    assert got["video"].dtype == np.float16 and got["shots"].dtype == np.float64
    for k, v in mv.items():
        tol = 0 if k in ("shots", "text_spans") else 2e-3
        np.testing.assert_allclose(got[k], v, atol=tol, rtol=tol)
    df = s2.movies()
    assert df.columns[:4] == ["movie_id", "n_shots", "n_tokens", "duration"]
    row = df.row(0, named=True)
    assert row["n_shots"] == 12 and row["n_tokens"] == 20 and row["genres"] == ["drama", "crime"]
    assert row["duration"] == pytest.approx(mv["shots"][-1, 1] - mv["shots"][0, 0])
    assert row["year"] == 1999 and row["split"] == "train"
    assert s2.meta("tt0001") == meta
    assert s2.has_movie("tt0001") and not s2.has_movie("tt0002")


def test_movie_without_tokens_and_heterogeneous_meta(store):
    mv = make_movie(1, n_tokens=0)
    assert mv["text"].shape == (0, 6)
    store.write_movie("a", **mv, meta={"audio_missing": True})
    store.write_movie("b", **make_movie(2), meta={"title": "B"})
    store.write_movie("c", **{**make_movie(3, n_tokens=0), "text": [], "text_spans": []})
    df = store.movies()
    assert df["movie_id"].to_list() == ["a", "b", "c"]
    assert df["n_tokens"].to_list() == [0, 20, 0]
    assert df["audio_missing"].to_list() == [True, None, None]
    assert store.read_movie("a")["text"].shape == (0, 6)


def test_empty_store_and_create_errors(store, tmp_path):
    df = store.movies()
    assert df.height == 0 and df.columns == ["movie_id", "n_shots", "n_tokens", "duration"]
    with pytest.raises(StoreError, match="already exists"):
        FeatureStore.create(tmp_path / "store", encoders=ENC)
    assert FeatureStore.create(tmp_path / "store", encoders=ENC, exist_ok=True).dims == store.dims
    with pytest.raises(StoreError, match="exists with encoders"):
        FeatureStore.create(
            tmp_path / "store", encoders={**ENC, "text": {"name": "t", "dim": 7}}, exist_ok=True
        )
    with pytest.raises(StoreError, match="no store.json"):
        FeatureStore.open(tmp_path / "nowhere")
    with pytest.raises(StoreError, match=r"encoders\.audio\.dim"):
        FeatureStore.create(tmp_path / "s2", encoders={**ENC, "audio": {"name": "a", "dim": 0}})
    with pytest.raises(StoreError, match=r"including \['video'\]"):  # audio/text optional, video not
        FeatureStore.create(tmp_path / "s3", encoders={"audio": ENC["audio"], "text": ENC["text"]})
    with pytest.raises(StoreError, match=r"keys from \['video', 'audio', 'text'\]"):
        FeatureStore.create(tmp_path / "s4", encoders={**ENC, "depth": ENC["video"]})
    with pytest.raises(KeyError, match="nope"):
        store.read_movie("nope")


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "a\\b", "x" * 129, "é", "a b", None])
def test_rejects_bad_movie_ids(store, bad):
    with pytest.raises(StoreError, match="movie id"):
        store.write_movie(bad, **make_movie(0))
    with pytest.raises(StoreError, match="movie id"):
        store.has_movie(bad)
    assert store.movies().height == 0


def test_accepts_edge_movie_ids(store):
    for mid in ("x" * 128, "a.b-c_D9", "..."):
        store.write_movie(mid, **make_movie(0))
    assert store.movies().height == 3


def _mutate(mv: dict, field: str, fn) -> dict:
    mv = {k: np.array(v, dtype=float) for k, v in mv.items()}
    mv[field] = fn(mv[field])
    return mv


def _set(idx, value):
    def f(a):
        a[idx] = value
        return a

    return f


REJECTIONS = [
    ("video", lambda a: a[:, :7], "video", "expected dim 8"),
    ("audio", lambda a: a[:, :3], "audio", "expected dim 4"),
    ("text", lambda a: np.zeros((a.shape[0], 5)), "text", "expected dim 6"),
    ("video", _set((3, 2), np.nan), "video", "NaN or inf"),
    ("audio", _set((0, 0), np.inf), "audio", "NaN or inf"),
    ("text", _set((4, 1), -np.inf), "text", "NaN or inf"),
    ("shots", _set((2, 1), np.nan), "shots", "NaN or inf"),
    ("text_spans", _set((1, 0), np.nan), "text_spans", "NaN or inf"),
    ("shots", lambda a: a[::-1].copy(), "shots", "non-positive length|not sorted"),
    ("shots", lambda a: np.stack([a[:, 0], a[:, 0]], 1), "shots", "non-positive length"),
    ("shots", _set((3, 1), 1e4), "shots", "overlaps"),
    ("shots", lambda a: np.concatenate([a[:1], a[:1] + [0, 0.1], a[2:]]), "shots", "not sorted|overlaps"),
    ("shots", lambda a: a[:, 0], "shots", "expected 2 dims"),
    ("video", lambda a: a[:-1], "video", "expected 12 rows"),
    ("audio", lambda a: np.concatenate([a, a[:1]]), "audio", "expected 12 rows"),
    ("text_spans", lambda a: a[:-1], "text_spans", "19 rows but 'text' has 20"),
    ("text_spans", _set((0, 0), 0.0), "text_spans", "outside the movie"),
    ("text_spans", _set((0, 1), 1e5), "text_spans", "outside the movie|ends before"),
    (
        "text_spans",
        lambda a: np.concatenate([a[:1], a[1:2, ::-1], a[2:]]),
        "text_spans",
        "ends before it starts",
    ),
    ("video", lambda a: a[None], "video", "expected 2 dims"),
    ("video", _set((0, 0), 70000.0), "video", "overflow float16"),
]


@pytest.mark.parametrize(("field", "fn", "named", "msg"), REJECTIONS)
def test_rejections_name_movie_and_field(store, field, fn, named, msg):
    mv = _mutate(make_movie(0), field, fn)
    with pytest.raises(StoreError, match=msg) as ei:
        store.write_movie("mov42", **mv)
    assert "'mov42'" in str(ei.value) and f"'{named}'" in str(ei.value)
    assert not store.has_movie("mov42") and store.movies().height == 0
    assert list((store.path / "movies").iterdir()) == []


def test_span_epsilon_is_allowed(store):
    mv = make_movie(0)
    mv["text_spans"][0] = [mv["shots"][0, 0] - 5e-4, mv["shots"][0, 0] + 0.1]
    store.write_movie("m", **mv)
    assert store.has_movie("m")


def test_rejects_bad_meta(store):
    with pytest.raises(StoreError, match=r"'m'.*'meta'.*reserved"):
        store.write_movie("m", **make_movie(0), meta={"n_shots": 3})
    with pytest.raises(StoreError, match=r"'m'.*'meta'.*JSON"):
        store.write_movie("m", **make_movie(0), meta={"x": object()})
    assert store.movies().height == 0


def test_overwrite(store):
    a, b = make_movie(0), make_movie(1, n_shots=7)
    store.write_movie("m", **a, meta={"title": "old"})
    with pytest.raises(StoreError, match="exists.*overwrite=True"):
        store.write_movie("m", **b)
    np.testing.assert_allclose(store.read_movie("m")["video"], a["video"], atol=2e-3, rtol=2e-3)
    store.write_movie("m", **b, meta={"title": "new"}, overwrite=True)
    got = store.read_movie("m")
    assert got["shots"].shape == (7, 2)
    np.testing.assert_allclose(got["video"], b["video"], atol=2e-3, rtol=2e-3)
    assert store.movies()["title"].to_list() == ["new"]
    assert len(list((store.path / "movies").iterdir())) == 1  # the old group is gone


def test_delete_and_cleanup(store):
    store.write_movie("a", **make_movie(0))
    store.write_movie("b", **make_movie(1))
    store.delete_movie("a")
    assert store.movies()["movie_id"].to_list() == ["b"] and not store.has_movie("a")
    assert len(list((store.path / "movies").iterdir())) == 1
    (store.path / "movies" / ".tmp-x.123").mkdir()
    (store.path / "movies" / "orphan.456").mkdir()
    (store.path / "manifest" / ".tmp-x.123.parquet").write_bytes(b"")
    assert store.cleanup(older_than_s=3600) == []  # too young: could be a write in progress
    assert sorted(store.cleanup(older_than_s=0)) == [
        "manifest/.tmp-x.123.parquet",
        "movies/.tmp-x.123",
        "movies/orphan.456",
    ]
    assert store.read_movie("b")["shots"].shape == (12, 2)


def test_load_all_concatenates(store):
    movies = {m: make_movie(i, n_shots=5 + i, n_tokens=3 * i) for i, m in enumerate(["a", "b", "c"])}
    for m, mv in movies.items():
        store.write_movie(m, **mv)
    mem = store.load_all(["c", "a"])
    assert mem.movie_ids == ["c", "a"] and mem.video.dtype == np.float32
    assert mem.shot_offsets.tolist() == [0, 7, 12] and mem.token_offsets.tolist() == [0, 6, 6]
    for m in ("c", "a"):
        got, ref = mem.movie(m), store.read_movie(m)
        order = np.argsort(ref["text_spans"][:, 0], kind="stable")
        np.testing.assert_array_equal(got["video"], ref["video"].astype(np.float32))
        np.testing.assert_array_equal(got["audio"], ref["audio"].astype(np.float32))
        np.testing.assert_array_equal(got["text"], ref["text"][order].astype(np.float32))
        np.testing.assert_array_equal(got["text_spans"], ref["text_spans"][order])
    assert store.load_all(dtype="float16").video.dtype == np.float16
    with pytest.raises(KeyError, match="zz"):
        store.load_all(["zz"])


# -- processes -----------------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys, time, numpy as np, polars as pl, zarr
    sys.path.insert(0, {src!r})
    from lmp_data import FeatureStore
    store = FeatureStore.open({path!r})
    stage = {stage!r}
    if stage == "arrays":  # stall after the first array of the group
        orig = zarr.Group.create_array
        def slow(self, *a, **k):
            r = orig(self, *a, **k)
            print("WRITING", flush=True)
            time.sleep(60)
            return r
        zarr.Group.create_array = slow
    else:  # stall after the group is in place, before the manifest row is published
        orig = pl.DataFrame.write_parquet
        def slow(self, *a, **k):
            orig(self, *a, **k)
            print("WRITING", flush=True)
            time.sleep(60)
        pl.DataFrame.write_parquet = slow
    rng = np.random.default_rng(0)
    S = 50
    b = np.arange(S + 1, dtype=float)
    store.write_movie("victim", shots=np.stack([b[:-1], b[1:]], 1), video=rng.normal(size=(S, 8)),
                      audio=rng.normal(size=(S, 4)), text=np.zeros((0, 6)), text_spans=np.zeros((0, 2)),
                      overwrite={overwrite!r})
    """
)


@pytest.mark.parametrize("stage", ["arrays", "manifest"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_killed_writer_leaves_nothing_visible(store, stage, overwrite):
    store.write_movie("other", **make_movie(0))
    if overwrite:
        store.write_movie("victim", **make_movie(5))
    code = CHILD.format(src=SRC, path=str(store.path), stage=stage, overwrite=overwrite)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "WRITING"
        # mid-write, another reader sees only the complete movies
        assert FeatureStore.open(store.path).movies()["movie_id"].to_list() == (
            ["other", "victim"] if overwrite else ["other"]
        )
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    s2 = FeatureStore.open(store.path)
    if overwrite:  # the old version survives intact
        assert s2.movies()["movie_id"].to_list() == ["other", "victim"]
        assert s2.read_movie("victim")["shots"].shape == (12, 2)
    else:
        assert s2.movies()["movie_id"].to_list() == ["other"] and not s2.has_movie("victim")
        with pytest.raises(KeyError):
            s2.read_movie("victim")
    np.testing.assert_allclose(s2.read_movie("other")["audio"], make_movie(0)["audio"], atol=2e-3, rtol=2e-3)
    assert s2.cleanup(older_than_s=0)  # leftovers of the killed write are found and removed
    assert len(list((store.path / "movies").iterdir())) == s2.movies().height
    s2.write_movie("victim", **make_movie(3), overwrite=overwrite)  # and the id can be written again
    assert s2.read_movie("victim")["shots"].shape == (12, 2)


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {src!r})
    sys.path.insert(0, {tests!r})
    from test_store import make_movie
    from lmp_data import FeatureStore, StoreError
    store = FeatureStore.open({path!r})
    barrier = Path({barrier!r})
    (barrier / str({rank!r})).touch()
    while len(list(barrier.iterdir())) < {n!r}:  # start together, after both finished importing
        time.sleep(0.002)
    t_start, ok = time.time(), 0
    for name, seed in {jobs!r}:
        try:
            store.write_movie(name, **make_movie(seed, n_shots=40, n_tokens=60), meta={{"seed": seed}})
            ok += 1
        except StoreError as e:
            print("ERR", e, flush=True)
    print("SPAN", t_start, time.time(), flush=True)
    print("OK", ok, flush=True)
    """
)


def _run_writers(store, jobs_per_proc, check_overlap=True):
    barrier = store.path.parent / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER.format(
                    src=SRC,
                    tests=str(Path(__file__).parent),
                    path=str(store.path),
                    barrier=str(barrier),
                    rank=rank,
                    n=len(jobs_per_proc),
                    jobs=jobs,
                ),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank, jobs in enumerate(jobs_per_proc)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    spans = [
        next(tuple(map(float, ln.split()[1:])) for ln in o[0].splitlines() if ln.startswith("SPAN"))
        for o in outs
    ]
    if check_overlap:
        assert max(s[0] for s in spans) < min(s[1] for s in spans), f"writers did not overlap: {spans}"
    return [o[0] for o in outs]


def test_two_concurrent_writers_different_movies(store):
    jobs = [[(f"p0m{i}", i) for i in range(6)], [(f"p1m{i}", 100 + i) for i in range(6)]]
    outs = _run_writers(store, jobs)
    assert [o.strip().splitlines()[-1] for o in outs] == ["OK 6", "OK 6"]
    df = store.movies()
    assert df.height == 12 and df.filter(pl.col("n_shots") != 40).height == 0
    for name, seed in jobs[0] + jobs[1]:
        got = store.read_movie(name)
        np.testing.assert_allclose(got["video"], make_movie(seed, 40, 60)["video"], atol=2e-3, rtol=2e-3)
        assert store.meta(name) == {"seed": seed}


def test_two_concurrent_writers_same_id_one_wins(store):
    outs = _run_writers(store, [[("same", 1)], [("same", 2)]], check_overlap=False)
    assert sorted(o.strip().splitlines()[-1] for o in outs) == ["OK 0", "OK 1"]
    assert "exists" in "".join(outs) or "concurrently" in "".join(outs)
    seed = store.meta("same")["seed"]
    np.testing.assert_allclose(
        store.read_movie("same")["text"], make_movie(seed, 40, 60)["text"], atol=2e-3, rtol=2e-3
    )
    store.cleanup(older_than_s=0)
    assert len(list((store.path / "movies").iterdir())) == 1
