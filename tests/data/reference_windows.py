"""The window batch path of `ShotWindows` before issue 14 (commit 623c728), kept verbatim as a reference.

`OldWindows(ds)` reads the windows' choice from a `ShotWindows` (`locate`, the same seed and windows) and
builds batches the way `ShotWindows.__getitems__` (numpy, host) and `ShotWindows.__getitem__` (one window,
float time comparisons) did, so tests can check `lmp_data.gather.WindowGather` against it element for
element.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lmp_data.windows import overlaps


class OldWindows:
    def __init__(self, ds: Any) -> None:
        self.ds, self.mem, self.k, self.n_shots = ds, ds.mem, ds.k, ds.n_shots
        self.locate = ds.locate
        self._precompute_token_ranges()

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

    # -- one window (reference path) -----------------------------------------------------------------
    def __getitem__(self, index: int) -> dict[str, Any]:
        m, start = (int(x[0]) for x in self.locate([index]))
        mem, k = self.mem, self.k
        mv = mem.movie(mem.movie_ids[m])
        n = min(k, len(mv["shots"]) - start)
        video = torch.zeros(k, mem.dims["video"])
        audio = torch.zeros(k, mem.dims["audio"])
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
    """rows[idx] as float32 (one pass for float32 memory, a second for the float16 conversion)."""
    out = np.take(rows, idx, axis=0)
    return out if out.dtype == np.float32 else out.astype(np.float32)
