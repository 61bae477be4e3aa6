"""Pretraining benchmark: throughput, MFU, data wait and ZeRO stages of `lmp-pretrain` on this machine.

Measures in one run, at the default demo config (experiments/configs/pretrain/demo.yaml, the generated
default demo store):
- matmul peak: best time of an n x n fp32 matmul (the machine's practical FLOP/s ceiling), at the thread
  count training uses (and at 1 thread, what each of 2 ranks gets);
- model FLOPs per optimizer step: `torch.utils.flop_counter.FlopCounterMode` over one micro-batch's
  forward + backward, times the gradient-accumulation steps;
- training windows/s and step time (median over steps after the first `--skip`), through `run()` (the
  real DeepSpeed engine, 1 rank, ZeRO-0), MFU = FLOPs per step / step time / matmul peak;
- data-wait fraction: time blocked on the next batch / step time, summed over the measured steps;
- step time at 2 ranks (`torchrun --nproc_per_node 2`, gloo, 1 thread each) with ZeRO 0, 2 and 3.
Targets (issue 4): MFU >= 35 % of the measured matmul peak on CPU, data wait < 5 %, ZeRO-2 <= 1.3x ZeRO-0.

Usage: python benchmarks/pretrain_bench.py [--steps 25] [--zero-steps 15] [--out benchmarks/results/pretrain_bench.txt]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from lmp_model.model import LMP
from lmp_model.pretrain import load_pretrain_config, run
from lmp_model.pretrain.data import WindowStream, load_train_data
from lmp_model.pretrain.dist import free_port

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "experiments" / "configs" / "pretrain" / "demo.yaml"


def matmul_peak(n: int = 2048, reps: int = 20, threads: int | None = None) -> float:
    """Best-of-`reps` FLOP/s of one n x n fp32 matmul."""
    prev = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    torch.set_num_threads(prev)
    return 2 * n**3 / best


def flops_per_step(cfg) -> tuple[float, int]:
    """Model FLOPs of one optimizer step (forward + backward of every micro-batch) at world size 1."""
    data = load_train_data(cfg.data, cfg.train.seed, True, lambda: None)
    stream = WindowStream(data.windows, 0, 1, cfg.train.micro_batch, prefetch=0)
    _, batch = next(stream)
    model = LMP(cfg.model, data.dims)
    counter = FlopCounterMode(display=False)
    with counter:
        model(batch).loss.backward()
    accum = (cfg.train.global_batch or cfg.train.micro_batch) // cfg.train.micro_batch
    return float(counter.get_total_flops()) * accum, accum


def measured(history: list[dict], skip: int) -> dict[str, float]:
    h = history[skip:]
    times = [r["perf/step_time_s"] for r in h]
    wait = sum(r["perf/data_wait_frac"] * r["perf/step_time_s"] for r in h)
    return {"step_s": statistics.median(times), "wait": wait / sum(times), "n": len(h)}


def zero_run(stage: int, steps: int, tmp: Path, overrides: list[str]) -> list[dict]:
    """One 2-rank torchrun of the demo config; its per-step metrics."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "lmp_model.pretrain.cli"]
    cmd += [str(DEMO), f"name=zero{stage}", f"train.zero_stage={stage}", f"train.steps={steps}"]
    cmd += [f"train.out_dir={tmp}", "mlflow.enabled=false", "train.ckpt_every=0", *overrides]
    p = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"ZeRO-{stage} run failed ({p.returncode}):\n{p.stderr[-4000:]}")
    lines = (tmp / f"zero{stage}" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps of the 1-rank training run")
    ap.add_argument("--zero-steps", type=int, default=15, help="optimizer steps of each 2-rank ZeRO run")
    ap.add_argument("--skip", type=int, default=3, help="first steps left out of the timings")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "pretrain_bench.txt"))
    ap.add_argument("overrides", nargs="*", help="config overrides for every run, e.g. train.micro_batch=64")
    args = ap.parse_args()

    lines: list[str] = []

    def say(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    load0 = os.getloadavg()
    cfg = load_pretrain_config(DEMO, ["mlflow.enabled=false", "train.ckpt_every=0", *args.overrides])
    threads = torch.get_num_threads()
    say(
        f"# pretrain_bench  {time.strftime('%Y-%m-%d %H:%M')}  {platform.machine()} {os.cpu_count()} cpus  "
        f"torch {torch.__version__}  torch threads {threads}"
    )
    say(
        f"config: {DEMO.relative_to(REPO)} {' '.join(args.overrides)}  (k={cfg.data.k}, d={cfg.model.d}, "
        f"layers {cfg.model.encoder.layers}+{cfg.model.cross.layers}, micro {cfg.train.micro_batch}, "
        f"global {cfg.train.global_batch}, demo store '{cfg.data.demo}')"
    )
    peak = matmul_peak(threads=threads)
    peak1 = matmul_peak(threads=1)
    say(
        f"matmul peak (2048^2 fp32, best of 20): {peak / 1e9:.1f} GFLOP/s at {threads} threads, "
        f"{peak1 / 1e9:.1f} at 1 thread ({threads} x 1-thread = {threads * peak1 / 1e9:.1f})"
    )
    ideal = max(peak, threads * peak1)

    flops, accum = flops_per_step(cfg)
    say(f"model FLOPs per optimizer step (fwd+bwd, {accum} micro-batches): {flops / 1e9:.2f} GFLOP")

    gb = cfg.train.global_batch or cfg.train.micro_batch
    for n_threads in sorted({threads, 1}, reverse=True):
        with tempfile.TemporaryDirectory() as tmp:
            c = load_pretrain_config(
                DEMO,
                [
                    "mlflow.enabled=false",
                    "train.ckpt_every=0",
                    f"train.steps={args.steps}",
                    f"train.out_dir={tmp}",
                ]
                + [f"train.threads={n_threads}", *args.overrides],
            )
            t0 = time.perf_counter()
            res = run(c)
            wall = time.perf_counter() - t0
        torch.set_num_threads(threads)
        m = measured(res.history, args.skip)
        ref = peak if n_threads == threads else peak1
        mfu = flops / m["step_s"] / ref
        say(
            f"1 rank, {n_threads} thread(s), ZeRO-0: median step {m['step_s'] * 1e3:.0f} ms over {m['n']} steps = "
            f"{gb / m['step_s']:.1f} windows/s; run() wall {wall:.1f} s for {args.steps} steps (incl. set-up, export)"
        )
        extra = (
            f"; {100 * flops / m['step_s'] / ideal:.1f} % of {threads} x the 1-thread peak"
            if n_threads > 1
            else ""
        )
        say(
            f"  achieved {flops / m['step_s'] / 1e9:.1f} GFLOP/s -> MFU {100 * mfu:.1f} % of the measured "
            f"{n_threads}-thread matmul peak (target >= 35 %: {'PASS' if mfu >= 0.35 else 'MISS'}){extra}"
        )
        say(
            f"  data wait: {100 * m['wait']:.2f} % of step time (target < 5 %: {'PASS' if m['wait'] < 0.05 else 'MISS'}); "
            f"loss {res.history[0]['loss/total']:.3f} at step 1 -> {res.history[-1]['loss/total']:.3f} at step {args.steps}"
        )

    with tempfile.TemporaryDirectory() as tmp:
        zs = {}
        for stage in (0, 2, 3):
            hist = zero_run(stage, args.zero_steps, Path(tmp), args.overrides)
            zs[stage] = measured(hist, args.skip)
            say(
                f"2 ranks (gloo, 1 thread each), ZeRO-{stage}: median step {zs[stage]['step_s'] * 1e3:.0f} ms "
                f"= {gb / zs[stage]['step_s']:.1f} windows/s, data wait {100 * zs[stage]['wait']:.2f} %"
            )
    r2, r3 = zs[2]["step_s"] / zs[0]["step_s"], zs[3]["step_s"] / zs[0]["step_s"]
    say(
        f"ZeRO-2 / ZeRO-0 step time: {r2:.2f}x (target <= 1.3x: {'PASS' if r2 <= 1.3 else 'MISS'}); ZeRO-3 / ZeRO-0: {r3:.2f}x"
    )
    load1 = os.getloadavg()
    say(
        f"load average at start {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f}, at end {load1[0]:.1f}/{load1[1]:.1f}/"
        f"{load1[2]:.1f} on {os.cpu_count()} cpus (other jobs on the machine slow every figure above)"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
