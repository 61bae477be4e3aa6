"""ShotWindows + collate_windows against brute force over the stored movie arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from lmp_data import BATCH_KEYS, FeatureStore, ShotWindows, WindowsConfig, collate_windows

DIMS = {"video": 5, "audio": 3, "text": 4}
ENC = {m: {"name": m, "dim": d} for m, d in DIMS.items()}


def make_movie(rng, n_shots: int, n_tokens: int) -> dict[str, np.ndarray]:
    """Shots with gaps; tokens in random order, long ones spanning several shots, zero-length ones,
    ones in gaps and ones exactly on shot boundaries."""
    b = np.cumsum(rng.uniform(0.5, 3.0, n_shots + 1))
    ends = b[1:] - rng.choice([0.0, 0.4], n_shots)
    shots = np.stack([b[:-1], ends], 1)
    a = rng.uniform(b[0], ends[-1] - 0.1, n_tokens)
    dur = rng.choice([0.0, 0.3, 1.0, 6.0], n_tokens)
    spans = np.stack([a, np.minimum(a + dur, ends[-1])], 1)
    if n_tokens > 4:
        spans[0] = [shots[min(2, n_shots - 1), 0]] * 2  # zero-length on a shot start
        spans[1] = [shots[0, 1], shots[0, 1]]  # zero-length on a shot end
    return {
        "shots": shots,
        "video": rng.normal(size=(n_shots, DIMS["video"])),
        "audio": rng.normal(size=(n_shots, DIMS["audio"])),
        "text": rng.normal(size=(n_tokens, DIMS["text"])),
        "text_spans": spans,
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(7)
    st = FeatureStore.create(tmp_path_factory.mktemp("w") / "store", encoders=ENC)
    sizes = {
        "long": (47, 90),
        "mid": (23, 30),
        "short": (4, 6),
        "one": (1, 2),
        "mute": (15, 0),
        "exact": (10, 12),
    }
    for m, (s, t) in sizes.items():
        st.write_movie(m, **make_movie(rng, s, t))
    return st


def overlap(a, b, c, d) -> bool:
    return (a < d and b > c) or (a == b and c <= a <= d)


def brute_window(mv: dict, start: int, k: int) -> dict:
    """The window from first principles: loops over shots and tokens of the stored movie."""
    S = len(mv["shots"])
    n = min(k, S - start)
    video = np.zeros((k, DIMS["video"]), np.float32)
    audio = np.zeros((k, DIMS["audio"]), np.float32)
    video[:n] = mv["video"][start : start + n]
    audio[:n] = mv["audio"][start : start + n]
    t0, t1 = mv["shots"][start, 0], mv["shots"][start + n - 1, 1]
    toks = [t for t, (a, b) in enumerate(mv["text_spans"]) if overlap(a, b, t0, t1)]
    toks.sort(key=lambda t: (mv["text_spans"][t, 0], t))  # time order, ties in stored order
    member = np.zeros((len(toks), k), bool)
    for j, t in enumerate(toks):
        a, b = mv["text_spans"][t]
        for i in range(n):
            member[j, i] = overlap(a, b, *mv["shots"][start + i])
    text = mv["text"][toks].astype(np.float32).reshape(len(toks), DIMS["text"])
    return {"video": video, "audio": audio, "shot_mask": np.arange(k) < n, "text": text, "token_shot": member}


def check_batch_against_brute(batch: dict, store: FeatureStore, k: int) -> None:
    assert set(batch) == set(BATCH_KEYS)
    movies = {m: store.read_movie(m) for m in set(batch["movie"])}
    N = len(batch["movie"])
    assert batch["video"].shape == (N, k, DIMS["video"]) and batch["video"].dtype == torch.float32
    T = batch["text"].shape[1]
    for w in range(N):
        ref = brute_window(movies[batch["movie"][w]], int(batch["start"][w]), k)
        for key in ("video", "audio", "shot_mask"):
            np.testing.assert_array_equal(batch[key][w].numpy(), ref[key], err_msg=key)
        nt = len(ref["text"])
        assert batch["text_mask"][w].tolist() == [True] * nt + [False] * (T - nt)
        np.testing.assert_array_equal(batch["text"][w, :nt].numpy(), ref["text"])
        np.testing.assert_array_equal(batch["token_shot"][w, :nt].numpy(), ref["token_shot"])
        assert not batch["text"][w, nt:].any() and not batch["token_shot"][w, nt:].any()
    assert T == max(1, int(batch["text_mask"].sum(1).max()))


@pytest.mark.parametrize("k", [1, 5, 10, 30])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_windows_match_brute_force(store, k, mode):
    ds = ShotWindows(store, k, mode=mode, stride=3 if k > 3 else None, seed=1)
    idx = list(range(len(ds)))
    fast = ds.__getitems__(idx)
    check_batch_against_brute(fast, store, k)
    slow = collate_windows([ds[i] for i in idx])  # the per-item path gives the same batch
    for key in BATCH_KEYS:
        if key == "movie":
            assert slow[key] == fast[key]
        else:
            assert slow[key].dtype == fast[key].dtype and torch.equal(slow[key], fast[key]), key


def test_membership_has_multi_shot_and_gap_tokens(store):
    b = ShotWindows(store, 10, mode="eval").__getitems__(range(3))
    per_token = b["token_shot"].sum(-1)[b["text_mask"]]
    assert (per_token >= 2).any()  # a token spanning several shots
    assert (per_token == 0).any()  # a token in a gap between shots (inside the window's range)


def test_eval_enumerates_every_shot(store):
    k = 10
    for stride in (None, 3, 10, 25):
        ds = ShotWindows(store, k, mode="eval", stride=stride)
        seen = {m: np.zeros(n, int) for m, n in store.movies().select("movie_id", "n_shots").rows()}
        starts: dict[str, list[int]] = {}
        mi, st = ds.locate(range(len(ds)))
        for m, s in zip([ds.mem.movie_ids[i] for i in mi], st.tolist()):
            starts.setdefault(m, []).append(s)
            seen[m][s : s + k] += 1
        if (stride or k) <= k:  # a stride above k skips shots by request
            assert all((c >= 1).all() for c in seen.values()), stride
        for m, n in store.movies().select("movie_id", "n_shots").rows():
            exp = list(range(0, max(n - k, 0) + 1, stride or k))
            exp += [] if exp[-1] == max(n - k, 0) else [max(n - k, 0)]
            assert starts[m] == exp  # deterministic, in order; last window ends at the last shot
        again = ShotWindows(store, k, mode="eval", stride=stride).locate(range(len(ds)))
        assert np.array_equal(again[0], mi) and np.array_equal(again[1], st)
    # non-overlapping windows of "long" (47 shots, k=10): 0, 10, 20, 30 and the last one at 37
    ds = ShotWindows(store, 10, mode="eval", movies=["long"])
    assert [ds.window(i) for i in range(len(ds))] == [("long", s) for s in (0, 10, 20, 30, 37)]


def test_short_movies_are_padded_not_dropped(store):
    ds = ShotWindows(store, 8, mode="eval", movies=["short", "one", "long"])
    b = ds.__getitems__(range(len(ds)))
    assert b["movie"][:2] == ["short", "one"]
    assert b["shot_mask"][0].tolist() == [True] * 4 + [False] * 4
    assert b["shot_mask"][1].tolist() == [True] + [False] * 7
    assert not b["video"][0, 4:].any() and not b["audio"][1, 1:].any()
    assert not b["token_shot"][0, :, 4:].any()
    train = ShotWindows(store, 8, mode="train", movies=["one"], windows_per_epoch=5)
    assert [train.window(i) for i in range(5)] == [("one", 0)] * 5


def test_train_sampling_reproducible_and_resumable(store):
    ds = ShotWindows(store, 6, mode="train", seed=3, windows_per_epoch=400)
    assert len(ds) == 400
    w = [ds.window(i) for i in range(400)]
    again = ShotWindows(store, 6, mode="train", seed=3, windows_per_epoch=400)
    assert w == [again.window(i) for i in range(400)]
    assert ds.window(123) == w[123]  # restorable from the index alone, in any order
    n_shots = dict(store.movies().select("movie_id", "n_shots").rows())
    assert all(0 <= s <= max(n_shots[m] - 6, 0) for m, s in w)
    assert len(set(w)) == sum(max(n - 5, 1) for n in n_shots.values())  # every start is drawn
    assert {m for m, _ in w} == set(n_shots)
    other = ShotWindows(store, 6, mode="train", seed=4, windows_per_epoch=400)
    assert [other.window(i) for i in range(400)] != w
    ds.set_epoch(1)
    e1 = [ds.window(i) for i in range(400)]
    assert e1 != w
    ds.set_epoch(0)
    assert [ds.window(i) for i in range(400)] == w
    # default epoch length: ceil(total shots / k)
    assert len(ShotWindows(store, 6)) == -(-sum(n_shots.values()) // 6)
    # movies are drawn in proportion to their number of window starts ("long": 42 of 80)
    frac_long = np.mean([m == "long" for m, _ in w])
    assert 0.4 < frac_long < 0.65


def test_batch_of_an_epoch_is_that_epochs_getitems(store):
    """`batch(indices, epoch)` (what pretraining's WindowStream calls) = `set_epoch(epoch)` + `__getitems__`."""
    ds = ShotWindows(store, 6, mode="train", seed=3, windows_per_epoch=40)
    ref = ShotWindows(store, 6, mode="train", seed=3, windows_per_epoch=40)
    idx = [5, 0, 17, 39]
    for epoch in (2, 2, 0, None):
        if epoch is not None:
            ref.set_epoch(epoch)
        got, exp = ds.batch(idx, epoch=epoch), ref.__getitems__(idx)
        assert ds.epoch == ref.epoch and got["movie"] == exp["movie"]
        assert all(torch.equal(got[k], exp[k]) for k in BATCH_KEYS if k != "movie")
    assert ds.batch(idx, epoch=1)["start"].tolist() != ds.batch(idx, epoch=0)["start"].tolist()


def test_collate_pads_tokens(store):
    ds = ShotWindows(store, 4, mode="eval", movies=["mute", "mid"])
    items = [ds[0], ds[len(ds) - 1]]
    assert items[0]["text"].shape == (0, 4) and items[1]["text"].shape[0] > 0
    b = collate_windows(items)
    T = items[1]["text"].shape[0]
    assert b["text"].shape == (2, T, 4) and b["token_shot"].shape == (2, T, 4)
    assert not b["text_mask"][0].any() and b["text_mask"][1].all()
    empty = collate_windows([ds[0], ds[1]])
    assert empty["text"].shape == (2, 1, 4) and not empty["text_mask"].any()
    assert collate_windows(b) is b
    with pytest.raises(ValueError, match="empty"):
        collate_windows([])


def test_dataloader_workers_and_float16_memory(store):
    ds = ShotWindows(store, 5, mode="train", seed=0, windows_per_epoch=24)
    ref = [ds.__getitems__(range(i, i + 8)) for i in (0, 8, 16)]
    dl = DataLoader(ds, batch_size=8, shuffle=False, num_workers=2, collate_fn=collate_windows)
    for got, exp in zip(dl, ref, strict=True):
        assert got["movie"] == exp["movie"] and torch.equal(got["text"], exp["text"])
        assert torch.equal(got["video"], exp["video"]) and torch.equal(got["token_shot"], exp["token_shot"])
    half = ShotWindows(store, 5, mode="train", seed=0, windows_per_epoch=24, memory_dtype="float16")
    assert half.mem.video.dtype == np.float16
    hb = half.__getitems__(range(8))
    assert hb["video"].dtype == torch.float32 and torch.equal(hb["video"], ref[0]["video"])
    assert torch.equal(hb["text"], ref[0]["text"])


def test_config_and_in_memory_store(store):
    cfg = OmegaConf.merge(OmegaConf.structured(WindowsConfig), OmegaConf.from_dotlist(["k=7", "mode=eval"]))
    cfg = OmegaConf.to_object(cfg)
    assert isinstance(cfg, WindowsConfig) and cfg.k == 7
    mem = store.load_all()
    a = ShotWindows.from_config(mem, cfg, movies=["mid"])
    b = ShotWindows(store, 7, mode="eval", movies=["mid"])
    assert len(a) == len(b) == 4  # starts 0, 7, 14, 16
    assert torch.equal(a.__getitems__([3])["video"], b.__getitems__([3])["video"])


def test_bad_arguments(store):
    with pytest.raises(ValueError, match="k must be"):
        ShotWindows(store, 0)
    with pytest.raises(ValueError, match="mode"):
        ShotWindows(store, 3, mode="test")
    with pytest.raises(ValueError, match="stride"):
        ShotWindows(store, 3, mode="eval", stride=0)
    with pytest.raises(KeyError, match="nope"):
        ShotWindows(store.load_all(), 3, movies=["nope"])
    ds = ShotWindows(store, 3, mode="eval")
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_views_draw_a_ranks_consecutive_windows_from_one_movie(store):
    """data.views = 2 (the window term's positives): rank r's windows j, j+1 (j even) share a movie,
    each with its own valid start; views = 1 draws exactly as before."""
    world, micro, n = 2, 8, 128
    w = ShotWindows(store, 4, mode="train", seed=5, windows_per_epoch=n, views=2, view_stride=world)
    movies_seen = set()
    for rank in range(world):
        for b in range(n // world // micro):
            j = np.arange(b * micro, (b + 1) * micro)
            m, start = w.locate(j * world + rank)
            assert (m[0::2] == m[1::2]).all()
            movies_seen |= set(m.tolist())
    assert len(movies_seen) >= 4
    m, start = w.locate(range(n))
    n_shots = w.n_shots[m]
    assert (start >= 0).all() and (start <= np.maximum(n_shots - 4, 0)).all()
    assert len(set(zip(m.tolist(), start.tolist()))) > n // 4  # starts differ within a movie
    plain = ShotWindows(store, 4, mode="train", seed=5, windows_per_epoch=n)
    one = ShotWindows(store, 4, mode="train", seed=5, windows_per_epoch=n, views=1, view_stride=world)
    assert all((a == b).all() for a, b in zip(plain.locate(range(n)), one.locate(range(n))))
    with pytest.raises(ValueError, match="views"):
        ShotWindows(store, 4, views=0)


def test_view_span_draws_a_groups_views_as_neighbours(store):
    """data.view_span = s: the views of a group start within 2s shots of each other (a common centre
    +- s, clipped to the movie), same movies as without; s = 0 is the unrestricted draw."""
    n = 256
    near = ShotWindows(store, 2, mode="train", seed=5, windows_per_epoch=n, views=2, view_span=1)
    far = ShotWindows(store, 2, mode="train", seed=5, windows_per_epoch=n, views=2)
    m, start = near.locate(range(n))
    m_far, start_far = far.locate(range(n))
    assert (m == m_far).all() and (m[0::2] == m[1::2]).all()
    gap = np.abs(start[0::2] - start[1::2])
    assert gap.max() <= 2 and (gap > 0).any()
    assert np.abs(start_far[0::2] - start_far[1::2]).max() > 2
    assert (start >= 0).all() and (start <= np.maximum(near.n_shots[m] - 2, 0)).all()
    with pytest.raises(ValueError, match="view_span"):
        ShotWindows(store, 2, views=2, view_span=-1)
