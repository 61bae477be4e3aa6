"""`WindowGather`: the window batch builder. The store is held as tensors, on any torch device, and a batch
of windows is built by index arithmetic where those tensors live.

This is the one place a window batch (`lmp_data.batch`) is made: `ShotWindows.__getitems__` and
`ShotWindows.__getitem__` call it, and so does everything built on them (pretraining's `WindowStream`,
the evaluation windows of `lmp_bench`). `ShotWindows` chooses the windows (movie, first shot); this
module turns them into tensors.

How a batch of N windows of k shots is built:

1. On the host, O(N) work on small integer tables, no features touched: each window's first global
   shot g0 and real shot count n (last shot gl = g0 + n - 1); its candidate token range [lo, lo + n_cand)
   (lo = tok_lo[g0], the end from tok_hi[gl]) and its exact token count n_tok; the batch's token width T
   (max n_tok, at least 1). They are looked up in per-shot tables precomputed once, so the host knows
   every shape and the device never has to report one back (no device-to-host synchronisation).
2. One small [6, N] int64 tensor goes to the store's device. There, with tensor ops only (no loop over
   windows):
   - video, audio: one gather each, k consecutive rows from g0 per window (padding shots past a
     movie's end are zeroed);
   - language: a token t overlaps the window's time range iff first_shot[t] <= gl and last_shot[t] >= g0
     (the range of its movie's shots the token's span reaches; the same as the time test because shots
     are sorted and disjoint). Where every candidate passes (n_cand == n_tok: short tokens in time order),
     the window's tokens are the T rows from lo, one block; the other ("irregular") windows filter their
     [C] candidates, compact the kept ones by a cumulative sum and a scatter, and gather row by row.
     Padding tokens are zeroed;
   - token -> shot membership: each token's shot range relative to g0 indexes a table of the k-row
     masks of every range (one row gather).
3. The batch tensors are returned on `device`: the store's device, or (store held on the host, model
   on a GPU) built on the host, then copied through pinned memory without blocking.

Memory (`WindowGather.nbytes`, `memory_estimate`): per shot the video and audio rows (memory dtype),
per token its text row plus its shot range (two int32); host-side tables of a few int64 per shot and per
token. The in-memory store is shared, not copied, when it already lives on the store device (CPU).

The host's integer tables, a batch's plan and the memory estimate are in `lmp_data.gather_plan`
(re-exported here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lmp_data.gather_plan import Plan, memory_estimate, token_tables  # noqa: F401  (re-exported)
from lmp_data.store import InMemoryStore


class WindowGather:
    """The window batch builder over one in-memory store (see the module docstring).

    `device`: where batches are returned. `store_device`: where the store's tensors live and the gather
    runs; default `device`. `store_device="cpu"` with a CUDA `device` keeps the store in host memory
    (when it does not fit on the GPU): batches are built on the host into pinned buffers and copied
    asynchronously. `out_dtype`: dtype of the feature tensors of a batch (float32: what `ShotWindows`
    always gave; bfloat16 saves a pass for a bf16 model on a GPU). `copy_store`: hold a copy of the
    store's tables (default: off the CPU only; True on the CPU runs a GPU store's code path there, for
    tests).
    """

    def __init__(
        self,
        mem: InMemoryStore,
        k: int,
        *,
        device: str | torch.device = "cpu",
        store_device: str | torch.device | None = None,
        out_dtype: torch.dtype = torch.float32,
        tables: dict[str, np.ndarray] | None = None,
        copy_store: bool | None = None,
    ) -> None:
        self.mem, self.k = mem, int(k)
        self.device = torch.device(device)
        self.store_device = torch.device(store_device) if store_device is not None else self.device
        if self.store_device.type == "cuda" and self.device != self.store_device:
            raise ValueError(
                f"WindowGather: a store on {self.store_device} returns batches there, not on {self.device}"
            )
        self.out_dtype = out_dtype
        self.pin = self.store_device.type == "cpu" and self.device.type == "cuda"
        tab = tables if tables is not None else token_tables(mem)
        self.tok_lo, self.tok_hi = tab["tok_lo"], tab["tok_hi"]
        so = mem.shot_offsets
        self.shot_offsets = so.astype(np.int64)
        self.n_shots = (so[1:] - so[:-1]).astype(np.int64)
        # per first shot g: the window's last shot, its candidate count and its exact token count.
        # A token t overlaps the window [g, gl] iff first_shot[t] <= gl and last_shot[t] >= g; over the
        # whole store that count is #(first_shot <= gl) - #(last_shot <= g - 1): tokens of earlier movies
        # are in both terms, tokens of later movies in neither.
        movie_of = np.repeat(np.arange(len(self.n_shots)), self.n_shots)
        g = np.arange(mem.n_shots, dtype=np.int64)
        self.win_last = np.minimum(g + self.k - 1, so[1:][movie_of] - 1).astype(np.int64)
        self.win_cand = np.maximum(self.tok_hi[self.win_last] - self.tok_lo, 0)
        f_sorted, l_sorted = np.sort(tab["first_shot"]), np.sort(tab["last_shot"])
        self.win_tokens = np.searchsorted(f_sorted, self.win_last, side="right") - np.searchsorted(
            l_sorted, g - 1, side="right"
        )
        # the tables the gather reads: features in the memory dtype (shared with `mem` on the CPU), a
        # shot range per token. Off the CPU they are a copy anyway, kept in `out_dtype` when that is no
        # wider than the memory dtype (the values a conversion at gather time would give, a pass less).
        sd = self.store_device
        self.n_tokens = int(len(tab["first_shot"]))
        self.last_irregular = 0  # windows of the last batch whose tokens were filtered row by row
        copy = sd.type != "cpu" if copy_store is None else bool(copy_store)
        self._device_path = copy  # a copied store takes the device's code path, also on the CPU (tests)
        self.video = _table(mem.video, sd, out_dtype, copy)
        self.audio = _table(mem.audio, sd, out_dtype, copy)
        self.text = _table(mem.text, sd, out_dtype, copy)
        # [tokens, 2]: (first shot, last shot) per token, int32 while the store's shots fit in it
        ints = np.int32 if mem.n_shots < 2**31 - 1 else np.int64
        self.shot_range = _table(
            np.stack([tab["first_shot"], tab["last_shot"]], 1).astype(ints), sd, None, copy
        )
        self._ar_k = torch.arange(self.k, device=sd)
        # row (f + 1) * (k + 2) + (l + 1): shots f..l of a window (f, l in -1..k); k = 30: 30 kB. The
        # clamped ranges (-1, l) and (f, k) are the same rows as any f < -1 and l > k would give.
        r = torch.arange(-1, self.k + 1, device=sd)
        self._ranges = (
            ((self._ar_k >= r[:, None, None]) & (self._ar_k <= r[None, :, None])).reshape(-1, self.k)
            if (self.k + 2) ** 2 * self.k <= 1 << 22
            else None
        )

    # -- sizes ---------------------------------------------------------------------------------------
    def nbytes(self) -> dict[str, int]:
        """Resident bytes: `store` (the tensors the gather reads, on the store device) and `host_tables`
        (the per-shot and per-token integer tables of the host's plan)."""
        dev = sum(t.numel() * t.element_size() for t in self._device_tensors())
        host = sum(
            a.nbytes for a in (self.tok_lo, self.tok_hi, self.win_last, self.win_cand, self.win_tokens)
        )
        host += self.shot_offsets.nbytes + self.n_shots.nbytes
        return {"store": dev, "host_tables": host}

    def _device_tensors(self) -> list[torch.Tensor]:
        return [self.video, self.audio, self.text, self.shot_range]

    def max_tokens(self, movie_idx: Sequence[int] | np.ndarray | None = None) -> int:
        """Most language tokens a window of these movies (default all) can hold: the candidate count
        (an upper bound of the exact count; what pretraining checks against `model.max_tokens`)."""
        so = self.shot_offsets
        idx = range(len(self.n_shots)) if movie_idx is None else movie_idx
        best = 0
        for m in idx:
            s0, n = int(so[m]), int(self.n_shots[m])
            first = np.arange(s0, s0 + max(n - self.k + 1, 1))
            best = max(best, int(self.win_cand[first].max(initial=0)))
        return best

    # -- one batch -----------------------------------------------------------------------------------
    def plan(self, movie: np.ndarray, start: np.ndarray) -> Plan:
        """Indices and shapes of the windows (movie index, first shot in the movie): host work, O(N)."""
        m = np.asarray(movie, np.int64).reshape(-1)
        s = np.asarray(start, np.int64).reshape(-1)
        if len(m) and ((s < 0).any() or (s >= self.n_shots[m]).any()):
            raise IndexError("WindowGather: a window starts outside its movie")
        g0 = self.shot_offsets[m] + s
        n = np.minimum(self.n_shots[m] - s, self.k)
        n_cand, n_tok = self.win_cand[g0], self.win_tokens[g0]
        T = max(int(n_tok.max(initial=0)), 1)
        return Plan(m, s, g0, n, self.tok_lo[g0], n_cand, n_tok, T)

    def __call__(self, movie: np.ndarray, start: np.ndarray) -> dict[str, Any]:
        """The batch (`lmp_data.batch`) of the windows (movie index, first shot in the movie)."""
        return self.build(self.plan(movie, start))

    def build(self, p: Plan) -> dict[str, Any]:
        """The batch of a plan: index arithmetic and one gather per modality on the store's device."""
        k, sd, N, T = self.k, self.store_device, len(p.g0), p.T
        ix = torch.from_numpy(np.stack([p.g0, p.n, p.lo, p.n_cand, p.n_tok, p.start]))
        if sd.type == "cuda":
            ix = ix.pin_memory().to(sd, non_blocking=True)  # pageable -> device would wait for the stream
        g0, n, lo, n_cand, n_tok, start = ix
        valid = self._ar_k < n[:, None]  # [N, k]
        video = self._shots(self.video, p, g0, valid)
        audio = self._shots(self.audio, p, g0, valid)
        real = (torch.arange(T, device=sd) < n_tok[:, None]).reshape(-1)  # [N*T] real tokens
        src, text = self._text(p, g0, n, lo, n_cand, real)
        token_shot = self._membership(src, real, g0, T)
        out = {
            "video": video.view(N, k, -1),
            "audio": audio.view(N, k, -1),
            "shot_mask": valid,
            "text": text.view(N, T, -1),
            "text_mask": real.view(N, T),
            "token_shot": token_shot.view(N, T, k),
            "start": start,
            "movie": [self.mem.movie_ids[i] for i in p.movie],
        }
        if self.pin:
            out = {
                key: v.pin_memory().to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for key, v in out.items()
            }
        return out

    def _on_store(self, a: np.ndarray) -> torch.Tensor:
        """A small host index array on the store's device (pinned, without blocking, on a GPU)."""
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
        return (
            t.pin_memory().to(self.store_device, non_blocking=True) if self.store_device.type == "cuda" else t
        )

    def _shots(self, table: torch.Tensor, p: Plan, g0: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """[N*k, D] rows of each window's k shots from g0 on; padding shots (past the movie's end) 0."""
        k = self.k
        pad = ~valid.reshape(-1) if bool((p.n < k).any()) else None
        if bool((p.g0 + k <= table.shape[0]).all()):  # k consecutive rows from g0: one block per window
            return self._gather(table, None, pad, g0, k)
        # near the end of the store: row indices (padding reads shot g0, zeroed after)
        rows = (g0[:, None] + torch.where(valid, self._ar_k, 0)).reshape(-1)
        return self._gather(table, rows, pad, None, k)

    def _text(self, p: Plan, g0, n, lo, n_cand, real) -> tuple[torch.Tensor, torch.Tensor]:
        """The store rows of each window's tokens [N*T] (padding: any row, masked) and their text [N*T, D].

        A window whose tokens are its whole candidate range [lo, lo + n_tok) (no candidate fails the
        overlap test; what short tokens in time order give) is one block of T rows from lo, copied in one
        piece. The others (`irregular`; also blocks cut by the end of the store) are filtered row by row
        (`_token_rows`) and overwrite their block. Padding is zeroed last."""
        sd, N, T = self.store_device, len(p.g0), p.T
        n_rows = self.shot_range.shape[0]
        src = (lo[:, None] + torch.arange(T, device=sd)).clamp_(max=n_rows - 1)  # [N, T]
        irregular = (p.n_cand != p.n_tok) | (p.lo + T > n_rows) | (n_rows < T)
        D = self.text.shape[1]
        if not self.text.shape[0]:  # a store without any language token
            return src.reshape(-1), torch.zeros(N * T, D, dtype=self.out_dtype, device=sd)
        text = None if irregular.all() else self._gather(self.text, None, None, lo.clamp(max=n_rows - T), T)
        self.last_irregular = int(irregular.sum())
        if irregular.any():
            bad = np.flatnonzero(irregular)
            b = self._on_store(bad)
            C = max(int(p.n_cand[bad].max()), 1)
            rows = self._token_rows(g0[b], n[b], lo[b], n_cand[b], C, T)  # [nb * T]
            src[b] = rows.view(len(bad), T)
            part = self._gather(self.text, rows, None, None, T)
            if text is None:
                text = part
            else:
                text.view(N, T, D)[b] = part.view(len(bad), T, D)
        if bool((p.n_tok < T).any()):
            _zero(text, ~real, host=not self._device_path)
        return src.reshape(-1), text

    def _token_rows(self, g0, n, lo, n_cand, C: int, T: int) -> torch.Tensor:
        """[N*T] store rows of the tokens of windows (g0, n, lo, n_cand) (padding: token 0): the [N, C]
        candidates filtered by the overlap test, compacted by a cumulative sum and a scatter."""
        sd, N = self.store_device, len(g0)
        ac = torch.arange(C, device=sd)
        in_range = ac < n_cand[:, None]
        cand = torch.where(in_range, lo[:, None] + ac, 0).reshape(-1)
        fl = self.shot_range.index_select(0, cand).view(N, C, 2)
        keep = in_range & (fl[..., 0] <= (g0 + n - 1)[:, None]) & (fl[..., 1] >= g0[:, None])
        pos = keep.cumsum(1) - 1
        win = torch.arange(N, device=sd)[:, None]
        dst = torch.where(keep, win * T + pos, N * T).reshape(-1)  # N*T: a dump slot for the dropped
        return torch.zeros(N * T + 1, dtype=torch.int64, device=sd).scatter_(0, dst, cand)[: N * T]

    def _membership(self, src: torch.Tensor, real: torch.Tensor, g0: torch.Tensor, T: int) -> torch.Tensor:
        """[N*T, k] token -> shot: each token's shot range relative to g0, shifted by one, y = (first - g0 +
        1, last - g0 + 1) clamped to [0, k + 1] (a window's tokens have first <= g0 + k - 1 and last >= g0),
        read from a table of every range's [k] row at y0 * (k + 2) + y1 (padding: the empty range's row),
        or, for a large k, compared with arange(k)."""
        k, N = self.k, len(g0)
        if not self.n_tokens:
            return torch.zeros(N * T, k, dtype=torch.bool, device=real.device)
        y = (self.shot_range.index_select(0, src).view(N, T, 2) - (g0 - 1)[:, None, None]).view(N * T, 2)
        y.clamp_(min=0, max=k + 1)
        if self._ranges is not None:
            row = torch.add(y[:, 1], y[:, 0], alpha=k + 2).masked_fill_(~real, (k + 1) * (k + 2))
            return self._ranges.index_select(0, row)
        return (self._ar_k >= y[:, :1] - 1) & (self._ar_k <= y[:, 1:] - 1) & real[:, None]

    def _gather(
        self, table: torch.Tensor, rows: torch.Tensor | None, zero: torch.Tensor | None, first, length: int
    ) -> torch.Tensor:
        """Rows of `table` in `out_dtype`: `rows` [M] (then M rows), or blocks of `length` consecutive rows
        from each of `first` [N] (N * length rows; one contiguous copy per block); rows where `zero` is
        True set to 0."""
        D = table.shape[1]
        if rows is None and self._device_path:  # a GPU gathers rows as fast as blocks
            rows = (first[:, None] + torch.arange(length, device=table.device)).reshape(-1)
        if rows is None:  # blocks: a strided view whose row g is table[g : g + length]
            n_out = len(first) * length
            view = table.as_strided((table.shape[0] - length + 1, length, D), (D, D, 1)) if D else None
        else:
            n_out = len(rows)
        if not D:
            return torch.zeros(n_out, 0, dtype=self.out_dtype, device=table.device)
        if not self._device_path:
            # numpy-backed output: measured here, torch.empty + index_select(out=) page-faulted on every
            # fresh batch (56 faults and 2x the time per 3 MB) where numpy's allocation did not
            out = _host_empty((n_out, D), table.dtype)
            if rows is None:
                torch.index_select(view, 0, first, out=out.view(len(first), length, D))
            else:
                torch.index_select(table, 0, rows, out=out)
            if out.dtype != self.out_dtype:
                out = _host_empty(out.shape, self.out_dtype).copy_(out)
            if zero is not None:
                _zero(out, zero, host=True)
            return out
        out = table.index_select(0, rows)
        if out.dtype != self.out_dtype:
            out = out.to(self.out_dtype)
        if zero is not None:
            _zero(out, zero, host=False)
        return out


def _zero(out: torch.Tensor, rows: torch.Tensor, host: bool) -> None:
    """out[rows] = 0 for a bool row mask, in place (`host`: the host's faster ways)."""
    if not host:
        out.masked_fill_(rows[:, None], 0)
    elif out.dtype != torch.bfloat16:
        out.numpy()[rows.numpy()] = 0  # numpy's boolean assignment: ~10x torch's index_fill_ here
    else:
        out.index_fill_(0, rows.nonzero().view(-1), 0)  # on the host a nonzero costs no sync


def _host_empty(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised host tensor; numpy-allocated where numpy has the dtype (see `WindowGather._rows`)."""
    if dtype == torch.bfloat16:
        return torch.empty(tuple(shape), dtype=dtype)
    return torch.from_numpy(np.empty(tuple(shape), np.dtype(str(dtype).removeprefix("torch."))))


def _table(a: np.ndarray, device: torch.device, dtype: torch.dtype | None, copy: bool) -> torch.Tensor:
    """A store array as a tensor on `device`: shared with numpy on the CPU unless `copy`; a copy is in
    `dtype` when that is a float type no wider than the array's own."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    if device.type == "cpu" and not copy:
        return t
    if dtype is not None and t.is_floating_point() and dtype.itemsize <= t.element_size():
        return t.to(device=device, dtype=dtype, copy=True)
    return t.to(device=device, copy=True)
