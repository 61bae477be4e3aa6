"""The recipes (lmp, hssl, m2s): their losses against brute-force loops, the queue, masking, mining, and a
forward/backward of each on a tiny batch."""

from __future__ import annotations

import math
import sys
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chi2

from lmp_model import LMP
from lmp_model.recipes import (
    HSSL,
    M2S,
    build_recipe,
    load_recipe_config,
    recipe_config_to_dict,
    recipe_features,
)
from lmp_model.recipes.hssl import max_span, sample_span_mask
from lmp_model.recipes.m2s import (
    max_pool_scenes,
    mine_movie_pair,
    mine_scene_pairs,
    movie_similarity,
    neighbour_shot_loss,
    scene_adjacency,
    shot_adjacency,
    similar_movies,
)
from lmp_model.recipes.queue import FeatureQueue, exclude_same, l2_prediction_loss, queue_info_nce

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_helpers import DIMS, make_batch, tiny  # noqa: E402

HSSL_TINY = [
    "encoder.d=32",
    "encoder.layers=1",
    "encoder.heads=2",
    "encoder.ff_mult=2",
    "encoder.dropout=0.0",
    "queue_size=48",
    "max_shots=16",
]
M2S_TINY = [
    "shot.hidden=24",
    "shot.dim=16",
    "movie.hidden=16",
    "movie.movie_len=16",
    "movie.avg_kernel=4",
    "movie.avg_stride=2",
    "movie.max_kernel=4",
    "movie.max_stride=2",
    "scene.encoder.d=32",
    "scene.encoder.layers=1",
    "scene.encoder.heads=2",
    "scene.encoder.ff_mult=2",
    "scene.encoder.dropout=0.0",
    "scene.queue_size=10",
    "scene.momentum=0.9",
    "max_shots=16",
]


def hssl(*overrides, seed=0) -> HSSL:
    torch.manual_seed(seed)
    return build_recipe("hssl", load_recipe_config("hssl", None, HSSL_TINY + list(overrides)), DIMS)


def m2s(*overrides, seed=0) -> M2S:
    torch.manual_seed(seed)
    return build_recipe("m2s", load_recipe_config("m2s", None, M2S_TINY + list(overrides)), DIMS)


def with_pair(batch, seed=1, similar=(1.0, 0.0, 1.0, 0.0)):
    other = make_batch(seed=seed)
    return batch | {
        "pair_video": other["video"],
        "pair_shot_mask": other["shot_mask"],
        "pair_similar": torch.tensor(similar),
    }


# ------------------------------------------------------------------------------- loop references
def _unit(x):
    norm = math.sqrt(sum(float(v) ** 2 for v in x))
    return [float(v) / norm for v in x]


def _dot(x, y):
    return sum(p * q for p, q in zip(x, y))


def ref_queue_info_nce(query, positive, negatives, tau, neg_valid):
    """-log exp(q.k+/tau) / (exp(q.k+/tau) + sum_valid exp(q.p/tau)), and ln(1 + valid), loop by loop."""
    losses, chances = [], []
    for w in range(len(query)):
        q, k = _unit(query[w]), _unit(positive[w])
        logits = [_dot(q, k) / tau]
        for j in range(len(negatives)):
            if neg_valid[w][j]:
                logits.append(_dot(q, _unit(negatives[j])) / tau)
        top = max(logits)
        losses.append(-(logits[0] - top - math.log(sum(math.exp(v - top) for v in logits))))
        chances.append(math.log(len(logits)))
    return sum(losses) / len(losses), sum(chances) / len(chances)


def ref_fifo(size, batches):
    """The queue as a list of slots after enqueueing `batches` of (keys, ids) one row at a time."""
    slots, ptr = [None] * size, 0
    for keys, ids in batches:
        for row, i in zip(keys.tolist(), ids.tolist()):
            slots[ptr] = (row, i)
            ptr = (ptr + 1) % size
    return slots, ptr


# ---------------------------------------------------------------------------------------- queue
def test_queue_info_nce_matches_a_loop_with_masked_negatives():
    g = torch.Generator().manual_seed(0)
    q, k, p = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g), torch.randn(9, 6, generator=g)
    valid = torch.rand(5, 9, generator=g) < 0.6
    valid[2] = False  # a query with no negative: only its positive, loss 0
    loss, chance = queue_info_nce(q, k, p, 0.1, valid)
    ref_loss, ref_chance = ref_queue_info_nce(q.tolist(), k.tolist(), p.tolist(), 0.1, valid.tolist())
    assert loss.item() == pytest.approx(ref_loss, rel=1e-5)
    assert chance.item() == pytest.approx(ref_chance, rel=1e-6)
    empty, empty_chance = queue_info_nce(q[:0].requires_grad_(), k[:0], p, 0.1)
    assert empty.item() == 0.0 and empty_chance.item() == 0.0 and empty.requires_grad


def test_queue_is_fifo_over_wraparound_and_oversized_batches():
    queue, batches = FeatureQueue(7, 3), []
    for n in (3, 5, 0, 2, 9, 4):
        keys = torch.randn(n, 3)
        ids = torch.arange(100 * n, 100 * n + n)
        queue.enqueue(keys, ids)
        batches.append((keys[-7:], ids[-7:]) if n > 7 else (keys, ids))  # a batch over K keeps its last K
        slots, ptr = ref_fifo(7, batches)
        assert int(queue.ptr) == ptr
        for j, slot in enumerate(slots):
            if slot is None:
                assert int(queue.ids[j]) == -1 and not queue.filled()[j]
            else:
                assert queue.keys[j].tolist() == pytest.approx(slot[0]) and int(queue.ids[j]) == slot[1]


def test_queue_state_is_in_the_state_dict_and_restores():
    model = hssl()
    b = make_batch()
    model(b, generator=torch.Generator().manual_seed(0))
    state = model.state_dict()
    assert {"queue.video.keys", "queue.video.ids", "queue.video.ptr"} <= set(state)
    fresh = hssl(seed=5)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.queue["video"].keys, model.queue["video"].keys)
    assert int(fresh.queue["video"].ptr) == int(model.queue["video"].ptr) > 0


def test_exclude_same_leaves_out_empty_slots_and_the_query_own_shot():
    queue_ids = torch.tensor([-1, 5, 7, -2, 5])
    got = exclude_same(torch.tensor([5, 9, -2]), queue_ids)
    want = [
        [False, False, True, True, False],
        [False, True, True, True, True],
        [False, True, True, True, True],
    ]
    assert got.tolist() == want


def test_l2_variant_and_its_chance_level():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    loss, chance = l2_prediction_loss(pred, target)
    ref = sum(
        sum((a - b) ** 2 for a, b in zip(_unit(p), _unit(t))) for p, t in zip(pred.tolist(), target.tolist())
    )
    assert loss.item() == pytest.approx(ref / 6, rel=1e-5)
    mean = _unit([sum(_unit(t)[d] for t in target.tolist()) for d in range(4)])
    ref_chance = sum(sum((a - b) ** 2 for a, b in zip(mean, _unit(t))) for t in target.tolist()) / 6
    assert chance.item() == pytest.approx(ref_chance, rel=1e-5)
    # predicting the mean for every token gives exactly the chance level
    assert l2_prediction_loss(torch.tensor([mean] * 6), target)[0].item() == pytest.approx(
        ref_chance, rel=1e-5
    )


# -------------------------------------------------------------------------------- span masking
def test_span_mask_sizes_and_starts_are_uniform():
    """Sizes uniform on 1..floor(alpha N), starts uniform on 0..N-m given the size (chi-square, seed 0)."""
    rows, k, alpha = 24000, 12, 0.6
    valid = torch.zeros(rows, k, dtype=torch.bool)
    n_valid = torch.tensor([10, 5, 12])[
        torch.arange(rows) % 3
    ]  # 10 -> sizes 1..6, 5 -> 1..3 (paper), 12 -> 1..7
    valid[torch.arange(k)[None, :] < n_valid[:, None]] = True
    masked = sample_span_mask(valid, alpha, torch.Generator().manual_seed(0))
    assert not (masked & ~valid).any()
    sizes = masked.sum(1)
    starts = masked.float().argmax(1)
    for r in range(0, rows, 997):  # one contiguous run per window
        idx = masked[r].nonzero().flatten().tolist()
        assert idx == list(range(idx[0], idx[0] + len(idx)))
    for n in (10, 5, 12):
        sel = n_valid == n
        mmax = math.floor(alpha * n)
        assert int(max_span(torch.tensor([n]), alpha)) == mmax
        counts = torch.bincount(sizes[sel], minlength=mmax + 1)
        assert counts[0] == 0 and counts.numel() == mmax + 1
        expected = sel.sum().item() / mmax
        stat = ((counts[1:].double() - expected) ** 2 / expected).sum().item()
        assert stat < chi2.ppf(0.999, mmax - 1), (n, counts)
        for m in range(1, mmax + 1):
            s = starts[sel & (sizes == m)]
            c = torch.bincount(s, minlength=n - m + 1).double()
            assert c.numel() == n - m + 1  # never a start past N - m
            stat = ((c - c.mean()) ** 2 / c.mean()).sum().item()
            assert stat < chi2.ppf(0.999, n - m), (n, m, c)


def test_span_mask_edge_cases():
    valid = torch.tensor([[True, False, False], [True, True, False], [False, False, False]])
    masked = sample_span_mask(valid, 0.6, torch.Generator().manual_seed(0))
    assert masked[0].sum() == 0 and masked[2].sum() == 0  # one shot or none: nothing to predict from
    assert masked[1].sum() == 1
    # valid shots that are not a prefix: the span runs over them in order
    gappy = torch.tensor([[True, False, True, True, False, True]] * 200)
    m = sample_span_mask(gappy, 1.0, torch.Generator().manual_seed(1))
    assert not (m & ~gappy).any() and m.sum(1).max() == 3 and m.sum(1).min() == 1


# -------------------------------------------------------------------------------- max discrepancy
def test_max_discrepancy_picks_the_shot_whose_masking_changes_its_output_most():
    model = hssl("sampling=max_discrepancy", "alpha=0.2")  # max span floor(0.2 * 8) = 1 shot
    b = make_batch(seed=4)
    feats, valid, shot_mask = model._inputs(b)
    disc = model.discrepancy(feats, valid, shot_mask)
    n, k = shot_mask.shape
    with torch.no_grad():
        full = model._contextual(feats, valid, shot_mask, None)[0]
        for j in range(n):
            ref = []
            for i in range(k):
                if not shot_mask[j, i]:
                    ref.append(float("-inf"))
                    continue
                one = torch.zeros(1, k, dtype=torch.bool)
                one[0, i] = True
                f1 = {m: feats[m][j : j + 1] for m in feats}
                v1 = {m: valid[m][j : j + 1] for m in valid}
                out = model._contextual(f1, v1, shot_mask[j : j + 1], one)[0][0, i]
                a, c = _unit(full[j, i].tolist()), _unit(out.tolist())
                ref.append(math.sqrt(sum((x - y) ** 2 for x, y in zip(a, c))))
                assert disc[j, i].item() == pytest.approx(ref[-1], abs=1e-5)
            masked = model.sample_masks(b, torch.Generator().manual_seed(j))
            assert masked[j].nonzero().flatten().tolist() == [max(range(k), key=lambda i: ref[i])]
    # a span of m shots goes where the summed discrepancy is largest
    d = torch.tensor([[0.1, 0.9, 0.2, 0.8, 0.7, 0.0]])
    m = sample_span_mask(torch.ones(1, 6, dtype=torch.bool), 0.5, torch.Generator().manual_seed(3), d)
    size = int(m.sum())
    best = max(range(6 - size + 1), key=lambda s: sum(d[0, s : s + size].tolist()))
    assert m[0].nonzero().flatten().tolist() == list(range(best, best + size))


# ---------------------------------------------------------------------------------- HSSL model
def test_hssl_term_is_eq1_against_the_queue_with_own_shots_left_out():
    model = hssl()
    b = make_batch(seed=2)
    model(b, generator=torch.Generator().manual_seed(0))  # fills part of the queue
    model(make_batch(seed=3), generator=torch.Generator().manual_seed(1))
    keys, ids = model.queue["video"].keys.clone(), model.queue["video"].ids.clone()
    captured = {}
    model.context.register_forward_hook(lambda m, i, o: captured.__setitem__("ctx", o))
    masked = sample_span_mask(b["shot_mask"], 0.6, torch.Generator().manual_seed(7))
    out = model(b, masked=masked)
    pred = model.head["video"](captured["ctx"][masked]).tolist()
    target = b["video"][masked].tolist()
    n, k = masked.shape
    own = [zlib.crc32(b["movie"][j].encode()) * 2**24 + i for j in range(n) for i in range(k) if masked[j, i]]
    valid = [[int(q) != -1 and int(q) != o for q in ids] for o in own]
    assert any(not all(v[j] for j in range(len(ids)) if int(ids[j]) != -1) for v in valid)  # some excluded
    ref, ref_chance = ref_queue_info_nce(pred, target, keys.tolist(), 0.1, valid)
    assert out.terms["mp/video"].item() == pytest.approx(ref, rel=1e-4)
    assert out.chance["mp/video"].item() == pytest.approx(ref_chance, rel=1e-6)
    assert out.loss.item() == pytest.approx(ref, rel=1e-4)


def test_hssl_eval_forward_does_not_touch_the_queue():
    model = hssl()
    model.eval()
    model(make_batch(), generator=torch.Generator().manual_seed(0))
    assert not model.queue["video"].filled().any()


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("sampling=max_discrepancy",),
        ("loss=l2",),
        ("target=projected",),
        ("modalities=[video,audio,text]",),
    ],
)
def test_hssl_forward_backward_trains_every_parameter(overrides):
    model = hssl(*overrides)
    b = make_batch()
    for step in range(2):  # the first step fills the queue (no distractors yet)
        model.zero_grad()
        out = model(b, generator=torch.Generator().manual_seed(step))
        out.loss.backward()
    assert torch.isfinite(out.loss) and set(out.terms) == set(out.chance)
    assert set(out.terms) == {f"mp/{m}" for m in model.modalities}
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    feats = model.encode(b)
    assert set(recipe_features(model)) <= set(feats)
    assert feats["v_ctx"][~b["shot_mask"]].abs().sum() == 0


# ------------------------------------------------------------------------------- M2S: shot stage
def test_neighbour_shot_loss_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 7, 5, generator=g)
    valid = torch.ones(3, 7, dtype=torch.bool)
    valid[1, 4:] = False
    valid[2, 1] = False
    loss, chance = neighbour_shot_loss(z, valid, offset=2, temperature=0.07)
    zz = [[_unit(z[j, t].tolist()) for t in range(7)] for j in range(3)]
    losses, chances = [], []
    for j in range(3):
        for t in range(7):
            if not valid[j, t]:
                continue
            pos = [_dot(zz[j][t], zz[j][u]) for u in (t - 2, t + 2) if 0 <= u < 7 and valid[j, u]]
            if not pos:
                continue
            logits = [max(pos) / 0.07] + [
                _dot(zz[j][t], zz[o][u]) / 0.07 for o in range(3) if o != j for u in range(7) if valid[o, u]
            ]
            top = max(logits)
            losses.append(-(logits[0] - top - math.log(sum(math.exp(v - top) for v in logits))))
            chances.append(math.log(len(logits)))
    assert loss.item() == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert chance.item() == pytest.approx(sum(chances) / len(chances), rel=1e-6)


# ------------------------------------------------------------------------------ M2S: movie stage
def test_adjacency_pooling_on_a_hand_made_pair():
    e1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0], [0.0, 0.0]])
    e2 = torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, 0.0], [1.0, 1.0]])
    m1 = torch.tensor([True, True, True, True, False])  # shot 4 of movie 1 is padding
    m2 = torch.tensor([True, True, True, True])
    a = shot_adjacency(e1[None], e2[None])[0]
    assert a.tolist() == [[1, 0, 3, 1], [2, 1, 0, 1], [3, 1, 3, 2], [2, 0, 6, 2], [0, 0, 0, 0]]
    b, valid = scene_adjacency(a[None], m1[None], m2[None], kernel=2, stride=1)
    for i in range(4):  # brute force: mean of the valid entries of each 2 x 2 window
        for j in range(3):
            cells = [a[r, c].item() for r in (i, i + 1) for c in (j, j + 1) if m1[r] and m2[c]]
            assert valid[0, i, j].item() == bool(cells)
            assert b[0, i, j].item() == pytest.approx(sum(cells) / len(cells) if cells else 0.0)
    assert b[0, 3].tolist() == pytest.approx([1.0, 3.0, 4.0])  # the last row averages over shot 3 only
    v = max_pool_scenes(b, valid, kernel=2, stride=2)
    ref = [
        max(b[0, r, c].item() for r in (i, i + 1) for c in (j, j + 1) if c < 3) for i in (0, 2) for j in (0,)
    ]
    assert v.shape == (1, 2) and v[0].tolist() == pytest.approx(ref)
    # an all-padding window gives 0, not -inf
    none = torch.zeros(1, 4, dtype=torch.bool)
    b0, valid0 = scene_adjacency(a[None, :4], none, m2[None], 2, 2)
    assert max_pool_scenes(b0, valid0, 2, 2).tolist() == [[0.0]]


def test_pair_mining_on_a_hand_made_example():
    b = np.array(
        [
            [0.9, 0.1, 0.8, 0.0],
            [0.85, 0.2, 0.3, 0.1],
            [0.0, 0.7, 0.95, 0.2],
        ]
    )
    # top 50 % = 6 entries: .95 (2,2) kept; .9 (0,0) kept; .85 (1,0) column 0 used; .8 (0,2) used; .7 (2,1)
    # row 2 used; .3 (1,2) column used -> [(2,2), (0,0)]
    assert [(i, j) for i, j, _ in mine_scene_pairs(b, 0.5, scene_len=1, stride=1)] == [(2, 2), (0, 0)]
    # with 2-shot scenes at stride 1, scene 1 overlaps scenes 0 and 2: (0,0) then nothing in rows 0..1
    assert [(i, j) for i, j, _ in mine_scene_pairs(b, 1.0, scene_len=2, stride=1)] == [(2, 2), (0, 0)]
    assert [(i, j) for i, j, _ in mine_scene_pairs(b, 1.0, scene_len=2, non_overlapping=False)] == [
        (2, 2),
        (0, 0),
        (1, 1),
    ]


def test_pair_mining_matches_a_naive_loop():
    rng = np.random.default_rng(0)
    for scene_len, stride in ((9, 1), (3, 2), (4, 4)):
        b = rng.normal(size=(23, 17))
        got = mine_scene_pairs(b, 0.5, scene_len, stride)
        entries = sorted(((b[i, j], i, j) for i in range(23) for j in range(17)), key=lambda e: -e[0])
        kept = []
        for s, i, j in entries[: math.ceil(0.5 * 23 * 17)]:
            clash = any(
                abs(i - i2) * stride < scene_len or abs(j - j2) * stride < scene_len for _, i2, j2 in kept
            )
            if not clash:
                kept.append((s, i, j))
        assert [(i, j) for i, j, _ in got] == [(i, j) for _, i, j in kept]


def test_mine_movie_pair_returns_shot_starts_of_non_overlapping_scenes():
    model = m2s("mining.scene_len=3")
    g = torch.Generator().manual_seed(0)
    pairs = mine_movie_pair(
        model, torch.randn(20, DIMS["video"], generator=g), torch.randn(14, DIMS["video"], generator=g)
    )
    assert pairs and all(0 <= i <= 17 and 0 <= j <= 11 for i, j, _ in pairs)
    for x, (i, j, _) in enumerate(pairs):
        for i2, j2, _ in pairs[x + 1 :]:
            assert abs(i - i2) >= 3 and abs(j - j2) >= 3


def test_movie_similarity_from_manifest_metadata():
    manifest = pl.DataFrame(
        {
            "movie_id": ["a", "b", "c", "d"],
            "genres": [["crime", "drama"], ["crime"], ["comedy"], ["comedy", "drama"]],
            "year": [2000, 2010, 2000, None],
            "director": ["x", "x", "y", "z"],
        }
    )
    ids, s = movie_similarity(manifest, {"genres": 1.0, "year": 1.0, "director": 2.0})
    assert ids == ["a", "b", "c", "d"]
    ref_ab = (1.0 * 0.5 + 1.0 * math.exp(-1.0) + 2.0 * 1.0) / 4
    ref_ad = (1.0 * (1 / 3) + 0.0 + 0.0) / 4  # d has no year: that column scores 0
    assert s[0, 1] == pytest.approx(ref_ab) and s[0, 3] == pytest.approx(ref_ad)
    assert np.allclose(s, s.T) and np.allclose(np.diag(s), 1.0)
    sim = similar_movies(s, per_movie=1)
    assert sim[0, 1] and sim[1, 0] and not sim.diagonal().any() and (sim == sim.T).all()
    # synopsis text: TF-IDF cosine
    texts = pl.DataFrame(
        {"movie_id": ["a", "b", "c"], "synopsis": ["a heist in paris", "a heist in rome", "cats"]}
    )
    _, st = movie_similarity(texts)
    assert st[0, 1] > st[0, 2] == 0.0


# ---------------------------------------------------------------- M2S: movie stage data and mining
def hand_store(lengths: dict[str, int], seed: int = 0, **columns):
    """An in-memory store of movies with `lengths` shots (random video/audio, no language tokens) and a
    manifest with the given metadata columns."""
    from lmp_data.store import InMemoryStore

    rng = np.random.default_rng(seed)
    ids, n = list(lengths), np.array(list(lengths.values()))
    total = int(n.sum())
    shots = np.stack([np.arange(total, dtype=np.float64), np.arange(total) + 1.0], axis=1)
    return InMemoryStore(
        movie_ids=ids,
        manifest=pl.DataFrame({"movie_id": ids, "n_shots": n.tolist(), **columns}),
        encoders={m: {"name": m, "dim": d} for m, d in DIMS.items()},
        shot_offsets=np.concatenate([[0], np.cumsum(n)]).astype(np.int64),
        token_offsets=np.zeros(len(ids) + 1, np.int64),
        shots=shots,
        video=rng.normal(size=(total, DIMS["video"])).astype(np.float32),
        audio=rng.normal(size=(total, DIMS["audio"])).astype(np.float32),
        text=np.zeros((0, DIMS["text"]), np.float32),
        text_spans=np.zeros((0, 2)),
    )


def ref_mining(e1, e2, scene_len, top_frac=0.5):
    """Brute force of step 3 at stride 1: A by dot products, B = mean of each scene_len x scene_len
    window (kernel clipped to the sides), greedy visit from the highest of the top entries, a pair kept when
    neither of its scenes overlaps a kept one's (loops only)."""
    u, v = len(e1), len(e2)
    a = [[_dot(e1[i], e2[j]) for j in range(v)] for i in range(u)]
    kh, kw = min(scene_len, u), min(scene_len, v)
    b = [
        [sum(a[i + r][j + c] for r in range(kh) for c in range(kw)) / (kh * kw) for j in range(v - kw + 1)]
        for i in range(u - kh + 1)
    ]
    entries = sorted(
        ((b[i][j], i * len(b[0]) + j, i, j) for i in range(len(b)) for j in range(len(b[0]))),
        key=lambda e: (-e[0], e[1]),
    )
    kept = []
    for s, _, i, j in entries[: math.ceil(top_frac * len(entries))]:
        if all(abs(i - i2) >= scene_len and abs(j - j2) >= scene_len for _, i2, j2 in kept):
            kept.append((s, i, j))
    return [(i, j, s) for s, i, j in kept]


def test_mine_pairs_over_similar_movies_matches_a_loop():
    from lmp_model.recipes.m2s_data import PAIR_COLUMNS, mine_pairs

    model = m2s("mining.scene_len=2").eval()
    mem = hand_store({"a": 7, "b": 6, "c": 5, "d": 4})
    ids = ["a", "b", "c", "d"]
    similar = np.zeros((4, 4), bool)
    for i, j in ((0, 1), (0, 2), (2, 3)):
        similar[i, j] = similar[j, i] = True
    got = mine_pairs(model, mem, ids, similar)
    assert tuple(got.columns) == PAIR_COLUMNS
    expect = []
    with torch.no_grad():
        hidden = {}
        for c in ids:
            s0, s1 = mem.shot_offsets[mem.index[c]], mem.shot_offsets[mem.index[c] + 1]
            x = torch.from_numpy(mem.video[s0:s1])
            hidden[c] = model.movie_features(model.shot_encoder(x), hidden=True).tolist()
    for i, j in ((0, 1), (0, 2), (2, 3)):  # each similar pair once, in index order
        for p, q, s in ref_mining(hidden[ids[i]], hidden[ids[j]], scene_len=2):
            expect.append((ids[i], p, ids[j], q, s))
    assert got.height == len(expect) > 0
    for row, ref in zip(got.iter_rows(), expect):
        assert row[:4] == ref[:4]
        assert row[4] == pytest.approx(ref[4], rel=1e-5, abs=1e-6)


def test_movie_stage_logit_and_bce_match_loops():
    """Eq. 2 -> B (mean of valid shot pairs per window) -> V (max per window) -> L_output -> BCE, by loops."""
    model = m2s(
        "stage=movie", "movie.movie_len=6", "movie.avg_kernel=2", "movie.avg_stride=2",
        "movie.max_kernel=2", "movie.max_stride=1", "movie.dropout=0.0",
    )  # fmt: skip
    g = torch.Generator().manual_seed(3)
    x1, x2 = torch.randn(2, 6, DIMS["video"], generator=g), torch.randn(2, 5, DIMS["video"], generator=g)
    m1 = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    m2 = torch.tensor([[True] * 5, [True] * 4 + [False]])
    y = torch.tensor([1.0, 0.0])
    batch = {"video": x1, "shot_mask": m1, "pair_video": x2, "pair_shot_mask": m2, "pair_similar": y}
    out = model(batch)
    w, bias = model.output.weight[0].tolist(), model.output.bias.item()
    losses = []
    with torch.no_grad():
        for p in range(2):
            e1 = model.movie_encoder(model.shot_encoder(x1[p])).tolist()
            e2 = model.movie_encoder(model.shot_encoder(x2[p])).tolist()
            valid1 = m1[p].tolist()
            valid2 = m2[p].tolist() + [False]  # padded to movie_len = 6
            e2 = e2 + [[0.0] * len(e2[0])]
            bmat = []  # 3 x 3 windows of 2 x 2 shots, stride 2
            for i in range(3):
                row = []
                for j in range(3):
                    cells = [
                        _dot(e1[2 * i + r], e2[2 * j + c])
                        for r in range(2)
                        for c in range(2)
                        if valid1[2 * i + r] and valid2[2 * j + c]
                    ]
                    row.append((sum(cells) / len(cells), True) if cells else (0.0, False))
                bmat.append(row)
            v = []  # 2 x 2 max windows of 2 x 2 entries, stride 1, row-major
            for i in range(2):
                for j in range(2):
                    vals = [
                        bmat[i + r][j + c][0] for r in range(2) for c in range(2) if bmat[i + r][j + c][1]
                    ]
                    v.append(max(vals) if vals else 0.0)
            logit = _dot(w, v) + bias
            target = y[p].item()
            losses.append(-(target * math.log(1 / (1 + math.exp(-logit))) + (1 - target) * math.log(
                1 - 1 / (1 + math.exp(-logit)))))  # fmt: skip
    assert out.terms["movie/bce"].item() == pytest.approx(sum(losses) / 2, rel=1e-4)


def test_padded_scene_adjacency_equals_pooling_the_whole_padded_map():
    from lmp_model.recipes.m2s import padded_scene_adjacency

    g = torch.Generator().manual_seed(0)
    for length, kernel, stride, u, v in [
        (40, 16, 8, 23, 9), (40, 16, 8, 40, 40), (40, 4, 8, 17, 30), (12, 16, 8, 5, 12), (33, 5, 3, 1, 33),
    ]:  # fmt: skip
        a = torch.randn(2, u, v, generator=g)
        m1, m2 = torch.rand(2, u, generator=g) > 0.2, torch.rand(2, v, generator=g) > 0.2
        full = F.pad(a, (0, length - v, 0, length - u))
        f1, f2 = F.pad(m1, (0, length - u), value=False), F.pad(m2, (0, length - v), value=False)
        b_ref, valid_ref = scene_adjacency(full, f1, f2, kernel, stride)
        b, valid = padded_scene_adjacency(a, m1, m2, length, kernel, stride)
        assert b.shape == b_ref.shape and torch.equal(valid, valid_ref)
        assert torch.allclose(b, b_ref, atol=1e-6)


def test_movie_pairs_follow_the_metadata_similarity_and_are_pure():
    from lmp_model.recipes.m2s_data import MoviePairs, movie_similarity_of

    cfg = load_recipe_config("m2s", None, ["movie.per_movie=1"]).movie
    genres = [["crime"], ["crime", "drama"], ["comedy"], ["comedy", "kids"], ["horror"]]
    mem = hand_store(
        {"a": 12, "b": 9, "c": 14, "d": 6, "e": 20}, genres=genres, year=[2000, 2001, 1950, 1952, 1990]
    )
    ids = ["e", "a", "b", "c", "d"]  # the run's movies, in its own order
    s, similar = movie_similarity_of(mem, ids, cfg)
    assert s.shape == (5, 5) and similar[1, 2] and similar[3, 4] and not similar[1, 3]
    ds = MoviePairs(mem, ids, similar, movie_len=10, positive_frac=0.5, seed=7, length=400)
    labels, anchors = [], []
    for i in range(400):
        (ma, sa, la), (mb, sb, lb), y = ds.pair(i)
        a, b = ids.index(mem.movie_ids[ma]), ids.index(mem.movie_ids[mb])
        assert a != b and y == float(similar[a, b])
        n_a = mem.shot_offsets[ma + 1] - mem.shot_offsets[ma]
        assert la == min(n_a, 10) and 0 <= sa <= n_a - la  # a crop of movie_len shots
        labels.append(y)
        anchors.append(a)
    assert np.bincount(anchors, minlength=5).tolist() == [80] * 5  # every movie in turn
    assert 0.4 < np.mean(labels) < 0.6
    assert ds.pair(17) == ds.pair(17)  # a pure function of (seed, epoch, index)
    ds.set_epoch(1)
    assert [ds.pair(i) for i in range(20)] != [
        MoviePairs(mem, ids, similar, 10, 0.5, 7, 400).pair(i) for i in range(20)
    ]
    batch = ds.__getitems__([0, 1, 2])
    assert batch["video"].shape == (3, 10, DIMS["video"]) and batch["pair_similar"].shape == (3,)
    model = m2s("stage=movie", "movie.movie_len=10", "movie.avg_kernel=2", "movie.avg_stride=2",
                "movie.max_kernel=2", "movie.max_stride=2")  # fmt: skip
    assert torch.isfinite(model(batch).loss)


def test_scene_pairs_show_mined_scenes_both_ways_and_mixed_adds_split_windows():
    from lmp_data import ShotWindows
    from lmp_model.recipes.m2s_data import ScenePairs

    mem = hand_store({"a": 12, "b": 9, "c": 14})
    pairs = pl.DataFrame(
        {
            "movie_a": ["a", "a"],
            "start_a": [0, 5],
            "movie_b": ["b", "c"],
            "start_b": [4, 10],
            "score": [2.0, 1.0],
        }
    )
    ds = ScenePairs(mem, pairs, scene_len=3, seed=1, length=40)
    seen = set()
    for i in range(40):
        q, k, mined = ds.pair(i)
        key = tuple(sorted([(mem.movie_ids[q[0]], q[1], q[2]), (mem.movie_ids[k[0]], k[1], k[2])]))
        assert mined and key in {(("a", 0, 3), ("b", 4, 3)), (("a", 5, 3), ("c", 10, 3))}
        seen.add(mem.movie_ids[q[0]])
    assert seen == {"a", "b", "c"}  # both directions
    b = ds.__getitems__([0, 1])
    q, k, _ = ds.pair(0)
    s0 = mem.shot_offsets[q[0]] + q[1]
    np.testing.assert_allclose(b["video"][0].numpy(), mem.video[s0 : s0 + 3])
    assert b["pair_shot_mask"].all()
    model = m2s("scene.pairs=mined")
    assert torch.isfinite(model(b).loss)
    windows = ShotWindows(mem, 8, mode="train", seed=1, windows_per_epoch=40)
    mixed = ScenePairs(mem, pairs, scene_len=3, seed=1, length=40, windows=windows, mined_frac=0.5)
    kinds = [mixed.pair(i)[2] for i in range(40)]
    assert 0 < sum(kinds) < 40
    for i in [i for i, m in enumerate(kinds) if not m]:  # split: the window's halves
        (mq, sq, lq), (mk, sk, lk), _ = mixed.pair(i)
        m, st = (int(x[0]) for x in windows.locate([i]))
        assert (mq, sq, mk, sk) == (m, st, m, st + 4) and lq == 4
    assert torch.isfinite(m2s("scene.pairs=mixed")(mixed.__getitems__(list(range(8)))).loss)


def test_train_data_mines_on_a_fresh_start_and_reuses_the_pairs_on_resume(tmp_path):
    import dataclasses
    import json

    from lmp_data import ShotWindows
    from lmp_model.recipes.m2s_data import PAIRS_FILE, MoviePairs, ScenePairs

    @dataclasses.dataclass
    class Data:  # what lmp_model.pretrain.data.TrainData holds and train_data reads
        windows: object
        movies: list

    mem = hand_store({"a": 12, "b": 9, "c": 14, "d": 10}, genres=[["x"], ["x"], ["y"], ["y"]])
    windows = ShotWindows(mem, 8, mode="train", seed=3)
    data = Data(windows, ["a", "b", "c", "d"])
    model = m2s("scene.pairs=mined", "mining.scene_len=3", "movie.per_movie=1")
    out = model.train_data(data, run_dir=tmp_path, resumed=False)
    assert isinstance(out.windows, ScenePairs) and len(out.windows) == len(windows)
    pairs = pl.read_parquet(tmp_path / PAIRS_FILE)
    assert set(zip(pairs["movie_a"], pairs["movie_b"])) == {("a", "b"), ("c", "d")}  # similar by genre
    info = json.loads((tmp_path / "scene_pairs.json").read_text())
    assert info["scene_pairs"] == pairs.height and info["similar_movie_pairs"] == 2
    pl.DataFrame({c: pairs[c][:1] for c in pairs.columns}).write_parquet(tmp_path / PAIRS_FILE)
    resumed = model.train_data(data, run_dir=tmp_path, resumed=True)  # the file wins on resume
    assert len(resumed.windows.a) == 1
    fresh = model.train_data(data, run_dir=tmp_path, resumed=False)  # a fresh start mines again
    assert len(fresh.windows.a) == pairs.height
    movie = m2s("stage=movie", "movie.per_movie=1").train_data(data, run_dir=tmp_path)
    assert isinstance(movie.windows, MoviePairs)
    assert m2s("stage=shot").train_data(data, run_dir=tmp_path) is data
    with pytest.raises(ValueError, match="text"):
        m2s("stage=movie", "modalities=[video,text]").train_data(data, run_dir=tmp_path)


# ------------------------------------------------------------------------------ M2S: scene stage
def test_moco_scene_stage_matches_a_loop_and_updates_key_encoder_and_queue():
    model = m2s("scene.pairs=mined")
    b = with_pair(make_batch(seed=0))
    model(b)  # step 1: empty queue, then 4 keys enqueued
    assert int(model.queue.ptr) == 4
    before_k = [p.detach().clone() for p in model.scene_k.parameters()]
    q_params = [p.detach().clone() for p in model.scene_q.parameters()]
    keys, filled = model.queue.keys.clone(), model.queue.filled().clone()
    b2 = with_pair(make_batch(seed=5), seed=6)
    out = model(b2)
    for old, q, new in zip(before_k, q_params, model.scene_k.parameters()):  # momentum 0.9
        assert torch.allclose(new, 0.9 * old + 0.1 * q, atol=1e-6)
    with torch.no_grad():
        q = model.scene_q["fc"](model.scene_q["encoder"](*model._shots(b2))).tolist()
        k = model.scene_k["fc"](model.scene_k["encoder"](*model._shots(b2, "pair_")))
    neg_valid = [[bool(f) for f in filled]] * len(q)
    ref, ref_chance = ref_queue_info_nce(q, k.tolist(), keys.tolist(), 0.07, neg_valid)
    assert out.terms["scene/moco"].item() == pytest.approx(ref, rel=1e-4)
    assert out.chance["scene/moco"].item() == pytest.approx(math.log(1 + 4), rel=1e-6)
    assert int(model.queue.ptr) == 8  # FIFO: the new keys follow the old ones
    assert torch.allclose(model.queue.keys[4:8], F.normalize(k, dim=-1), atol=1e-5)
    assert torch.equal(model.queue.keys[:4], keys[:4])


def test_m2s_scene_stage_names_the_missing_pair_fields():
    with pytest.raises(ValueError, match="pair_shot_mask"):
        m2s("scene.pairs=mined")(make_batch())
    with pytest.raises(ValueError, match="pair_similar"):
        m2s("stage=movie")(make_batch())


@pytest.mark.parametrize("stage", ["shot", "movie", "scene"])
def test_m2s_stage_trains_its_modules_only(stage):
    model = m2s(f"stage={stage}", "scene.pairs=split")
    b = with_pair(make_batch())
    for _ in range(2):
        model.zero_grad()
        out = model(b)
        out.loss.backward()
    assert torch.isfinite(out.loss) and set(out.terms) == set(out.chance)
    prefixes = {"shot": ("shot_encoder.",), "movie": ("movie_encoder.", "output."), "scene": ("scene_q.",)}[
        stage
    ]
    for name, p in model.named_parameters():
        if name.startswith(prefixes) and not name.endswith("mask_token"):  # E_scene masks nothing
            assert p.requires_grad and p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name
    if stage == "movie":  # chance: BCE of predicting the positive rate (1/2 here)
        assert out.chance["movie/bce"].item() == pytest.approx(math.log(2), rel=1e-6)
    feats = model.encode(b)
    assert set(recipe_features(model)) <= set(feats)
    assert feats["v_scene"][~b["shot_mask"]].abs().sum() == 0


# ------------------------------------------------------------------------------- registry, LMP
def test_registry_builds_lmp_unchanged_and_checks_configs():
    model = build_recipe("lmp", tiny(), DIMS)
    assert type(model) is LMP and recipe_features(model)["v_cross_l"] == "v_cross_l_mask"
    out = model(make_batch(), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and set(out.terms) == set(out.chance)
    assert set(recipe_features("lmp")) <= set(model.encode(make_batch()))
    with pytest.raises(ValueError, match="unknown recipe"):
        build_recipe("simclr", tiny(), DIMS)
    with pytest.raises(TypeError, match="HSSLConfig"):
        build_recipe("hssl", tiny(), DIMS)
    with pytest.raises(ValueError, match="alpha"):
        load_recipe_config("hssl", None, ["alpha=1.5"])
    with pytest.raises(ValueError, match="stage"):
        load_recipe_config("m2s", None, ["stage=movies"])
    with pytest.raises(Exception, match="nope"):
        load_recipe_config("m2s", None, ["nope=1"])
    cfg = load_recipe_config("hssl", None, ["modalities=[video,audio]"])
    assert recipe_config_to_dict(cfg)["modalities"] == ["video", "audio"]
    assert cfg.temperature == 0.1 and cfg.alpha == 0.6 and cfg.queue_size == 65536  # the paper's values
    m = load_recipe_config("m2s")
    assert (m.scene.dim, m.scene.queue_size, m.scene.momentum, m.scene.temperature) == (
        128,
        65536,
        0.999,
        0.07,
    )
    assert (m.movie.movie_len, m.movie.avg_kernel, m.movie.avg_stride) == (1024, 16, 8)


# ------------------------------------------------------------------------------ two gloo ranks
def _enqueue_on_rank(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        queue = FeatureQueue(6, 2)
        for step in range(3):  # ranks enqueue different numbers of keys (masked shots differ per rank)
            n = 1 + rank + step
            keys = torch.full((n, 2), float(10 * rank + step)) + torch.arange(n)[:, None] / 100
            queue.enqueue(keys, torch.full((n,), 10 * rank + step))
        torch.save(queue.state_dict(), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # ~20 s: two spawned processes import torch
def test_queue_gathers_every_rank_keys_in_rank_order(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_enqueue_on_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for key in ("keys", "ids", "ptr"):
        assert torch.equal(states[0][key], states[1][key]), key  # one queue, whatever the rank
    batches = []
    for step in range(3):
        for rank in range(2):
            n = 1 + rank + step
            keys = torch.full((n, 2), float(10 * rank + step)) + torch.arange(n)[:, None] / 100
            batches.append((keys, torch.full((n,), 10 * rank + step)))
    merged = [
        (
            torch.cat([batches[2 * s][0], batches[2 * s + 1][0]]),
            torch.cat([batches[2 * s][1], batches[2 * s + 1][1]]),
        )
        for s in range(3)
    ]
    slots, ptr = ref_fifo(6, [(k[-6:], i[-6:]) for k, i in merged])
    assert int(states[0]["ptr"]) == ptr
    assert states[0]["ids"].tolist() == [s[1] for s in slots]
    assert torch.allclose(states[0]["keys"], torch.tensor([s[0] for s in slots]))


class _FakeDist:
    """torch.distributed as seen by rank 0 of 2, where rank 1 holds `other` (for gather_rows' padding)."""

    def __init__(self, other):
        self.other = other

    def is_available(self):
        return True

    def is_initialized(self):
        return True

    def get_world_size(self):
        return 2

    def all_gather(self, out, x):
        if x.dtype == torch.long and x.shape == (1,):  # the sizes
            out[0].copy_(x)
            out[1].fill_(self.other.shape[0])
        else:
            out[0].copy_(x)
            out[1][: self.other.shape[0]].copy_(self.other)


def test_gather_rows_pads_and_trims_unequal_rank_batches(monkeypatch):
    from lmp_model.recipes import queue as queue_mod

    mine, other = torch.randn(2, 3), torch.randn(5, 3)
    monkeypatch.setattr(queue_mod, "dist", _FakeDist(other))
    assert torch.equal(queue_mod.gather_rows(mine), torch.cat([mine, other]))
    monkeypatch.setattr(queue_mod, "dist", _FakeDist(other[:0]))
    assert torch.equal(queue_mod.gather_rows(mine), mine)
