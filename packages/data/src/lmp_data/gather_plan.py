"""What the host computes for `WindowGather` (`lmp_data.gather`) without touching a feature value.

`token_tables`: the per-shot and per-token integer tables a batch's token ranges are looked up in (step 1
of `lmp_data.gather`'s docstring); `Plan`: the host's part of one batch (every index and shape);
`memory_estimate`: the computed memory of a store held by `WindowGather` and the peak while batching.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmp_data.batch import DEFAULT_K
from lmp_data.store import InMemoryStore


def token_tables(mem: InMemoryStore) -> dict[str, np.ndarray]:
    """Integer tables of a loaded store (global shot and token indices):

    - `tok_lo[g]`: first token that can overlap a window starting at shot g;
      `tok_hi[g]`: one past the last token that can overlap a window ending at shot g;
    - `first_shot[t]`, `last_shot[t]`: the range of its movie's shots that token t's span overlaps
      (first > last: it lies in a gap between shots, or before the first / after the last shot).
    """
    lo = np.empty(mem.n_shots, np.int64)
    hi = np.empty(mem.n_shots, np.int64)
    first = np.empty(len(mem.text_spans), np.int64)
    last = np.empty(len(mem.text_spans), np.int64)
    for i in range(len(mem.movie_ids)):
        s0, s1 = mem.shot_offsets[i], mem.shot_offsets[i + 1]
        t0, t1 = mem.token_offsets[i], mem.token_offsets[i + 1]
        spans = mem.text_spans[t0:t1]
        cummax_end = np.maximum.accumulate(spans[:, 1]) if t1 > t0 else spans[:, 1]
        lo[s0:s1] = t0 + np.searchsorted(cummax_end, mem.shots[s0:s1, 0], side="left")
        hi[s0:s1] = t0 + np.searchsorted(spans[:, 0], mem.shots[s0:s1, 1], side="right")
        # shots are sorted and disjoint, so the shots a token overlaps are one range [first, last]
        starts, ends = mem.shots[s0:s1, 0], mem.shots[s0:s1, 1]
        a, b = spans[:, 0], spans[:, 1]
        point = a == b
        first[t0:t1] = s0 + np.where(
            point, np.searchsorted(ends, a, side="left"), np.searchsorted(ends, a, side="right")
        )
        last[t0:t1] = (
            s0
            - 1
            + np.where(
                point, np.searchsorted(starts, a, side="right"), np.searchsorted(starts, b, side="left")
            )
        )
    return {"tok_lo": lo, "tok_hi": hi, "first_shot": first, "last_shot": last}


@dataclass
class Plan:
    """The host's part of a batch: every index and shape, no feature values."""

    movie: np.ndarray  # [N] movie index into the in-memory store
    start: np.ndarray  # [N] first shot within the movie
    g0: np.ndarray  # [N] first global shot
    n: np.ndarray  # [N] real shots (<= k)
    lo: np.ndarray  # [N] first candidate token
    n_cand: np.ndarray  # [N] candidate tokens
    n_tok: np.ndarray  # [N] tokens of the window (exact)
    T: int  # token width (max n_tok, >= 1)


def memory_estimate(
    n_shots: int,
    tokens_per_shot: float,
    dims: dict[str, int],
    *,
    feature_bytes: int = 2,
    k: int = DEFAULT_K,
    batch: int = 64,
    tokens_per_window: int | None = None,
    out_bytes: int = 4,
    held: int = 1,
) -> dict[str, float]:
    """Computed memory of a store held by `WindowGather` and the peak while building batches.

    - `store_per_shot`: bytes on the store device per shot: video + audio rows (`feature_bytes` per
      value: the memory dtype), and per token (at `tokens_per_shot`) its text row plus its shot range
      (two int32);
    - `host_per_shot`: the host's plan tables (5 int64 per shot; the loaded store's own host arrays,
      shot times and token spans, come on top: 16 B per shot and per token);
    - `batch`: one returned batch of `batch` windows (`out_bytes` per feature value, bool masks, T =
      `tokens_per_window`, default tokens_per_shot * k);
    - `peak`: store + `held` batches already built (e.g. the prefetch queue) + the one being built + its
      temporaries (rows in the memory dtype before conversion, int64 [N, C] candidate tensors with C ~
      1.5 T, [N*T] int64 token indices).
    """
    dv, da, dl = dims.get("video", 0), dims.get("audio", 0), dims.get("text", 0)
    T = tokens_per_window if tokens_per_window is not None else round(tokens_per_shot * k)
    store_shot = (dv + da) * feature_bytes + tokens_per_shot * (dl * feature_bytes + 8)
    one = batch * (k * (dv + da) * out_bytes + T * dl * out_bytes + k + T + T * k + 8)
    conv = batch * (k * max(dv, da) + T * dl) * feature_bytes if feature_bytes != out_bytes else 0
    temps = conv + 6 * batch * int(1.5 * T) * 8 + 4 * batch * T * 8 + 2 * batch * k * 8
    store = n_shots * store_shot
    return {
        "store_per_shot": store_shot,
        "host_per_shot": 5 * 8,
        "store": store,
        "batch": one,
        "peak": store + (held + 1) * one + temps,
    }
