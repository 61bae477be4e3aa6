"""Movies2Scenes' steps as functions (`lmp_model.recipes.m2s`): the math of each stage outside the model.

Movie similarity from metadata and the similar pairs (step 2), the shot stage's neighbouring-shot loss
(Eq. 1), the movie stage's shot / scene adjacency and pooling (Eq. 2), and greedy scene pair mining
(step 3): plain functions of arrays and tensors, tested on their own; the model (`M2S`) calls them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lmp_model.recipes.m2s_config import MiningConfig


# ------------------------------------------------------------------------------ movie similarity
def movie_similarity(
    manifest: Any,
    weights: Mapping[str, float] | None = None,
    id_column: str = "movie_id",
    year_scale: float = 10.0,
    text_columns: Sequence[str] = ("synopsis",),
    text_embed: Callable[[list[str]], np.ndarray] | None = None,
) -> tuple[list[str], np.ndarray]:
    """Movie-level similarity S from manifest metadata: (movie ids, S [M, M] in [0, 1], diagonal 1).

    `manifest`: a Polars DataFrame, one row per movie (pass only the pretraining split's movies).
    Per column (those of `weights` present in the manifest; default genres, year, director, writer,
    synopsis, weight 1 each): list columns -> Jaccard of the sets; numeric -> exp(-|a - b| / year_scale);
    `text_columns` -> cosine of TF-IDF vectors (scikit-learn) or of `text_embed(texts)` when given;
    other strings -> 1 if equal. A missing value scores 0. S = weighted mean over the columns.
    """
    import polars as pl

    weights = dict(weights or {"genres": 1.0, "year": 1.0, "director": 1.0, "writer": 1.0, "synopsis": 1.0})
    if id_column not in manifest.columns:
        raise ValueError(f"movie_similarity: manifest has no {id_column!r} column")
    ids = [str(x) for x in manifest[id_column].to_list()]
    m = len(ids)
    total, wsum = np.zeros((m, m)), 0.0
    for col, w in weights.items():
        if col not in manifest.columns or w == 0:
            continue
        series = manifest[col]
        values = series.to_list()
        present = np.array([v is not None and v != "" for v in values])
        if isinstance(series.dtype, pl.List):
            sets = [set(v or ()) for v in values]
            sim = np.array(
                [[len(a & b) / len(a | b) if a | b else 0.0 for b in sets] for a in sets]
            )  # fmt: skip
        elif series.dtype.is_numeric():
            x = np.array([float(v) if v is not None else np.nan for v in values])
            sim = np.nan_to_num(np.exp(-np.abs(x[:, None] - x[None, :]) / year_scale))
        elif col in text_columns:
            texts = [str(v) if v else "" for v in values]
            if text_embed is not None:
                emb = np.asarray(text_embed(texts), dtype=np.float64)
            else:
                from sklearn.feature_extraction.text import TfidfVectorizer

                emb = TfidfVectorizer().fit_transform(texts).toarray() if any(texts) else np.zeros((m, 1))
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            sim = np.clip(emb @ emb.T, 0.0, 1.0)
        else:
            s = np.array([str(v) for v in values], dtype=object)
            sim = (s[:, None] == s[None, :]).astype(np.float64)
        sim = sim * (present[:, None] & present[None, :])
        total += w * sim
        wsum += w
    if wsum == 0:
        raise ValueError(f"movie_similarity: none of the columns {list(weights)} is in the manifest")
    s = total / wsum
    np.fill_diagonal(s, 1.0)
    return ids, s


def similar_movies(similarity: np.ndarray, per_movie: int = 3) -> np.ndarray:
    """[M, M] bool: i ~ j when j is among i's `per_movie` most similar others or i among j's (symmetric)."""
    s = np.array(similarity, dtype=np.float64)
    m = s.shape[0]
    np.fill_diagonal(s, -np.inf)
    out = np.zeros((m, m), dtype=bool)
    top = np.argsort(-s, axis=1, kind="stable")[:, : min(per_movie, max(m - 1, 0))]
    out[np.repeat(np.arange(m), top.shape[1]), top.ravel()] = True
    return out | out.T


# ------------------------------------------------------------------------------------ shot stage
def neighbour_shot_loss(
    z: Tensor, valid: Tensor, offset: int = 2, temperature: float = 0.07
) -> tuple[Tensor, Tensor]:
    """Eq. 1: each shot t with a valid neighbour t -/+ offset in its window; positive logit = the larger
    of its similarities to the two neighbours; negatives = all valid shots of the other windows.

    z [N, k, D] (normalised here), valid [N, k]. Returns (mean loss, mean ln(1 + negatives))."""
    n, k, _ = z.shape
    z = F.normalize(z.float(), dim=-1)
    prev = torch.full((n, k), float("-inf"), device=z.device)  # E(x_t) . E(x_{t-offset})
    nxt = prev.clone()  # E(x_t) . E(x_{t+offset})
    if offset < k:
        prev[:, offset:] = (
            (z[:, offset:] * z[:, :-offset]).sum(-1).masked_fill(~valid[:, :-offset], float("-inf"))
        )
        nxt[:, :-offset] = (
            (z[:, :-offset] * z[:, offset:]).sum(-1).masked_fill(~valid[:, offset:], float("-inf"))
        )
    sims = (prev, nxt)
    pos = torch.maximum(sims[0], sims[1])  # [N, k]
    query = valid & torch.isfinite(pos)
    if not query.any():
        zero = z.sum() * 0.0
        return zero, zero.detach()
    window = torch.arange(n, device=z.device)[:, None].expand(n, k)
    qz, qw = z[query], window[query]
    flat_z, flat_valid, flat_w = z.reshape(n * k, -1), valid.reshape(-1), window.reshape(-1)
    neg_valid = flat_valid[None, :] & (flat_w[None, :] != qw[:, None])
    neg = (qz @ flat_z.T).masked_fill(~neg_valid, float("-inf"))
    logits = torch.cat([pos[query][:, None], neg], dim=1) / temperature
    loss = -torch.log_softmax(logits, dim=1)[:, 0].mean()
    chance = torch.log1p(neg_valid.sum(1).float()).mean()
    return loss, chance.detach()


# ----------------------------------------------------------------------------------- movie stage
def shot_adjacency(e1: Tensor, e2: Tensor) -> Tensor:
    """Eq. 2: A = E_movie(x1) . E_movie(x2)^T; e1 [P, u, d], e2 [P, v, d] -> [P, u, v]."""
    return e1 @ e2.transpose(-1, -2)


def scene_adjacency(
    a: Tensor, mask1: Tensor, mask2: Tensor, kernel: int, stride: int
) -> tuple[Tensor, Tensor]:
    """B: mean of A over each kernel x kernel window of valid shot pairs (stride `stride`).

    a [P, u, v], mask1 [P, u], mask2 [P, v] -> (B [P, m, n], valid [P, m, n]: window holds a valid pair).
    A kernel larger than a side is clipped to it."""
    kh, kw = min(kernel, a.shape[-2]), min(kernel, a.shape[-1])
    pair = (mask1[:, :, None] & mask2[:, None, :]).to(a.dtype)
    total = F.avg_pool2d((a * pair).unsqueeze(1), (kh, kw), stride).squeeze(1)
    count = F.avg_pool2d(pair.unsqueeze(1), (kh, kw), stride).squeeze(1)
    valid = count > 0
    return torch.where(valid, total / count.clamp(min=1e-12), torch.zeros_like(total)), valid


def padded_scene_adjacency(
    a: Tensor, mask1: Tensor, mask2: Tensor, length: int, kernel: int, stride: int
) -> tuple[Tensor, Tensor]:
    """`scene_adjacency` of `a` [P, u, v] zero-padded (masks False) to [P, length, length], computed on the
    part of the padded map that windows starting on a real row / column read; the windows that start in
    the padding are B = 0, not valid, as `scene_adjacency` on the whole padded map gives them."""
    k = min(kernel, length)
    side = (length - k) // stride + 1  # windows per side of the whole padded map

    def cover(n: int) -> tuple[int, int]:  # (rows to materialise, windows that start on a real row)
        windows = min(side, max(0, n - 1) // stride + 1)
        return min(length, (windows - 1) * stride + k), windows

    (r1, w1), (r2, w2) = cover(a.shape[1]), cover(a.shape[2])
    a = F.pad(a[:, :r1, :r2], (0, max(0, r2 - a.shape[2]), 0, max(0, r1 - a.shape[1])))
    mask1 = F.pad(mask1[:, :r1], (0, max(0, r1 - mask1.shape[1])), value=False)
    mask2 = F.pad(mask2[:, :r2], (0, max(0, r2 - mask2.shape[1])), value=False)
    b, valid = scene_adjacency(a, mask1, mask2, k, stride)
    b, valid = b[:, :w1, :w2], valid[:, :w1, :w2]
    return F.pad(b, (0, side - w2, 0, side - w1)), F.pad(valid, (0, side - w2, 0, side - w1), value=False)


def max_pool_scenes(b: Tensor, valid: Tensor, kernel: int, stride: int) -> Tensor:
    """V: max of B over each kernel x kernel window (valid entries only; an all-invalid window -> 0),
    flattened: [P, m, n] -> [P, m' * n']."""
    kh, kw = min(kernel, b.shape[-2]), min(kernel, b.shape[-1])
    v = F.max_pool2d(b.masked_fill(~valid, float("-inf")).unsqueeze(1), (kh, kw), stride).squeeze(1)
    v = torch.where(torch.isfinite(v), v, torch.zeros_like(v))
    return v.flatten(1)


def pooled_size(length: int, kernel: int, stride: int) -> int:
    """Side of a pooled map: (length - min(kernel, length)) // stride + 1."""
    return (length - min(kernel, length)) // stride + 1


def binary_entropy(labels: Tensor) -> Tensor:
    """BCE of predicting the batch's positive rate p for every pair: -p ln p - (1-p) ln(1-p)."""
    p = labels.float().mean().clamp(1e-12, 1 - 1e-12)
    return -(p * p.log() + (1 - p) * (1 - p).log()).detach()


# ---------------------------------------------------------------------------------- pair mining
def mine_scene_pairs(
    b: np.ndarray | Tensor,
    top_frac: float = 0.5,
    scene_len: int = 9,
    stride: int = 1,
    non_overlapping: bool = True,
) -> list[tuple[int, int, float]]:
    """Greedy scene pairs from a scene adjacency B [m, n] (supplement 3a).

    Entries are visited from the highest; only the top `top_frac` of all m * n entries are considered. An
    entry (i, j) is kept unless scene i of movie 1 or scene j of movie 2 is already used: with
    `non_overlapping`, "used" means its shots [i*stride, i*stride + scene_len) overlap a kept scene's;
    otherwise the same index. Returns [(i, j, B[i, j])] in the order kept.

    Computed as repeated argmax over the entries still available (rows and columns of kept scenes
    blocked), which keeps exactly what the visit in sorted order keeps (ties: the lower flat index first,
    like a stable sort) in O(kept * m * n) instead of a Python loop over half of all entries."""
    arr = b.detach().cpu().double().numpy() if isinstance(b, Tensor) else np.asarray(b, dtype=np.float64)
    m, n = arr.shape
    if m == 0 or n == 0:
        return []
    order = np.argsort(-arr, axis=None, kind="stable")[: math.ceil(top_frac * m * n)]
    reach = (scene_len + stride - 1) // stride - 1 if non_overlapping else 0  # index distance that overlaps
    cur = np.full(m * n, -np.inf)
    cur[order] = arr.reshape(-1)[order]
    cur = cur.reshape(m, n)
    kept = []
    while True:
        flat = int(np.argmax(cur))
        i, j = divmod(flat, n)
        if not cur[i, j] > -np.inf:
            break
        kept.append((i, j, float(arr[i, j])))
        cur[max(0, i - reach) : i + reach + 1, :] = -np.inf
        cur[:, max(0, j - reach) : j + reach + 1] = -np.inf
    return kept


def mine_hidden_pair(e1: Tensor, e2: Tensor, mining: MiningConfig) -> list[tuple[int, int, float]]:
    """Step 3 on two movies' hidden features e1 [U, d], e2 [V, d]: A = e1 e2^T, B = mean over each
    scene_len x scene_len window (stride `mining.stride`), greedy pairs (`mine_scene_pairs`) ->
    [(first shot in movie 1, first shot in movie 2, score)]."""
    a = shot_adjacency(e1[None].float(), e2[None].float())
    ones1 = torch.ones(1, e1.shape[0], dtype=torch.bool, device=a.device)
    ones2 = torch.ones(1, e2.shape[0], dtype=torch.bool, device=a.device)
    b, _ = scene_adjacency(a, ones1, ones2, mining.scene_len, mining.stride)
    pairs = mine_scene_pairs(b[0], mining.top_frac, mining.scene_len, mining.stride, mining.non_overlapping)
    return [(i * mining.stride, j * mining.stride, sc) for i, j, sc in pairs]
