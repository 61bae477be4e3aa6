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

Batches: `ShotWindows` chooses windows (`locate`: movie, first shot); `lmp_data.gather.WindowGather`
turns them into tensors, the one batch builder. The whole store is loaded into memory once
(`FeatureStore.load_all`, before DataLoader workers fork; Zarr's asyncio thread must not be forked) and
held as tensors on `store_device` (default: `device`, default the CPU). `__getitems__` builds a whole
batch there with one gather per modality and returns the collated batch, so use
`collate_fn=collate_windows` (it passes such a batch through); `__getitem__` is the batch of one window,
unpadded. With `device="cuda"` batches are built on the GPU (the store is copied there once; use no
DataLoader workers); with `device="cuda", store_device="cpu"` the store stays in host memory and
batches are built there and copied through pinned memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lmp_data.batch import BATCH_KEYS, DEFAULT_K
from lmp_data.gather import WindowGather
from lmp_data.store import FeatureStore, InMemoryStore


@dataclass
class WindowsConfig:
    """How a store is cut into windows (embed this in a pretraining config)."""

    k: int = DEFAULT_K
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
    view_span: int = 0
    """Train, views > 1: 0 = each view of a group starts anywhere in the movie; s > 0 = within s shots
    of a centre drawn uniformly (so views are at most 2s apart, neighbours in the movie)."""


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
    the number of ranks, so that a rank's consecutive windows j, j+1, ... form the groups); with
    `view_span` s > 0 the views of a group start within s shots of a common centre (clipped to the movie).
    `device` / `store_device`: where batches are returned / where the store's tensors live and the
    gather runs (see the module docstring and `WindowGather`).

    Read-only: `mem` (the `InMemoryStore` the windows are cut from), `k`, `seed`; `locate` / `window` say
    where a window index lies, `batch` builds the batch of window indices.
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
        view_span: int = 0,
        device: str | torch.device = "cpu",
        store_device: str | torch.device | None = None,
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
        if int(view_span) < 0:
            raise ValueError(f"ShotWindows: view_span must be >= 0, got {view_span}")
        self.views, self.view_stride, self.view_span = int(views), int(view_stride), int(view_span)
        if isinstance(store, FeatureStore):
            store = store.load_all(list(movies) if movies is not None else None, dtype=memory_dtype)
        self._mem = store
        self._k, self.mode, self.stride = int(k), mode, int(stride or k)
        self._seed, self.epoch = int(seed), 0
        ids = list(movies) if movies is not None else store.movie_ids
        missing = [m for m in ids if m not in store.index]
        if missing:
            raise KeyError(f"ShotWindows: movies not in the store: {missing[:10]}")
        if not ids:
            raise ValueError("ShotWindows: no movies to cut windows from")
        self.movie_idx = np.array([store.index[m] for m in ids], dtype=np.int64)
        so = store.shot_offsets
        self.n_shots = (so[1:] - so[:-1]).astype(np.int64)
        self.gather = WindowGather(store, self.k, device=device, store_device=store_device)
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
            view_span=cfg.view_span,
        )

    @property
    def mem(self) -> InMemoryStore:
        """The in-memory store the windows are cut from."""
        return self._mem

    @property
    def k(self) -> int:
        """Shots per window."""
        return self._k

    @property
    def seed(self) -> int:
        """The seed of the train-mode draw (with the epoch and the index, it fixes each window)."""
        return self._seed

    def _eval_starts(self, n: int) -> np.ndarray:
        last = max(n - self.k, 0)
        starts = np.arange(0, last + 1, self.stride, dtype=np.int64)
        return starts if starts[-1] == last else np.append(starts, last)

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
        if self.view_span == 0:
            return self.movie_idx[j], (key % n_valid).astype(np.int64)
        centre = (_mix(gkey) % n_valid).astype(np.int64)
        offset = (key % np.uint64(2 * self.view_span + 1)).astype(np.int64) - self.view_span
        return self.movie_idx[j], np.clip(centre + offset, 0, n_valid.astype(np.int64) - 1)

    def window(self, index: int) -> tuple[str, int]:
        """(movie id, first shot) of window `index`."""
        m, s = self.locate([index])
        return self.mem.movie_ids[int(m[0])], int(s[0])

    # -- batches: `lmp_data.gather.WindowGather` builds them -------------------------------------------
    def __getitem__(self, index: int) -> dict[str, Any]:
        """One window as an item (see `lmp_data.batch`): the batch of one window, unpadded."""
        m, start = self.locate([index])
        p = self.gather.plan(m, start)
        b = self.gather.build(p)
        t = int(p.n_tok[0])
        return {
            "video": b["video"][0],
            "audio": b["audio"][0],
            "shot_mask": b["shot_mask"][0],
            "text": b["text"][0, :t],
            "token_shot": b["token_shot"][0, :t],
            "start": int(start[0]),
            "movie": b["movie"][0],
        }

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        """The collated batch of `indices` (what `collate_windows([self[i] for i in indices])` gives)."""
        return self.gather(*self.locate(indices))

    def batch(self, indices: Sequence[int], epoch: int | None = None) -> dict[str, Any]:
        """The collated batch of window `indices` (as `__getitems__`), of epoch `epoch` when given (train
        mode: that epoch's windows; the dataset stays at that epoch, as after `set_epoch`)."""
        if epoch is not None and epoch != self.epoch:
            self.set_epoch(epoch)
        return self.__getitems__(indices)

    def max_tokens(self) -> int:
        """Most language tokens a window of these movies can hold (an upper bound of the exact count)."""
        return self.gather.max_tokens(self.movie_idx)


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
