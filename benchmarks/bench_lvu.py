"""lmp-bench speed: the LVU probes (9 tasks x seeds) and clip encoding, on this machine.

    .venv/bin/python benchmarks/bench_lvu.py [--lvu /work/shared/data/lvu_1.0] [--demo /tmp/bench_demo]

1. `probe_lvu` on the real LVU 1.0 label files (all 9 tasks, 3 seeds) with random features of width
   384 (= 3 x d=128, the demo model's v_ctx+a_ctx+v_cross_a): the probe cost of one sweep trial.
2. `encode_clips` of the demo clip store with the demo model config (random weights), if a demo exists.
Target (issue 7): a sweep trial's probe well under a minute on 2 shared cores.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl

from lmp_bench.lvu import TASKS, load_task
from lmp_bench.lvu_probe import probe_lvu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lvu", default="/work/shared/data/lvu_1.0")
    ap.add_argument("--demo", default="/tmp/bench_demo")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    ids = sorted(set(pl.concat([load_task(args.lvu, t).select("clip_id") for t in TASKS])["clip_id"]))
    x = np.random.default_rng(0).normal(size=(len(ids), 384)).astype(np.float32)
    probe_lvu(ids[:400], x[:400], args.lvu, tasks="relationship", seeds=1)  # warm-up (lazy imports)
    t = time.perf_counter()
    res = probe_lvu(ids, x, args.lvu, seeds=args.seeds)
    dt = time.perf_counter() - t
    n = res.runs.height
    print(f"probe_lvu: {len(ids)} LVU clips, D=384, 9 tasks x {args.seeds} seeds = {n} probes: "
          f"{dt:.1f} s ({dt / n:.2f} s per probe)")  # fmt: skip
    demo = Path(args.demo)
    if (demo / "eval.zarr").exists():
        import torch

        from lmp_bench.features import encode_clips
        from lmp_data import FeatureStore
        from lmp_model.config import load_model_config
        from lmp_model.model import LMP

        store = FeatureStore.open(demo / "eval.zarr")
        torch.manual_seed(0)
        model = LMP(load_model_config("experiments/configs/model/demo.yaml"), store.dims)
        mv = store.movies()
        t = time.perf_counter()
        f = encode_clips(model, store, k=30, batch_size=64)
        dt = time.perf_counter() - t
        print(f"encode_clips: {mv.height} clips, {int(mv['n_shots'].sum())} shots, k=30, demo model d=128: "
              f"{dt:.1f} s ({len(f.clip_ids)} clips encoded)")  # fmt: skip


if __name__ == "__main__":
    main()
