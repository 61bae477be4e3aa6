"""Ingest speed with the offline encoders: real-time factor and the share of decoding vs encoding.

Usage: .venv/bin/python benchmarks/ingest_bench.py [--minutes 2] [--out benchmarks/results/ingest_bench.txt]

Generates a movie (640x360, 24 fps, ~3 s shots, tone+noise soundtrack, subtitles), then times
`lmp-data ingest` on it (encoders loaded beforehand and excluded, as in a long ingest where loading is
amortised). Real-time factor = seconds of movie / seconds of wall clock. Decode time (shot detection, audio,
frame sampling; in the decoder thread) and encode time (the three encoders; main thread) overlap, so their
sum can exceed the wall time.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lmp_data.ingest.encoders import build, load_config
from lmp_data.ingest.media import write_movie
from lmp_data.ingest.pipeline import IngestConfig, ingest


def measure(minutes: float = 2.0, log=print) -> dict:
    """Generate a movie of about `minutes`, ingest it; the figures (real-time factor, decode/encode)."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        movies = Path(tmp) / "movies"
        lengths, total = [], 0.0
        while total < minutes * 60:
            lengths.append(float(np.clip(rng.lognormal(np.log(3.0), 0.5), 0.6, 12.0)))
            total += lengths[-1]
        t0 = time.perf_counter()
        write_movie(movies / "bench.mp4", lengths, seed=0, size=(640, 360), fps=24, speech=False)
        gen_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        enc = build(load_config("offline"))
        load_s = time.perf_counter() - t0
        summary = ingest(movies, Path(tmp) / "store", IngestConfig(progress=False), encoders=enc)
        r = summary.results[0]
        assert r.status == "done", summary.format()
        wall = summary.wall_seconds
        dec, encd, wr = r.timings["decode"], r.timings["encode"], r.timings["write"]
        load = os.getloadavg()
        for line in [
            "ingest_bench (offline encoders: EfficientNet-Lite0 x3 frames/shot, eGeMAPS+log-mel, MiniLM)",
            f"machine: {platform.machine()}, {os.cpu_count()} cpus, torch threads {torch.get_num_threads()}, "
            f"cuda {torch.cuda.is_available()}, load average at end {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}",
            f"movie: {r.duration:.1f} s, 640x360 @ 24 fps, {len(lengths)} generated shots "
            f"(generation {gen_s:.1f} s, encoder loading {load_s:.1f} s, not counted)",
            f"wall: {wall:.1f} s -> real-time factor {r.duration / wall:.2f}x (target >= 2x)",
            f"decode (shots+audio+frames, decoder thread): {dec:.1f} s = {100 * dec / (dec + encd):.0f}% "
            f"of decode+encode",
            f"encode (video+audio+text encoders, main thread): {encd:.1f} s = "
            f"{100 * encd / (dec + encd):.0f}% of decode+encode",
            f"write: {wr:.2f} s; overlap saved {max(0.0, dec + encd + wr - wall):.1f} s",
        ]:
            log(line)
        return {"duration": r.duration, "wall": wall, "rtf": r.duration / wall, "decode": dec, "encode": encd}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    lines: list[str] = []
    measure(args.minutes, log=lines.append)
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
