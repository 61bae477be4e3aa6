"""Window loader benchmark: ShotWindows + collate over an in-memory store vs memcpy vs per-window Zarr reads.

Builds a synthetic store of realistic size (default 300 movies x 1000 shots, the demo's dims 128/64/64,
~6 language tokens per shot, as the demo's 2 tokens/s over 1-10 s shots with 60 % speech gives), loads it
into memory, then measures in one run:

- loader: `DataLoader(ShotWindows(train, k), batch_size, collate_fn=collate_windows)` batches
  (vectorised `__getitems__`), windows/s and GB/s of the batch tensors produced;
- memcpy: copying the same number of bytes per batch from a large array into a buffer (the bound);
- zarr: every window read straight from the movie's Zarr arrays (shots/video/audio slices, the
  movie's token spans, the token slice) and assembled like `ShotWindows.__getitem__`.

Targets (issue 2): loader >= 50 % of memcpy bandwidth and >= 10x the per-window Zarr reads.
Usage: python benchmarks/window_loader.py [--movies 300 --shots-per-movie 1000 --k 30 --batch 64]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from lmp_data import FeatureStore, ShotWindows, collate_windows
from lmp_data.windows import overlaps


def synth_movie(rng: np.random.Generator, n_shots: int, tokens_per_shot: float, dims: dict) -> dict:
    b = np.cumsum(rng.uniform(1.0, 10.0, n_shots + 1))
    shots = np.stack([b[:-1], b[1:]], 1)
    n_tok = int(n_shots * tokens_per_shot)
    a = np.sort(rng.uniform(b[0], b[-1] - 0.5, n_tok))
    spans = np.stack([a, np.minimum(a + rng.uniform(0.2, 0.6, n_tok), b[-1])], 1)
    return {
        "shots": shots,
        "video": rng.standard_normal((n_shots, dims["video"]), np.float32),
        "audio": rng.standard_normal((n_shots, dims["audio"]), np.float32),
        "text": rng.standard_normal((n_tok, dims["text"]), np.float32),
        "text_spans": spans,
    }


def batch_bytes(batch: dict) -> int:
    return sum(v.numel() * v.element_size() for v in batch.values() if isinstance(v, torch.Tensor))


def zarr_window(arrs: dict, start: int, k: int) -> dict:
    """One window read straight from a movie's Zarr arrays (what a loader without a memory copy does)."""
    shots = arrs["shots"][start : start + k]
    n = len(shots)
    video = np.zeros((k, arrs["video"].shape[1]), np.float32)
    audio = np.zeros((k, arrs["audio"].shape[1]), np.float32)
    video[:n] = arrs["video"][start : start + n]
    audio[:n] = arrs["audio"][start : start + n]
    spans = arrs["text_spans"][...]
    inside = np.flatnonzero(overlaps(spans[:, 0], spans[:, 1], shots[0, 0], shots[-1, 1]))
    lo, hi = (int(inside[0]), int(inside[-1]) + 1) if len(inside) else (0, 0)
    text = arrs["text"][lo:hi].astype(np.float32)
    member = overlaps(spans[lo:hi, :1], spans[lo:hi, 1:], shots[None, :, 0], shots[None, :, 1])
    return {"video": video, "audio": audio, "text": text, "token_shot": member}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movies", type=int, default=300)
    ap.add_argument("--shots-per-movie", type=int, default=1000)
    ap.add_argument("--tokens-per-shot", type=float, default=6.0)
    ap.add_argument("--dims", type=int, nargs=3, default=[128, 64, 64], metavar=("DV", "DA", "DL"))
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--zarr-windows", type=int, default=300)
    ap.add_argument("--memory-dtype", default="float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "window_loader.txt"),
    )
    args = ap.parse_args()
    torch.set_num_threads(1)  # one loader process; scale with DataLoader workers
    dims = dict(zip(("video", "audio", "text"), args.dims))
    lines = []

    def log(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    log(
        f"# window_loader  {time.strftime('%Y-%m-%d %H:%M')}  {platform.machine()} {os.cpu_count()} cpus  "
        f"torch {torch.__version__}  torch threads 1"
    )
    log(
        f"store: {args.movies} movies x {args.shots_per_movie} shots, {args.tokens_per_shot} tokens/shot, "
        f"dims {args.dims}, float16 on disk; k={args.k}, batch={args.batch}, memory {args.memory_dtype}"
    )
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore.create(
            os.path.join(tmp, "store"), encoders={m: {"name": m, "dim": d} for m, d in dims.items()}
        )
        t = time.perf_counter()
        for i in range(args.movies):
            store.write_movie(
                f"m{i:05d}", **synth_movie(rng, args.shots_per_movie, args.tokens_per_shot, dims)
            )
        log(f"write: {time.perf_counter() - t:.1f} s")

        t = time.perf_counter()
        mem = store.load_all(dtype=args.memory_dtype)
        dt = time.perf_counter() - t
        nbytes = sum(a.nbytes for a in (mem.video, mem.audio, mem.text, mem.shots, mem.text_spans))
        log(
            f"load_all: {mem.n_shots} shots, {int(mem.token_offsets[-1])} tokens, "
            f"{nbytes / 1e9:.2f} GB in memory in {dt:.1f} s"
        )

        ds = ShotWindows(
            mem, args.k, mode="train", seed=args.seed, windows_per_epoch=args.batch * args.batches
        )
        dl = DataLoader(ds, batch_size=args.batch, shuffle=False, num_workers=0, collate_fn=collate_windows)
        for _ in zip(range(5), dl):  # warm-up
            pass
        sizes, t = [], time.perf_counter()
        for b in dl:
            sizes.append(batch_bytes(b))
        t_loader = time.perf_counter() - t
        total = sum(sizes)
        n_win = args.batch * len(sizes)
        loader_gbs, loader_wps = total / t_loader / 1e9, n_win / t_loader
        log(
            f"loader: {n_win} windows in {t_loader:.2f} s = {loader_wps:,.0f} windows/s, "
            f"{loader_gbs:.2f} GB/s ({total / n_win / 1e3:.1f} kB per window of batch tensors)"
        )

        # memcpy of the same bytes: from a large array (not cache resident) into a per-batch buffer
        src = np.frombuffer(mem.text.data, dtype=np.uint8)
        dst = np.empty(max(sizes), np.uint8)
        offs = rng.integers(0, len(src) - max(sizes), len(sizes))
        t = time.perf_counter()
        for s, o in zip(sizes, offs):
            np.copyto(dst[:s], src[o : o + s])
        t_memcpy = time.perf_counter() - t
        memcpy_gbs = total / t_memcpy / 1e9
        t = time.perf_counter()
        for s, o in zip(sizes, offs):
            np.copyto(np.empty(s, np.uint8), src[o : o + s])
        memcpy_alloc_gbs = total / (time.perf_counter() - t) / 1e9
        log(
            f"memcpy: {memcpy_gbs:.2f} GB/s into one buffer; {memcpy_alloc_gbs:.2f} GB/s into a fresh buffer "
            "per batch"
        )

        arrs = {m: store.open_arrays(m) for m in mem.movie_ids}
        m_idx, starts = ds.locate(np.arange(args.zarr_windows))
        t = time.perf_counter()
        zbytes = 0
        for m, s in zip(m_idx, starts):
            w = zarr_window(arrs[mem.movie_ids[m]], int(s), args.k)
            zbytes += sum(v.nbytes for v in w.values())
        t_zarr = time.perf_counter() - t
        zarr_wps = args.zarr_windows / t_zarr
        log(
            f"zarr: {args.zarr_windows} windows in {t_zarr:.2f} s = {zarr_wps:,.0f} windows/s, "
            f"{zbytes / t_zarr / 1e9:.3f} GB/s"
        )

        ratio_mem, ratio_zarr = loader_gbs / memcpy_gbs, loader_wps / zarr_wps
        log(
            f"loader / memcpy bandwidth: {100 * ratio_mem:.0f} %  (target >= 50 %: "
            f"{'PASS' if ratio_mem >= 0.5 else 'MISS'}); vs fresh-buffer memcpy "
            f"{100 * loader_gbs / memcpy_alloc_gbs:.0f} %"
        )
        log(
            f"loader / zarr windows/s: {ratio_zarr:.0f}x  (target >= 10x: {'PASS' if ratio_zarr >= 10 else 'MISS'})"
        )
    log(f"load average (1, 5, 15 min) at the end: {os.getloadavg()} on {os.cpu_count()} cpus")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
