"""`lmp_data.gather.WindowGather` (the one window batch builder) against the batch path it replaced.

`reference_windows.OldWindows` is `ShotWindows`' numpy batch path as it was before issue 14, verbatim: for
the same seed and the same windows, the tensor builder must give the same batch element for element
(every key, dtype, shape and value), on CPU and, where there is one, on a GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lmp_data import BATCH_KEYS, FeatureStore, ShotWindows
from lmp_data.gather import WindowGather, memory_estimate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_windows import OldWindows  # noqa: E402

DIMS = {"video": 6, "audio": 3, "text": 5}
ENC = {m: {"name": m, "dim": d} for m, d in DIMS.items()}
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def edge_movie(rng, n_shots: int, n_tokens: int) -> dict[str, np.ndarray]:
    """Shots with gaps and touching shots; tokens in random order: long ones over many shots, zero-length
    ones on shot starts and ends, ones in gaps, ones ending on the movie's start or end."""
    b = np.cumsum(rng.uniform(0.5, 3.0, n_shots + 1))
    ends = b[1:] - rng.choice([0.0, 0.0, 0.4], n_shots)  # 0.0: touches the next shot
    shots = np.stack([b[:-1], ends], 1)
    a = rng.uniform(b[0], ends[-1], n_tokens)
    dur = rng.choice([0.0, 0.2, 1.0, 6.0, 20.0], n_tokens)
    spans = np.stack([a, a + dur], 1)
    for j in range(min(n_tokens, 8)):  # exact boundaries
        s = shots[rng.integers(n_shots)]
        spans[j] = [
            [s[0], s[0]],
            [s[1], s[1]],
            [s[1], s[1] + 0.3],
            [s[0] - 0.3, s[0]],
            [s[0], s[1]],
            [s[1], s[1] + 5.0],
            [s[0] - 5.0, s[0]],
            [ends[-1], ends[-1]],
        ][j]
    spans = np.clip(spans, b[0], ends[-1])  # a store keeps spans inside the movie
    return {
        "shots": shots,
        "video": rng.normal(size=(n_shots, DIMS["video"])),
        "audio": rng.normal(size=(n_shots, DIMS["audio"])),
        "text": rng.normal(size=(n_tokens, DIMS["text"])),
        "text_spans": spans,
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(11)
    st = FeatureStore.create(tmp_path_factory.mktemp("g") / "store", encoders=ENC)
    sizes = {
        "long": (61, 150),
        "mid": (29, 40),
        "short": (5, 9),
        "one": (1, 3),
        "mute": (17, 0),
        "k": (8, 20),
    }
    for m, (s, t) in sizes.items():
        st.write_movie(m, **edge_movie(rng, s, t))
    return st


def assert_same_batch(new: dict, ref: dict) -> None:
    assert set(new) == set(ref) == set(BATCH_KEYS)
    assert new["movie"] == ref["movie"]
    for key in BATCH_KEYS:
        if key == "movie":
            continue
        a, b = new[key].cpu(), ref[key]
        assert a.dtype == b.dtype and a.shape == b.shape, (key, a.dtype, b.dtype, a.shape, b.shape)
        assert torch.equal(a, b), key


@pytest.mark.parametrize("memory_dtype", ["float32", "float16"])
@pytest.mark.parametrize("k", [1, 3, 8, 30, 70, 170])  # 170: membership by comparison (no table)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_batches_equal_the_old_path_element_for_element(store, mode, k, memory_dtype):
    ds = ShotWindows(
        store, k, mode=mode, stride=2 if k > 2 else None, seed=3, memory_dtype=memory_dtype, views=2
    )
    old = OldWindows(ds)
    rng = np.random.default_rng(k)
    batches = [list(range(len(ds))), [0], rng.integers(0, len(ds), 37).tolist(), [len(ds) - 1] * 3]
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        for idx in batches:
            assert_same_batch(ds.__getitems__(idx), old.__getitems__(idx))
    # the code path of a store on a GPU (a copy with zero rows that the padding reads), here on the CPU,
    # in float32 and in bfloat16 (what the fp32 batch converts to)
    copy = WindowGather(ds.mem, k, copy_store=True)
    half = WindowGather(ds.mem, k, copy_store=True, out_dtype=torch.bfloat16)
    for idx in batches:
        ref = old.__getitems__(idx)
        assert_same_batch(copy(*ds.locate(idx)), ref)
        as_bf16 = {
            key: v.to(torch.bfloat16) if key in ("video", "audio", "text") else v for key, v in ref.items()
        }
        assert_same_batch(half(*ds.locate(idx)), as_bf16)
    for i in rng.integers(0, len(ds), 5).tolist():  # one window: the old per-item path (float time tests)
        new, ref = ds[i], old[i]
        assert new["movie"] == ref["movie"] and new["start"] == ref["start"]
        for key in ("video", "audio", "shot_mask", "text", "token_shot"):
            assert new[key].dtype == ref[key].dtype and torch.equal(new[key], ref[key]), key


def test_contiguous_tokens_take_the_block_path_and_agree(tmp_path):
    """Short tokens in time order (as subtitles give): every window's tokens are its whole candidate range,
    so the text is copied as one block per window; the same batch as the old path, row gathers or not."""
    rng = np.random.default_rng(5)
    st = FeatureStore.create(tmp_path / "s", encoders=ENC)
    for m, (s, t) in {"a": (40, 90), "b": (12, 30), "c": (3, 4)}.items():
        b = np.cumsum(rng.uniform(1.0, 3.0, s + 1))
        a = np.sort(rng.uniform(b[0] + 0.01, b[-1] - 0.3, t))
        spans = np.stack([a, a + 0.2], 1)
        st.write_movie(
            m,
            shots=np.stack([b[:-1], b[1:]], 1),
            video=rng.normal(size=(s, DIMS["video"])),
            audio=rng.normal(size=(s, DIMS["audio"])),
            text=rng.normal(size=(t, DIMS["text"])),
            text_spans=spans,
        )
    for k in (4, 10):
        ds = ShotWindows(st, k, mode="train", seed=2, windows_per_epoch=64)
        old = OldWindows(ds)
        for store_copy in (False, True):
            g = WindowGather(ds.mem, k, copy_store=store_copy)
            for idx in (list(range(0, 32)), list(range(32, 64))):
                assert_same_batch(g(*ds.locate(idx)), old.__getitems__(idx))
                p = g.plan(*ds.locate(idx))
                assert (p.n_cand == p.n_tok).all()  # row by row only where a block would pass the end
                assert g.last_irregular == (p.lo + p.T > g.n_tokens).sum()


def test_padding_and_token_alignment_at_window_edges(tmp_path):
    """A hand-made movie: every expected value written out."""
    st = FeatureStore.create(tmp_path / "s", encoders=ENC)
    shots = np.array([[1.0, 2.0], [2.0, 3.0], [3.5, 4.0], [4.0, 5.0]])  # 0|1 touch, gap 3-3.5, 2|3 touch
    spans = np.array(  # in time order (the store keeps tokens sorted by start); shots each overlaps
        [
            [1.0, 1.0],  # 0: point on the movie start: shot 0
            [1.0, 2.0],  # 1: exactly shot 0 (ends where shot 1 starts, open end): shot 0
            [1.5, 2.5],  # 2: shots 0 and 1
            [2.0, 2.0],  # 3: point where shots 0 and 1 touch: both
            [2.0, 3.0],  # 4: exactly shot 1: shot 1
            [3.0, 3.0],  # 5: point on shot 1's end (then the gap): shot 1
            [3.0, 3.5],  # 6: exactly the gap: no shot, but inside a window's time range
            [3.1, 3.4],  # 7: inside the gap: no shot
            [4.0, 4.0],  # 8: point where shots 2 and 3 touch: both
            [4.5, 5.0],  # 9: shot 3 up to the movie end
            [5.0, 5.0],  # 10: point on the movie end: shot 3
        ]
    )
    text = np.arange(len(spans) * DIMS["text"], dtype=np.float64).reshape(len(spans), -1) + 1
    video = np.arange(4 * DIMS["video"], dtype=np.float64).reshape(4, -1) + 1
    st.write_movie(
        "m", shots=shots, video=video, audio=np.ones((4, DIMS["audio"])), text=text, text_spans=spans
    )
    mem = st.load_all()
    g = WindowGather(mem, 6)
    b = g(np.array([0, 0, 0]), np.array([0, 1, 3]))  # windows at shots 0, 1, 3 of a 4-shot movie (k=6)
    # shots: 4, 3 and 1 real, then zero padding, masked
    assert b["shot_mask"].sum(1).tolist() == [4, 3, 1]
    assert torch.equal(b["video"][0, :4], torch.from_numpy(video).float())
    assert not b["video"][0, 4:].any() and not b["video"][2, 1:].any() and not b["audio"][1, 3:].any()
    assert torch.equal(b["video"][2, 0], torch.from_numpy(video[3]).float())
    # tokens: window 0 covers [1, 5], window 1 [2, 5], window 2 [4, 5]; shots relative to the window
    member = {
        0: {0: [0], 1: [0], 2: [0, 1], 3: [0, 1], 4: [1], 5: [1], 6: [], 7: [], 8: [2, 3], 9: [3], 10: [3]},
        1: {2: [0], 3: [0], 4: [0], 5: [0], 6: [], 7: [], 8: [1, 2], 9: [2], 10: [2]},
        2: {8: [0], 9: [0], 10: [0]},
    }
    toks = {w: list(m) for w, m in member.items()}
    T = b["text"].shape[1]
    assert T == 11
    for w, ts in toks.items():
        n = len(ts)
        assert b["text_mask"][w].tolist() == [True] * n + [False] * (T - n)
        assert torch.equal(b["text"][w, :n], torch.from_numpy(text[ts]).float())
        assert not b["text"][w, n:].any() and not b["token_shot"][w, n:].any()
        for j, t in enumerate(ts):
            assert b["token_shot"][w, j].nonzero().view(-1).tolist() == member[w][t], (w, t)
    # the per-item path cuts the padding off
    item = ShotWindows(mem, 6, mode="eval").__getitem__(0)
    assert item["text"].shape == (11, DIMS["text"]) and item["token_shot"].shape == (11, 6)


def test_a_store_without_language_tokens(tmp_path):
    st = FeatureStore.create(tmp_path / "s", encoders=ENC)
    rng = np.random.default_rng(0)
    st.write_movie("a", **edge_movie(rng, 7, 0))
    st.write_movie("b", **edge_movie(rng, 3, 0))
    ds = ShotWindows(st, 4, mode="eval")
    b = ds.__getitems__(range(len(ds)))
    assert b["text"].shape == (len(ds), 1, DIMS["text"]) and not b["text_mask"].any()
    assert not b["token_shot"].any() and not b["text"].any()  # (the old path raised on such a store)
    assert_same_batch(WindowGather(ds.mem, 4, copy_store=True)(*ds.locate(range(len(ds)))), b)
    assert b["shot_mask"].sum().item() == 4 + 4 + 3  # "a": windows at shots 0 and 3; "b": 3 of 4 real


def test_memory_figures(store):
    mem = store.load_all(dtype="float16")
    g = WindowGather(mem, 8)
    nb = g.nbytes()
    n_tok = int(mem.token_offsets[-1])
    assert nb["store"] == mem.n_shots * (DIMS["video"] + DIMS["audio"]) * 2 + n_tok * (DIMS["text"] * 2 + 8)
    est = memory_estimate(mem.n_shots, n_tok / mem.n_shots, DIMS, feature_bytes=2, k=8, batch=4)
    assert est["store"] == pytest.approx(nb["store"])
    assert est["peak"] > est["store"] + est["batch"]


def test_windows_outside_their_movie_are_refused(store):
    g = ShotWindows(store, 4).gather
    with pytest.raises(IndexError, match="outside"):
        g(np.array([0]), np.array([10_000]))


@CUDA
@pytest.mark.parametrize("store_device", ["cuda", "cpu"])
def test_gpu_batches_equal_the_cpu_batches(store, store_device):
    cpu = ShotWindows(store, 8, mode="train", seed=1, memory_dtype="float16", windows_per_epoch=200)
    gpu = ShotWindows(
        cpu.mem, 8, mode="train", seed=1, windows_per_epoch=200, device="cuda", store_device=store_device
    )
    idx = list(range(200))
    b = gpu.__getitems__(idx)
    assert all(v.device.type == "cuda" for v in b.values() if isinstance(v, torch.Tensor))
    assert_same_batch(b, cpu.__getitems__(idx))
    assert_same_batch(b, OldWindows(cpu).__getitems__(idx))
