"""`ShotWindows`: a torch Dataset of windows of `k` consecutive shots of one movie (paper section 3).

A window holds the base video and audio features of its `k` shots, the language tokens whose time span
overlaps the window's time range [start of its first shot, end of its last shot], and each token's
membership in the window's shots (a token may overlap several shots; one in a gap between shots
overlaps none). Overlap of a token span [a, b] with an interval [c, d] means `a < d and b > c`; a
zero-length token (a == b) overlaps when `c <= a <= d`.

Modes:
- "train": `windows_per_epoch` windows (default ceil(shots / k)) with random offsets, uniform over all
  valid window starts of all movies. Window `i` of epoch `e` is a pure function of (seed, e, i), so a
  data position is restored by (epoch, index) alone and DataLoader workers need no shared RNG state.
- "eval": every window of every movie, starts 0, stride, 2*stride, ... (default stride k) plus a last
  window ending at the movie's last shot, so every shot is covered; deterministic order.
Movies shorter than `k` give one window padded with zeros, `shot_mask` False on the padding; they are
never dropped. The paper does not say how it treats them; padding+masking is the default here.

Speed: the whole store is loaded into memory once (`FeatureStore.load_all`, before DataLoader workers
fork; Zarr's asyncio thread must not be forked). `__getitems__` gathers a whole batch with a few
vectorised index operations and returns the collated batch, so use `collate_fn=collate_windows`
(it passes such a batch through). `__getitem__` builds one window the straightforward way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lmp_data.batch import BATCH_KEYS
from lmp_data.store import FeatureStore, InMemoryStore


@dataclass
class WindowsConfig:
    """How a store is cut into windows (embed this in a pretraining config)."""

    k: int = 30
    """Shots per window (paper: 30; ablations 10/60)."""
    mode: str = "train"
    """"train" (random offsets) or "eval" (every window, in order)."""
    stride: int | None = None
    """Eval: shots between consecutive window starts; None means k (non-overlapping)."""
    seed: int = 0
    """Train: sampling seed; window i of epoch e depends only on (seed, e, i)."""
    windows_per_epoch: int | None = None
    """Train: windows per epoch; None means ceil(total shots / k)."""
    memory_dtype: str = "float32"
    """In-memory feature dtype: float32 makes windows plain copies; float16 halves memory."""
    views: int = 1
    """Train: windows drawn per movie draw (consecutive windows of a rank share a movie)."""
    view_stride: int = 1
    """Train: the rank count (see `ShotWindows`)."""


def overlaps(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Span [a, b] overlaps interval [c, d] (broadcasting); see the module docstring."""
    return ((a < d) & (b > c)) | ((a == b) & (c <= a) & (a <= d))


_M1, _M2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (vectorised, wraps mod 2**64): a counter-based RNG for resumable sampling."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


class ShotWindows(Dataset):
    """Windows of `k` consecutive shots; items are dicts, batches follow `lmp_data.batch`.

    `store` is a `FeatureStore` (loaded into memory here) or an already loaded `InMemoryStore`;
    `movies` restricts the windows to those movie ids (e.g. one split). Train mode with `views` > 1
    draws windows in groups of `views` from one movie (each at its own random start): window indices
    i and i + view_stride * t share a group when they fall in the same block of `views` (view_stride =
    the number of ranks, so that a rank's consecutive windows j, j+1, ... form the groups).
    """

    def __init__(
        self,
        store: FeatureStore | InMemoryStore,
        k: int,
        *,
        mode: str = "train",
        stride: int | None = None,
        movies: Sequence[str] | None = None,
        seed: int = 0,
        windows_per_epoch: int | None = None,
        memory_dtype: str = "float32",
        views: int = 1,
        view_stride: int = 1,
    ):
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"ShotWindows: k must be a positive int, got {k!r}")
        if mode not in ("train", "eval"):
            raise ValueError(f"ShotWindows: mode must be 'train' or 'eval', got {mode!r}")
        if stride is not None and (
            isinstance(stride, bool) or not isinstance(stride, int | np.integer) or stride < 1
        ):
            raise ValueError(f"ShotWindows: stride must be a positive int or None, got {stride!r}")
        if min(int(views), int(view_stride)) < 1:
            raise ValueError(f"ShotWindows: views and view_stride must be >= 1, got {views}, {view_stride}")
        self.views, self.view_stride = int(views), int(view_stride)
        if isinstance(store, FeatureStore):
            store = store.load_all(list(movies) if movies is not None else None, dtype=memory_dtype)
        self.mem = store
        self.k, self.mode, self.stride = int(k), mode, int(stride or k)
        self.seed, self.epoch = int(seed), 0
        ids = list(movies) if movies is not None else store.movie_ids
        missing = [m for m in ids if m not in store.index]
        if missing:
            raise KeyError(f"ShotWindows: movies not in the store: {missing[:10]}")
        if not ids:
            raise ValueError("ShotWindows: no movies to cut windows from")
        self.movie_idx = np.array([store.index[m] for m in ids], dtype=np.int64)
        so = store.shot_offsets
        self.n_shots = (so[1:] - so[:-1]).astype(np.int64)
        self._precompute_token_ranges()
        n = self.n_shots[self.movie_idx]
        if mode == "eval":
            starts = [self._eval_starts(int(s)) for s in n]
            self.win_movie = np.repeat(self.movie_idx, [len(s) for s in starts])
            self.win_start = np.concatenate(starts).astype(np.int64)
            self._len = len(self.win_start)
        else:
            valid = np.maximum(n - self.k + 1, 1)
            self.cum_valid = np.concatenate([[0], np.cumsum(valid)]).astype(np.int64)
            self._len = int(windows_per_epoch or -(-int(n.sum()) // self.k))

    @classmethod
    def from_config(
        cls, store: FeatureStore | InMemoryStore, cfg: WindowsConfig, movies: Sequence[str] | None = None
    ) -> ShotWindows:
        return cls(
            store,
            cfg.k,
            mode=cfg.mode,
            stride=cfg.stride,
            movies=movies,
            seed=cfg.seed,
            windows_per_epoch=cfg.windows_per_epoch,
            memory_dtype=cfg.memory_dtype,
            views=cfg.views,
            view_stride=cfg.view_stride,
        )

    def _eval_starts(self, n: int) -> np.ndarray:
        last = max(n - self.k, 0)
        starts = np.arange(0, last + 1, self.stride, dtype=np.int64)
        return starts if starts[-1] == last else np.append(starts, last)

    def _precompute_token_ranges(self) -> None:
        """For every shot g: tok_lo[g] = first token that can overlap a window starting at shot g,
        tok_hi[g] = one past the last token that can overlap a window ending at shot g; per token t,
        tok_first_shot[t] / tok_last_shot[t]: the range of shots it overlaps (empty if first > last)."""
        mem = self.mem
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
        self.tok_lo, self.tok_hi = lo, hi
        self.tok_first_shot, self.tok_last_shot = first, last

    def set_epoch(self, epoch: int) -> None:
        """Train mode: draw the windows of another epoch (a DataLoader re-reads this in workers each epoch
        only if persistent_workers=False)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._len

    def locate(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(movie index into the in-memory store, first shot within the movie) of each window index."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -self._len or idx.max() >= self._len):
            raise IndexError(f"ShotWindows: index out of range [0, {self._len})")
        idx = np.where(idx < 0, idx + self._len, idx)
        if self.mode == "eval":
            return self.win_movie[idx], self.win_start[idx]
        with np.errstate(over="ignore"):
            base = _mix(np.uint64(self.seed % 2**64) + _GOLD * np.uint64(self.epoch + 1))
            key = _mix(base + idx.astype(np.uint64))
        if self.views == 1:
            r = (key % np.uint64(self.cum_valid[-1])).astype(np.int64)
            j = np.searchsorted(self.cum_valid, r, side="right") - 1
            return self.movie_idx[j], r - self.cum_valid[j]
        # views > 1: windows idx that share a group draw one movie, each its own start in it
        stride = np.int64(self.view_stride)
        grp = (idx // stride // self.views) * stride + idx % stride
        with np.errstate(over="ignore"):
            gkey = _mix(base + grp.astype(np.uint64) + _GOLD)
        r = (gkey % np.uint64(self.cum_valid[-1])).astype(np.int64)
        j = np.searchsorted(self.cum_valid, r, side="right") - 1
        n_valid = (self.cum_valid[j + 1] - self.cum_valid[j]).astype(np.uint64)
        return self.movie_idx[j], (key % n_valid).astype(np.int64)

    def window(self, index: int) -> tuple[str, int]:
        """(movie id, first shot) of window `index`."""
        m, s = self.locate([index])
        return self.mem.movie_ids[int(m[0])], int(s[0])

    # -- one window (reference path) -----------------------------------------------------------------
    def __getitem__(self, index: int) -> dict[str, Any]:
        m, start = (int(x[0]) for x in self.locate([index]))
        mem, k = self.mem, self.k
        mv = mem.movie(mem.movie_ids[m])
        n = min(k, len(mv["shots"]) - start)
        video = torch.zeros(k, mem.video.shape[1])
        audio = torch.zeros(k, mem.audio.shape[1])  # width 0 for a store without audio
        video[:n] = torch.from_numpy(mv["video"][start : start + n])
        audio[:n] = torch.from_numpy(mv["audio"][start : start + n])
        shots = mv["shots"][start : start + n]
        spans = mv["text_spans"]
        inside = overlaps(spans[:, 0], spans[:, 1], shots[0, 0], shots[-1, 1])
        tok = np.flatnonzero(inside)
        member = np.zeros((len(tok), k), bool)
        member[:, :n] = overlaps(spans[tok, :1], spans[tok, 1:], shots[None, :, 0], shots[None, :, 1])
        return {
            "video": video,
            "audio": audio,
            "shot_mask": torch.arange(k) < n,
            "text": torch.from_numpy(mv["text"][tok]).float(),
            "token_shot": torch.from_numpy(member),
            "start": start,
            "movie": mem.movie_ids[m],
        }

    # -- a whole batch (vectorised hot path) ---------------------------------------------------------
    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        """The collated batch of `indices` (what `collate_windows([self[i] for i in indices])` gives)."""
        mem, k = self.mem, self.k
        m, start = self.locate(indices)
        n_win = len(m)
        n = np.minimum(self.n_shots[m] - start, k)  # real shots per window
        g0 = mem.shot_offsets[m] + start
        ar = np.arange(k)
        valid = ar[None, :] < n[:, None]  # [N, k]
        gidx = np.where(valid, g0[:, None] + ar, g0[:, None])  # padding reads shot g0, zeroed below
        flat = gidx.reshape(-1)
        video = _gather(mem.video, flat)  # np.take: a row gather at memcpy speed (faster than index_select)
        audio = _gather(mem.audio, flat)
        shot_mask = torch.from_numpy(valid)
        if not valid.all():
            pad = np.flatnonzero(~valid)
            video[pad] = 0
            audio[pad] = 0
        video = torch.from_numpy(video).view(n_win, k, -1)
        audio = torch.from_numpy(audio).view(n_win, k, -1)

        # language tokens: candidates [tok_lo[first shot], tok_hi[last shot]) filtered by exact overlap
        glast = g0 + n - 1
        t0, t1 = mem.shots[g0, 0], mem.shots[glast, 1]
        lo, hi = self.tok_lo[g0], self.tok_hi[glast]
        cnt = np.maximum(hi - lo, 0)
        win = np.repeat(np.arange(n_win), cnt)
        first = np.cumsum(cnt) - cnt
        tok = np.arange(int(cnt.sum()), dtype=np.int64) - np.repeat(first - lo, cnt)
        keep = overlaps(mem.text_spans[tok, 0], mem.text_spans[tok, 1], t0[win], t1[win])
        if not keep.all():
            tok, win = tok[keep], win[keep]
        per_win = np.bincount(win, minlength=n_win)
        pos = np.arange(len(tok)) - np.repeat(np.cumsum(per_win) - per_win, per_win)
        T = max(int(per_win.max(initial=0)), 1)
        # one gather of N*T rows (padding reads row 0 and is zeroed), no per-window Python loop
        dst = win * T + pos
        src = np.zeros(n_win * T, np.int64)
        src[dst] = tok
        text = _gather(mem.text, src)
        real = np.zeros(n_win * T, bool)
        real[dst] = True
        if not real.all():
            text[~real] = 0
        text = torch.from_numpy(text)
        text_mask = torch.from_numpy(real).view(n_win, T)
        # membership: the token's shot range relative to the window's first shot
        rf = np.full(n_win * T, k, np.int64)
        rl = np.full(n_win * T, -1, np.int64)
        rf[dst] = self.tok_first_shot[tok] - g0[win]
        rl[dst] = self.tok_last_shot[tok] - g0[win]
        small = np.int8 if k < 127 else np.int32  # narrow ints: the [N*T, k] compares are the hot spot
        rf, rl, ar_s = np.clip(rf, -1, k).astype(small), np.clip(rl, -1, k).astype(small), ar.astype(small)
        member = np.greater_equal(ar_s, rf[:, None])
        member &= np.less_equal(ar_s, rl[:, None])
        token_shot = torch.from_numpy(member).view(n_win, T, k)
        text = text.view(n_win, T, -1)
        return {
            "video": video,
            "audio": audio,
            "shot_mask": shot_mask,
            "text": text,
            "text_mask": text_mask,
            "token_shot": token_shot,
            "start": torch.from_numpy(start.copy()),
            "movie": [mem.movie_ids[i] for i in m],
        }


def _gather(rows: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """rows[idx] as float32 (one pass for float32 memory, a second for the float16 conversion).
    No rows at all (a store without language, or whose movies have no token): zeros, the padding."""
    if rows.shape[0] == 0:
        return np.zeros((len(idx), rows.shape[1]), np.float32)
    out = np.take(rows, idx, axis=0)
    return out if out.dtype == np.float32 else out.astype(np.float32)


def collate_windows(items: list[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
    """Stack window items into the batch of `lmp_data.batch`, padding tokens to the batch's longest
    (at least 1). An already collated batch (from `ShotWindows.__getitems__`) is returned as is."""
    if isinstance(items, dict):
        if set(items) != set(BATCH_KEYS):
            raise ValueError(
                f"collate_windows: a batch dict needs the keys {BATCH_KEYS}, got {sorted(items)}"
            )
        return items
    if not items:
        raise ValueError("collate_windows: empty list of windows")
    n_win, k = len(items), items[0]["video"].shape[0]
    dl = items[0]["text"].shape[1]
    T = max(1, max(it["text"].shape[0] for it in items))
    text = torch.zeros(n_win, T, dl)
    text_mask = torch.zeros(n_win, T, dtype=torch.bool)
    token_shot = torch.zeros(n_win, T, k, dtype=torch.bool)
    for i, it in enumerate(items):
        t = it["text"].shape[0]
        text[i, :t] = it["text"]
        text_mask[i, :t] = True
        token_shot[i, :t] = it["token_shot"]
    return {
        "video": torch.stack([it["video"] for it in items]).float(),
        "audio": torch.stack([it["audio"] for it in items]).float(),
        "shot_mask": torch.stack([it["shot_mask"] for it in items]),
        "text": text,
        "text_mask": text_mask,
        "token_shot": token_shot,
        "start": torch.tensor([int(it["start"]) for it in items], dtype=torch.int64),
        "movie": [it["movie"] for it in items],
    }
