"""Pretraining benchmark: throughput, MFU, data wait, rank scaling and ZeRO stages of `lmp-pretrain` here.

Measures in one run, at the default demo config (experiments/configs/pretrain/demo.yaml, the generated
default demo store; `--config` for another):
- matmul peak: best time of an n x n fp32 matmul (the machine's practical FLOP/s ceiling), at the thread
  count training uses and at 1 thread (what each of 2 ranks gets);
- model FLOPs per optimizer step: `torch.utils.flop_counter.FlopCounterMode` over one micro-batch's
  forward + backward, times the gradient-accumulation steps;
- training windows/s and step time (median over steps after the first `--skip`), through `run()` (the
  real DeepSpeed engine, 1 rank, ZeRO-0), MFU = FLOPs per step / step time / matmul peak;
- data-wait fraction: time blocked on the next batch / step time, summed over the measured steps;
- 2 ranks (`torchrun --nproc_per_node 2`, gloo, 1 thread each) with ZeRO 0, 2 and 3: throughput against
  1 rank at 1 thread, and each stage's step time against ZeRO-0;
- CPU share: CPU seconds the run's processes got / (wall seconds x processes): below ~0.9 the run was
  waiting for a core (other jobs on the machine), which bounds every figure above.
Targets (issues 4 and 14): MFU >= 35 % of the measured 1-thread matmul peak on CPU, data wait < 5 %,
2 ranks >= 1.7x one rank, ZeRO-2 <= 1.3x ZeRO-0 (ZeRO-3 <= 1.5x).
`--profile FILE` writes a torch.profiler summary of one training step (what the step time is spent on).

Usage: python benchmarks/pretrain_bench.py [--steps 20] [--zero-steps 15] [--out benchmarks/results/pretrain_bench.txt]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from lmp_model.pretrain import load_pretrain_config, run
from lmp_model.pretrain.data import WindowStream, load_train_data
from lmp_model.pretrain.dist import launch_command

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "experiments" / "configs" / "pretrain" / "demo.yaml"
NO_TRACKING = ["mlflow.enabled=false", "train.ckpt_every=0"]
MATMUL = (
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::_scaled_dot_product",
    "aten::matmul",
)


def matmul_peak(
    n: int = 2048,
    reps: int = 20,
    threads: int | None = None,
    device: str = "cpu",
    dtype=torch.float32,
    clock: str = "wall",
) -> float:
    """Best-of-`reps` FLOP/s of one n x n matmul (fp32 on CPU; bf16 on a GPU). `clock="cpu"`: in this
    thread's CPU time (1 thread; blind to the time other jobs hold the core, so it pairs with CPU-time
    step figures on a loaded machine)."""
    prev = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    now = time.thread_time if clock == "cpu" else time.perf_counter
    for _ in range(3):
        torch.mm(a, b)
    sync()
    best = float("inf")
    for _ in range(reps):
        t = now()
        torch.mm(a, b)
        sync()
        best = min(best, now() - t)
    torch.set_num_threads(prev)
    return 2 * n**3 / best


def first_batch(cfg, device: str = "cpu"):
    """The model's first micro-batch at world size 1 and the train data."""
    data = load_train_data(cfg.data, cfg.train.seed, True, lambda: None, 1, device)
    stream = WindowStream(data.windows, 0, 1, cfg.train.micro_batch, prefetch=0)
    _, batch = next(stream)
    return batch, data


def flops_per_step(cfg, device: str = "cpu", world: int = 1) -> tuple[float, int]:
    """Model FLOPs of one optimizer step (forward + backward of every micro-batch, all ranks)."""
    from lmp_model.recipes import build_recipe

    batch, data = first_batch(cfg, device)
    model = build_recipe(cfg.recipe, cfg.recipe_config, data.dims).to(device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(batch).loss.backward()
    accum = (cfg.train.global_batch or cfg.train.micro_batch * world) // (cfg.train.micro_batch * world)
    return float(counter.get_total_flops()) * accum * world, accum


def op_shares(prof, top: int = 5) -> tuple[float, str]:
    """(matmul share of the torch ops' self time, the `top` other ops with their shares) of a profile."""
    ev = prof.key_averages()
    self_t = {e.key: e.self_cpu_time_total for e in ev}
    total = sum(self_t.values()) or 1.0
    mm = sum(v for k, v in self_t.items() if k.startswith(MATMUL))
    others = sorted(((v, k) for k, v in self_t.items() if not k.startswith(MATMUL)), reverse=True)[:top]
    return mm / total, ", ".join(f"{k.removeprefix('aten::')} {100 * v / total:.0f} %" for v, k in others)


def profile_step(cfg, steps: int = 4) -> str:
    """One micro-batch's forward + backward + AdamW step (this process's threads): its CPU time and MFU,
    and where torch.profiler sees the time (matmuls vs everything else, the top ops)."""
    from torch.profiler import ProfilerActivity, profile

    from lmp_model.recipes import build_recipe

    batch, data = first_batch(cfg)
    model = build_recipe(cfg.recipe, cfg.recipe_config, data.dims)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    counter = FlopCounterMode(display=False)
    with counter:
        model(batch).loss.backward()
    flops = float(counter.get_total_flops())

    def step():
        opt.zero_grad(set_to_none=True)
        model(batch).loss.backward()
        opt.step()

    step()
    c = time.thread_time()
    for _ in range(steps):
        step()
    cpu = (time.thread_time() - c) / steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    mm, others = op_shares(prof)
    peak = matmul_peak(threads=1, clock="cpu")
    mfu = flops / cpu / peak
    lines = [
        f"# profile of one training micro-batch step (forward + backward + AdamW, plain torch), "
        f"torch threads {torch.get_num_threads()}",
        f"micro-batch {cfg.train.micro_batch}, k={cfg.data.k}, d={cfg.model.d}: {flops / 1e9:.2f} GFLOP in "
        f"{1e3 * cpu:.0f} ms of CPU time = {flops / cpu / 1e9:.1f} GFLOP/s = MFU {100 * mfu:.0f} % of the measured "
        f"matmul peak in CPU time ({peak / 1e9:.1f} GFLOP/s, 1 thread)",
        f"torch ops' time (torch.profiler, self time): matmuls (mm/addmm/bmm/baddbmm/sdpa) {100 * mm:.0f} %, "
        f"the rest {100 * (1 - mm):.0f} %, led by {others}",
        f"=> bound: at most {100 * mm:.0f} % of the step is matmul, so even at the matmul peak MFU <= "
        f"{100 * mm:.0f} %; the others (attention softmax, layer norms, elementwise, masks, AdamW) carry no counted "
        "FLOPs",
        "",
        prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=16, max_name_column_width=40),
    ]
    return "\n".join(lines)


def measured(history: list[dict], skip: int) -> dict[str, float]:
    h = history[skip:]
    times = [r["perf/step_time_s"] for r in h]
    wait = sum(r["perf/data_wait_frac"] * r["perf/step_time_s"] for r in h)
    return {"step_s": statistics.median(times), "wait": wait / sum(times), "n": len(h)}


def one_rank(
    config: Path, steps: int, threads: int, overrides: list[str]
) -> tuple[list[dict], float, float, list[float]]:
    """One in-process `run()`: its per-step metrics, wall seconds, CPU share, and the training thread's CPU
    seconds per optimizer step (from one forward of a step to the same forward of the next: blind to the
    time other jobs hold the core; batches are built by the prefetch thread, not counted)."""
    marks: dict[int, float] = {}

    def hook(step: int, out) -> None:
        marks.setdefault(step, time.thread_time())

    with tempfile.TemporaryDirectory() as tmp:
        c = load_pretrain_config(
            config,
            [
                *NO_TRACKING,
                f"train.steps={steps}",
                f"train.out_dir={tmp}",
                f"train.threads={threads}",
                *overrides,
            ],
        )
        prev = torch.get_num_threads()
        t0, c0 = time.perf_counter(), time.process_time()
        res = run(c, loss_hook=hook)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        torch.set_num_threads(prev)
    step_cpu = [marks[s + 1] - marks[s] for s in sorted(marks) if s + 1 in marks]
    return res.history, wall, cpu / wall / threads, step_cpu


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def zero_run(
    stage: int, steps: int, tmp: Path, overrides: list[str], config: Path = DEMO
) -> tuple[list[dict], float]:
    """One 2-rank torchrun (gloo, 1 thread each): its per-step metrics and CPU share of 2 cores."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    env.setdefault("PYTHONPYCACHEPREFIX", str(Path.home() / ".cache" / "lmp-pycache"))
    args = [str(config), f"name=zero{stage}", f"train.zero_stage={stage}", f"train.steps={steps}"]
    args += [f"train.out_dir={tmp}", *NO_TRACKING, "train.threads=1", *overrides]
    c0, t0 = _children_cpu(), time.perf_counter()
    p = subprocess.run(
        launch_command(args, 2), env=env, cwd=REPO, capture_output=True, text=True, timeout=1800
    )
    share = (_children_cpu() - c0) / (time.perf_counter() - t0) / 2
    if p.returncode != 0:
        raise RuntimeError(f"ZeRO-{stage} run failed ({p.returncode}):\n{p.stderr[-4000:]}")
    lines = (tmp / f"zero{stage}" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], share


def _measure_peaks(threads: int, out: dict, log) -> tuple[float, float, float]:
    """The matmul peaks: at `threads`, at 1 thread, and at 1 thread in CPU time."""
    peak, peak1 = matmul_peak(threads=threads), matmul_peak(threads=1)
    peak1_cpu = matmul_peak(threads=1, clock="cpu")
    out.update(peak=peak, peak1=peak1, peak1_cpu=peak1_cpu)
    log(
        f"matmul peak (2048^2 fp32, best of 20): {peak / 1e9:.1f} GFLOP/s at {threads} threads, "
        f"{peak1 / 1e9:.1f} at 1 thread ({threads} x 1-thread = {threads * peak1 / 1e9:.1f}); in CPU time "
        f"{peak1_cpu / 1e9:.1f} at 1 thread"
    )
    return peak, peak1, peak1_cpu


def _measure_one_rank(
    config: Path,
    steps: int,
    skip: int,
    overrides: list[str],
    threads: int,
    n_threads: int,
    peaks: tuple[float, float, float],
    flops: float,
    gb: int,
    out: dict,
    log,
) -> None:
    """One 1-rank training run at `n_threads`: its throughput, MFU and data wait into `out["one_rank"]`."""
    peak, peak1, peak1_cpu = peaks
    hist, wall, share, step_cpu = one_rank(config, steps, n_threads, overrides)
    m = measured(hist, skip)
    ref = peak if n_threads == threads else peak1
    mfu = flops / m["step_s"] / ref
    cpu_s = statistics.median(step_cpu[skip:] or step_cpu)
    mfu_cpu = flops / cpu_s / peak1_cpu if n_threads == 1 else None
    out["one_rank"][n_threads] = {
        **m,
        "wps": gb / m["step_s"],
        "mfu": mfu,
        "cpu_share": share,
        "step_cpu_s": cpu_s,
        "mfu_cpu": mfu_cpu,
    }
    log(
        f"1 rank, {n_threads} thread(s), ZeRO-0: median step {m['step_s'] * 1e3:.0f} ms over {m['n']} steps = "
        f"{gb / m['step_s']:.1f} windows/s; run() wall {wall:.1f} s for {steps} steps (incl. set-up, export); "
        f"CPU share {share:.2f} of {n_threads} core(s)"
    )
    in_cpu = (
        f"; in CPU time {cpu_s * 1e3:.0f} ms per step -> MFU {100 * mfu_cpu:.1f} % (target >= 35 %: "
        f"{'PASS' if mfu_cpu >= 0.35 else 'MISS'})"
        if mfu_cpu is not None
        else ""
    )
    log(
        f"  achieved {flops / m['step_s'] / 1e9:.1f} GFLOP/s -> MFU {100 * mfu:.1f} % of the measured "
        f"{n_threads}-thread matmul peak in wall time{in_cpu}"
    )
    log(
        f"  data wait: {100 * m['wait']:.2f} % of step time (target < 5 %: {'PASS' if m['wait'] < 0.05 else 'MISS'}); "
        f"loss {hist[0]['loss/total']:.3f} at step 1 -> {hist[-1]['loss/total']:.3f} at step {steps}"
    )


def _measure_zero(
    config: Path, zero_steps: int, skip: int, overrides: list[str], gb: int, out: dict, log
) -> None:
    """The 2-rank ZeRO-0/2/3 runs: their step times, rank scaling and stage ratios into `out`."""
    zs, shares = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for stage in (0, 2, 3):
            hist, shares[stage] = zero_run(stage, zero_steps, Path(tmp), overrides, config)
            zs[stage] = measured(hist, skip)
            log(
                f"2 ranks (gloo, 1 thread each), ZeRO-{stage}: median step {zs[stage]['step_s'] * 1e3:.0f} ms "
                f"= {gb / zs[stage]['step_s']:.1f} windows/s, data wait {100 * zs[stage]['wait']:.2f} %, "
                f"CPU share {shares[stage]:.2f} of 2 cores"
            )
    r2, r3 = zs[2]["step_s"] / zs[0]["step_s"], zs[3]["step_s"] / zs[0]["step_s"]
    scale = out["one_rank"][1]["step_s"] / zs[0]["step_s"]
    out.update(zero={s: {**zs[s], "wps": gb / zs[s]["step_s"], "cpu_share": shares[s]} for s in zs})
    out.update(zero2_ratio=r2, zero3_ratio=r3, scaling=scale)
    log(
        f"2 ranks / 1 rank (1 thread each, ZeRO-0) windows/s: {scale:.2f}x (target >= 1.7x: "
        f"{'PASS' if scale >= 1.7 else 'MISS'})"
    )
    log(
        f"ZeRO-2 / ZeRO-0 step time: {r2:.2f}x (target <= 1.3x: {'PASS' if r2 <= 1.3 else 'MISS'}); "
        f"ZeRO-3 / ZeRO-0: {r3:.2f}x (target <= 1.5x: {'PASS' if r3 <= 1.5 else 'MISS'})"
    )


def _write_profile(cfg, threads: int, profile: str, out: dict) -> None:
    """`profile_step` at 1 thread, written to `profile` and kept in `out`."""
    torch.set_num_threads(1)
    text = profile_step(cfg)
    torch.set_num_threads(threads)
    Path(profile).parent.mkdir(parents=True, exist_ok=True)
    Path(profile).write_text(text + "\n")
    out["profile"] = text


def measure(
    config: Path = DEMO,
    steps: int = 20,
    zero_steps: int = 15,
    skip: int = 3,
    overrides: list[str] | None = None,
    threads: int | None = None,
    profile: str | None = None,
    log=print,
) -> dict:
    """Run the benchmark; the figures as a dict (and lines through `log`)."""
    overrides = list(overrides or [])
    cfg = load_pretrain_config(config, [*NO_TRACKING, *overrides])
    threads = threads or torch.get_num_threads()
    out: dict = {"threads": threads}
    log(
        f"config: {config.relative_to(REPO) if config.is_relative_to(REPO) else config} {' '.join(overrides)}  "
        f"(k={cfg.data.k}, d={cfg.model.d}, layers {cfg.model.encoder.layers}+{cfg.model.cross.layers}, "
        f"micro {cfg.train.micro_batch}, global {cfg.train.global_batch}, store '{cfg.data.store or cfg.data.demo}')"
    )
    peaks = _measure_peaks(threads, out, log)
    flops, accum = flops_per_step(cfg)
    out["flops"] = flops
    log(f"model FLOPs per optimizer step (fwd+bwd, {accum} micro-batches): {flops / 1e9:.2f} GFLOP")
    gb = cfg.train.global_batch or cfg.train.micro_batch
    out["one_rank"] = {}
    for n_threads in sorted({threads, 1}, reverse=True):
        _measure_one_rank(config, steps, skip, overrides, threads, n_threads, peaks, flops, gb, out, log)
    _measure_zero(config, zero_steps, skip, overrides, gb, out, log)
    if profile:
        _write_profile(cfg, threads, profile, out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(DEMO), help="pretraining config (default: the demo's)")
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps of the 1-rank training run")
    ap.add_argument("--zero-steps", type=int, default=15, help="optimizer steps of each 2-rank ZeRO run")
    ap.add_argument("--skip", type=int, default=3, help="first steps left out of the timings")
    ap.add_argument("--profile", default=None, help="write a torch.profiler summary of one step here")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "pretrain_bench.txt"))
    ap.add_argument("overrides", nargs="*", help="config overrides for every run, e.g. train.micro_batch=64")
    args = ap.parse_args()

    lines: list[str] = []

    def say(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    load0 = os.getloadavg()
    say(
        f"# pretrain_bench  {time.strftime('%Y-%m-%d %H:%M')}  {platform.machine()} {os.cpu_count()} cpus  "
        f"torch {torch.__version__}  torch threads {torch.get_num_threads()}"
    )
    measure(
        Path(args.config).resolve(),
        args.steps,
        args.zero_steps,
        args.skip,
        args.overrides,
        profile=args.profile,
        log=say,
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
