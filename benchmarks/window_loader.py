"""Window loader benchmark: ShotWindows batches (`lmp_data.gather.WindowGather`) vs memcpy vs per-window Zarr reads.

Builds a synthetic store of realistic size (default 300 movies x 1000 shots, the demo's dims 128/64/64,
~6 language tokens per shot, as the demo's 2 tokens/s over 1-10 s shots with 60 % speech gives), loads it
into memory, then measures in one run:

- loader: `DataLoader(ShotWindows(train, k), batch_size, collate_fn=collate_windows)` batches
  (`__getitems__` -> `WindowGather`), windows/s and GB/s of the batch tensors produced;
- memcpy: copying the same number of bytes per batch from a large array into a buffer (the bound);
  loader and memcpy alternate batch by batch and the ratio is the median over batches, so that other
  jobs on a shared machine slow both alike;
- zarr: every window read straight from the movie's Zarr arrays (shots/video/audio slices, the
  movie's token spans, the token slice) and assembled like a window item;
- with `--device cuda`: the store held on the GPU and batches gathered there, against a device-to-device
  copy of the same bytes (and, with `--store-device cpu`, the store in host memory).

Targets (issues 2 and 14): loader >= 50 % of memcpy bandwidth (device-to-device copy on a GPU) and
>= 10x the per-window Zarr reads. `--profile FILE` writes a torch.profiler summary of the loader.
Usage: python benchmarks/window_loader.py [--movies 300 --shots-per-movie 1000 --k 30 --batch 64]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from lmp_data import FeatureStore, ShotWindows, collate_windows
from lmp_data.windows import overlaps

OUT = Path(__file__).resolve().parent / "results" / "window_loader.txt"


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


def write_store(
    path: str | os.PathLike, movies: int, shots: int, tokens_per_shot: float, dims: dict, seed: int
):
    rng = np.random.default_rng(seed)
    store = FeatureStore.create(path, encoders={m: {"name": m, "dim": d} for m, d in dims.items()})
    for i in range(movies):
        store.write_movie(f"m{i:05d}", **synth_movie(rng, shots, tokens_per_shot, dims))
    return store


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _copy_buffers(ds: ShotWindows, first: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The copy's source and (grown on demand) destination: host memory on the CPU, else on `device` (the
    source pinned on the host when the store is there)."""
    # the copy's source: far larger than the caches (and than a batch), touched once
    n_src = max(256 * 2**20, 4 * first)
    host_copy = ds.gather.store_device.type == "cpu" and device.type == "cuda"
    if device.type == "cpu":
        src = torch.ones(n_src, dtype=torch.uint8)
        dst = torch.empty(0, dtype=torch.uint8)
    else:
        loc = "cpu" if host_copy else device
        src = torch.ones(n_src, dtype=torch.uint8, pin_memory=host_copy, device=loc)
        dst = torch.empty(0, dtype=torch.uint8, device=device)
    return src, dst


def _copy_figures(
    t_load: list[float],
    t_copy: list[float],
    c_load: list[float],
    c_copy: list[float],
    sizes: list[int],
    batch: int,
    batches: int,
    device: torch.device,
) -> dict:
    """`loader_vs_copy`'s figures from its per-batch times (wall and CPU) and batch sizes."""
    total = sum(sizes)
    ratios = [c / lo for c, lo in zip(t_copy, t_load)]
    cpu = device.type == "cpu" and min(c_load) > 0 and min(c_copy) > 0
    return {
        # CPU only: the same ratio in this thread's CPU time, blind to the time other jobs hold the core
        "ratio_cpu_time": statistics.median(c / lo for c, lo in zip(c_copy, c_load)) if cpu else None,
        "loader_gbs": total / sum(t_load) / 1e9,
        "loader_wps": batches * batch / sum(t_load),
        "copy_gbs": total / sum(t_copy) / 1e9,
        "ratio": statistics.median(ratios),
        "ratio_total": sum(t_copy) / sum(t_load),
        "ms_per_batch": 1e3 * statistics.median(t_load),
        "copy_ms_per_batch": 1e3 * statistics.median(t_copy),
        "bytes_per_window": total / (batches * batch),
    }


def loader_vs_copy(ds: ShotWindows, batch: int, batches: int, device: torch.device) -> dict:
    """Loader and a copy of the same bytes, batch by batch, alternating: each loader batch is followed by
    a copy of as many bytes, so other jobs on a shared machine slow both alike. The ratio is the median
    over batches of copy time / loader time (robust to a process descheduled mid-batch); the GB/s are
    totals over all batches.

    CPU: a host memcpy from a large array into one buffer. GPU: a device-to-device copy of that many
    bytes (the store on the device) or a pinned host-to-device copy (the store on the host)."""
    dl = DataLoader(ds, batch_size=batch, shuffle=False, num_workers=0, collate_fn=collate_windows)
    it = iter(dl)
    for _ in range(3):  # warm-up
        first = batch_bytes(next(it))
    src, dst = _copy_buffers(ds, first, device)
    rng = np.random.default_rng(0)
    t_load, t_copy, c_load, c_copy, sizes = [], [], [], [], []
    for _ in range(batches):
        _sync(device)
        t, c = time.perf_counter(), time.thread_time()
        try:
            b = next(it)
        except StopIteration:
            it = iter(dl)
            b = next(it)
        _sync(device)
        t_load.append(time.perf_counter() - t)
        c_load.append(time.thread_time() - c)
        s = batch_bytes(b)
        sizes.append(s)
        del b
        if dst.numel() < s:
            dst = torch.empty(2 * s, dtype=torch.uint8, device=dst.device)
        o = int(rng.integers(0, len(src) - s))
        t, c = time.perf_counter(), time.thread_time()
        dst[:s].copy_(src[o : o + s], non_blocking=device.type == "cuda")
        _sync(device)
        t_copy.append(time.perf_counter() - t)
        c_copy.append(time.thread_time() - c)
    return _copy_figures(t_load, t_copy, c_load, c_copy, sizes, batch, batches, device)


def _stage_lines(
    spent: dict[str, list[float]],
    totals: list[float],
    locs: list[float],
    copies: list[float],
    fresh: list[float],
    sizes: list[int],
    n: int,
    batch: int,
    title: str,
) -> list[str]:
    """`profile_loader`'s summary: the mean CPU time per batch of each builder stage against a memcpy."""
    med = {k: 1e3 * sum(v) / n for k, v in spent.items()}  # ms per batch
    total, copy, copy_new = 1e3 * sum(totals) / n, 1e3 * sum(copies) / n, 1e3 * sum(fresh) / n
    shots, text, member = med.get("_shots", 0), med.get("_text", 0), med.get("_membership", 0)
    other = med.get("build", 0) - shots - text - member
    irregular = med.get("_token_rows", 0)
    lines = [
        f"# profile of the window loader ({title}), {n} batches of {batch}",
        f"per batch, this thread's CPU time (mean): {total:.2f} ms = locate {1e3 * sum(locs) / n:.2f} + plan "
        f"{med.get('plan', 0):.2f} + video/audio blocks {shots:.2f} + text {text:.2f} (incl. irregular windows' row "
        f"filter {irregular:.2f} and padding zeroed) + token->shot {member:.2f} + other tensor ops {other:.2f}",
        f"memcpy of the same {statistics.median(sizes) / 1e6:.1f} MB: {copy:.2f} ms (into a fresh buffer "
        f"{copy_new:.2f} ms) -> loader at "
        f"{100 * copy / total:.0f} % of memcpy; the gathers move the bytes (video/audio + text ~ {shots + text:.2f} ms "
        f"= {(shots + text) / copy:.1f}x the memcpy), the rest ({total - shots - text:.2f} ms) is index work and "
        "per-op overhead, fixed per batch (a bigger batch amortises it)",
        "",
    ]
    return lines


def _op_table(ds: ShotWindows, idx: list[list[int]], n: int, lines: list[str]) -> None:
    """torch.profiler's op table over up to 50 of the batches `idx`, appended to `lines`."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ds.gather.device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for i in idx[: min(n, 50)]:
            ds.__getitems__(i)
        _sync(ds.gather.device)
    lines.append("torch.profiler, top ops by self CPU time (wall clock per op):")
    lines.append(
        prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=30)
    )


def profile_loader(ds: ShotWindows, batch: int, n: int, title: str) -> str:
    """Where a batch's time goes: this thread's CPU time per stage of the builder (median over `n`
    batches; CPU time is blind to the time other jobs hold the core), a memcpy of the batch's bytes for
    scale, then torch.profiler's op table (wall time per op: inflated on a loaded machine)."""
    from lmp_data.gather import WindowGather

    stages = ("plan", "build", "_shots", "_text", "_token_rows", "_membership")
    spent: dict[str, list[float]] = {}
    saved = {name: getattr(WindowGather, name) for name in stages}

    def timed(name, fn):
        def wrapper(self, *a, **kw):
            c = time.thread_time()
            try:
                return fn(self, *a, **kw)
            finally:
                spent.setdefault(name, []).append(time.thread_time() - c)

        return wrapper

    idx = [list(range(i * batch, (i + 1) * batch)) for i in range(n)]
    for i in idx[:3]:
        ds.__getitems__(i)
    totals, locs, copies, fresh, sizes = [], [], [], [], []
    src = torch.ones(max(256 * 2**20, 8 * batch_bytes(ds.__getitems__(idx[0]))), dtype=torch.uint8)
    try:
        for name, fn in saved.items():
            setattr(WindowGather, name, timed(name, fn))
        for j, i in enumerate(idx):
            c = time.thread_time()
            m, st = ds.locate(i)
            locs.append(time.thread_time() - c)
            b = ds.gather(m, st)
            totals.append(time.thread_time() - c)
            s = batch_bytes(b)
            sizes.append(s)
            if j == 0:
                dst = torch.empty(2 * s, dtype=torch.uint8)
            o = (j * 7919 * 4096) % (len(src) - s)
            c = time.thread_time()
            dst[:s].copy_(src[o : o + s])
            copies.append(time.thread_time() - c)
            c = time.thread_time()
            torch.from_numpy(np.empty(s, np.uint8)).copy_(src[o : o + s])
            fresh.append(time.thread_time() - c)
    finally:
        for name, fn in saved.items():
            setattr(WindowGather, name, fn)
    lines = _stage_lines(spent, totals, locs, copies, fresh, sizes, n, batch, title)
    _op_table(ds, idx, n, lines)
    return "\n".join(lines)


def _write_and_load(
    tmp: str,
    movies: int,
    shots_per_movie: int,
    tokens_per_shot: float,
    d: dict,
    seed: int,
    memory_dtype: str,
    log,
):
    """The synthetic store written under `tmp` and loaded into memory: (store, in-memory store)."""
    t = time.perf_counter()
    store = write_store(os.path.join(tmp, "store"), movies, shots_per_movie, tokens_per_shot, d, seed)
    log(f"write: {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    mem = store.load_all(dtype=memory_dtype)
    dt = time.perf_counter() - t
    nbytes = sum(a.nbytes for a in (mem.video, mem.audio, mem.text, mem.shots, mem.text_spans))
    log(
        f"load_all: {mem.n_shots} shots, {int(mem.token_offsets[-1])} tokens, "
        f"{nbytes / 1e9:.2f} GB in memory in {dt:.1f} s"
    )
    return store, mem


def _measure_loader(ds: ShotWindows, batch: int, batches: int, dev: torch.device, out: dict, log) -> dict:
    """`loader_vs_copy`'s figures, into `out` and logged; the figures."""
    r = loader_vs_copy(ds, batch, batches, dev)
    out.update(r)
    what = (
        "memcpy"
        if dev.type == "cpu"
        else (
            "device-to-device copy" if ds.gather.store_device.type == "cuda" else "pinned host-to-device copy"
        )
    )
    out["copy_kind"] = what
    log(
        f"loader: {r['loader_wps']:,.0f} windows/s, {r['loader_gbs']:.2f} GB/s ({r['bytes_per_window'] / 1e3:.1f} kB "
        f"per window of batch tensors); median batch {r['ms_per_batch']:.2f} ms"
    )
    log(f"{what}: {r['copy_gbs']:.2f} GB/s; median {r['copy_ms_per_batch']:.2f} ms for a batch's bytes")
    cpu_t = f"; in CPU time {100 * r['ratio_cpu_time']:.0f} %" if r["ratio_cpu_time"] else ""
    log(
        f"loader / {what} bandwidth: {100 * r['ratio']:.0f} % (median over batches; totals "
        f"{100 * r['ratio_total']:.0f} %{cpu_t})  (target >= 50 %: {'PASS' if r['ratio'] >= 0.5 else 'MISS'})"
    )
    return r


def _measure_zarr(store, mem, ds: ShotWindows, zarr_windows: int, k: int, r: dict, out: dict, log) -> None:
    """`zarr_windows` windows read straight from Zarr (`zarr_window`), against the loader's windows/s `r`."""
    arrs = {m: store.open_arrays(m) for m in mem.movie_ids}
    m_idx, starts = ds.locate(np.arange(zarr_windows))
    t = time.perf_counter()
    zbytes = 0
    for m, s in zip(m_idx, starts):
        w = zarr_window(arrs[mem.movie_ids[m]], int(s), k)
        zbytes += sum(v.nbytes for v in w.values())
    t_zarr = time.perf_counter() - t
    out["zarr_wps"] = zarr_windows / t_zarr
    out["vs_zarr"] = r["loader_wps"] / out["zarr_wps"]
    log(
        f"zarr: {zarr_windows} windows in {t_zarr:.2f} s = {out['zarr_wps']:,.0f} windows/s; loader / zarr "
        f"windows/s: {out['vs_zarr']:.0f}x  (target >= 10x: {'PASS' if out['vs_zarr'] >= 10 else 'MISS'})"
    )


def measure(
    *,
    movies: int = 300,
    shots_per_movie: int = 1000,
    tokens_per_shot: float = 6.0,
    dims: tuple[int, int, int] = (128, 64, 64),
    k: int = 30,
    batch: int = 64,
    batches: int = 300,
    zarr_windows: int = 300,
    memory_dtype: str = "float32",
    seed: int = 0,
    device: str = "cpu",
    store_device: str | None = None,
    profile: str | None = None,
    log=print,
) -> dict:
    """Run the benchmark; the figures as a dict (and lines through `log`)."""
    torch.set_num_threads(1)  # one loader process; scale with DataLoader workers
    dev = torch.device(device)
    d = dict(zip(("video", "audio", "text"), dims))
    out: dict = {"device": str(dev)}
    with tempfile.TemporaryDirectory() as tmp:
        store, mem = _write_and_load(
            tmp, movies, shots_per_movie, tokens_per_shot, d, seed, memory_dtype, log
        )
        ds = ShotWindows(
            mem, k, mode="train", seed=seed, windows_per_epoch=batch * (batches + 10), device=dev,
            store_device=store_device,
        )  # fmt: skip
        nb = ds.gather.nbytes()
        out["store_bytes"], out["bytes_per_shot"] = nb["store"], nb["store"] / mem.n_shots
        r = _measure_loader(ds, batch, batches, dev, out, log)
        if zarr_windows:
            _measure_zarr(store, mem, ds, zarr_windows, k, r, out, log)
        if profile:
            text = profile_loader(
                ds, batch, min(batches, 100), f"{movies}x{shots_per_movie} shots, dims {dims}, k={k}, {dev}"
            )
            Path(profile).parent.mkdir(parents=True, exist_ok=True)
            Path(profile).write_text(text + "\n")
            out["profile"] = text
    return out


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
    ap.add_argument("--device", default="cpu", help="where batches are built and returned (cpu, cuda)")
    ap.add_argument("--store-device", default=None, help="where the store lives (default: --device)")
    ap.add_argument("--profile", default=None, help="write a torch.profiler summary of the loader here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    lines: list[str] = []

    def log(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    log(
        f"# window_loader  {time.strftime('%Y-%m-%d %H:%M')}  {platform.machine()} {os.cpu_count()} cpus  "
        f"torch {torch.__version__}  torch threads 1  load average {os.getloadavg()[0]:.1f}"
    )
    log(
        f"store: {args.movies} movies x {args.shots_per_movie} shots, {args.tokens_per_shot} tokens/shot, "
        f"dims {args.dims}, float16 on disk; k={args.k}, batch={args.batch}, memory {args.memory_dtype}, "
        f"device {args.device}"
    )
    measure(
        movies=args.movies,
        shots_per_movie=args.shots_per_movie,
        tokens_per_shot=args.tokens_per_shot,
        dims=tuple(args.dims),
        k=args.k,
        batch=args.batch,
        batches=args.batches,
        zarr_windows=args.zarr_windows,
        memory_dtype=args.memory_dtype,
        seed=args.seed,
        device=args.device,
        store_device=args.store_device,
        profile=args.profile,
        log=log,
    )
    log(f"load average (1, 5, 15 min) at the end: {os.getloadavg()} on {os.cpu_count()} cpus")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
