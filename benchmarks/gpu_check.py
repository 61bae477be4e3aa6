"""The GPU path in one go (run through benchmarks/gpu_check.sh): under 10 minutes on a GPU machine.

1. A synthetic feature store at the paper's dims (video 2048, audio 896, language 768; ~100 tokens per
   window of k = 30; float16).
2. The device-side loader (`lmp_data.gather.WindowGather`, store on the GPU): its batch equals the host's
   element for element; windows/s and GB/s against a device-to-device copy of the same bytes, at
   micro-batch 64 and at 1024; the store held in host memory instead (pinned copies); peak GPU memory
   against `memory_estimate`.
3. The GPU's measured bf16 matmul peak (8192^3, best of 20).
4. bf16 pretraining at the paper's model size (experiments/configs/pretrain/paper.yaml: d=512, 3+3
   layers, micro-batch 64, global 1024, ZeRO-2) with NCCL on every visible GPU (torchrun): step time,
   windows/s, data wait, MFU = model FLOPs per step (FlopCounterMode) / step time / (GPUs x bf16 peak).
5. Resume after kill: the same run, SIGKILLed after its checkpoint, resumed with --resume; the steps
   after the resume must match the uninterrupted run's losses (exactly on CPU; within 2 % in bf16 on a
   GPU, where kernels are not bitwise deterministic).
Prints one summary (and writes it to --out, default benchmarks/results/gpu_check.txt).

`--dry-run`: the same steps on the CPU at a tiny size (tiny model, small dims, 2 ranks over gloo, fp32),
so the script stays tested where there is no GPU (tests/bench/test_benchmarks.py runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import pretrain_bench  # noqa: E402
import window_loader  # noqa: E402

PAPER = REPO / "experiments" / "configs" / "pretrain" / "paper.yaml"
TINY = REPO / "experiments" / "configs" / "pretrain" / "tiny.yaml"

SIZES = {
    "gpu": {
        "dims": (2048, 896, 768),
        "movies": 40,
        "shots": 500,
        "tokens_per_shot": 100 / 30,
        "k": 30,
        "config": PAPER,
        "overrides": ["data.windows_per_epoch=40960", "train.log_every=1", "train.bf16=true"],
        "steps": 16,
        "ckpt_every": 6,
        "batches": (64, 1024),
        "loader_batches": 40,
    },
    "dry": {
        "dims": (64, 32, 32),
        "movies": 12,
        "shots": 80,
        "tokens_per_shot": 3.0,
        "k": 8,
        "config": TINY,
        "overrides": [
            "data.windows_per_epoch=256",
            "train.log_every=1",
            "train.device=cpu",
            "train.threads=1",
        ],
        "steps": 9,
        "ckpt_every": 3,
        "batches": (16, 64),
        "loader_batches": 20,
    },
}


def _env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    env.setdefault("PYTHONPYCACHEPREFIX", str(Path.home() / ".cache" / "lmp-pycache"))
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _descendants(pid: int) -> list[int]:
    """Pids below `pid`: torchrun starts its ranks in their own sessions, so a process group misses them."""
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _metrics(run_dir: Path) -> list[dict]:
    f = run_dir / "metrics.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []


class Check:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.failed = False

    def say(self, s: str) -> None:
        print(s, flush=True)
        self.lines.append(s)

    def result(self, name: str, text: str, ok: bool | None) -> None:
        status = "INFO" if ok is None else ("PASS" if ok else "MISS")
        self.say(f"{status:4}  {name:<22} {text}")


def check_loader(c: Check, sz: dict, store_path: Path, dev: torch.device) -> None:
    from lmp_data import FeatureStore, ShotWindows
    from lmp_data.gather import memory_estimate

    mem = FeatureStore.open(store_path).load_all(dtype="float16")
    k, n_win = sz["k"], 4096
    host = ShotWindows(mem, k, mode="train", seed=0, windows_per_epoch=n_win)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        base = torch.cuda.memory_allocated(dev)
    on_dev = ShotWindows(mem, k, mode="train", seed=0, windows_per_epoch=n_win, device=dev)
    nb = on_dev.gather.nbytes()
    big = max(sz["batches"])
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        on_dev.__getitems__(list(range(big)))
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev) - base
        tps = int(mem.token_offsets[-1]) / mem.n_shots
        est = memory_estimate(mem.n_shots, tps, mem.dims, feature_bytes=2, k=k, batch=big, held=0)
        c.result(
            "loader memory",
            f"store {nb['store'] / 1e9:.2f} GB on the GPU ({nb['store'] / mem.n_shots:,.0f} B per shot); peak "
            f"building one batch of {big}: {peak / 1e9:.2f} GB measured vs {est['peak'] / 1e9:.2f} GB computed "
            "(lmp_data.gather.memory_estimate)",
            None,
        )
    idx = list(range(256))
    a, b = on_dev.__getitems__(idx), host.__getitems__(idx)
    same = all(
        (torch.equal(a[key].cpu(), b[key]) if isinstance(b[key], torch.Tensor) else a[key] == b[key])
        for key in b
    )
    c.result("batch device == host", f"256 windows, every key element for element on {dev}", same)
    c.failed |= not same
    kind = "memcpy" if dev.type == "cpu" else "device-to-device copy"
    for batch in sz["batches"]:
        r = window_loader.loader_vs_copy(on_dev, batch, sz["loader_batches"], dev)
        c.result(
            f"loader b={batch}",
            f"{r['loader_wps']:,.0f} windows/s = {r['loader_gbs']:.2f} GB/s, {100 * r['ratio']:.0f} % of a {kind} "
            f"({r['copy_gbs']:.2f} GB/s; target >= 50 %); {r['bytes_per_window'] / 1e3:.0f} kB per window",
            r["ratio"] >= 0.5,
        )
    del on_dev
    if dev.type == "cuda":
        ds = ShotWindows(
            mem, k, mode="train", seed=0, windows_per_epoch=n_win, device=dev, store_device="cpu"
        )
        r = window_loader.loader_vs_copy(ds, big, 10, dev)
        c.result(
            "loader, store on host",
            f"{r['loader_wps']:,.0f} windows/s = {r['loader_gbs']:.1f} GB/s, {100 * r['ratio']:.0f} % of a pinned "
            f"host-to-device copy ({r['copy_gbs']:.1f} GB/s) at batch {big}",
            None,
        )


def pretrain(
    sz: dict, tmp: Path, store: Path, name: str, nproc: int, resume: bool = False, kill_after: int = 0
):
    """One torchrun of the config; (summary dict or None if killed, seen steps)."""
    from lmp_model.pretrain.dist import launch_command

    args = [str(sz["config"]), f"data.store={store}", f"name={name}", f"train.out_dir={tmp / 'runs'}"]
    args += ["mlflow.enabled=false", f"train.steps={sz['steps']}", f"train.ckpt_every={sz['ckpt_every']}"]
    args += [f"data.k={sz['k']}", *sz["overrides"]] + (["--resume"] if resume else [])
    cmd = launch_command(args, nproc)
    if not kill_after:
        p = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            errors = [x for x in p.stderr.splitlines() if "Error" in x and "ChildFailedError" not in x]
            raise RuntimeError(f"pretraining {name} failed ({p.returncode}): {' | '.join(errors[-3:])}")
        line = [x for x in p.stdout.splitlines() if x.startswith('{"run_dir"')][-1]
        return json.loads(line), None
    run_dir = tmp / "runs" / name
    proc = subprocess.Popen(
        cmd,
        env=_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline, seen = time.time() + 400, 0
    while time.time() < deadline and proc.poll() is None:
        seen = len(_metrics(run_dir))
        if seen >= kill_after:
            break
        time.sleep(0.02)
    for pid in [proc.pid, *_descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    return None, seen


def _check_peak(c: Check, dev: torch.device) -> float:
    """The measured matmul peak: bf16 on the GPU, fp32 at 1 thread on the CPU (dry run)."""
    if dev.type == "cuda":
        peak = pretrain_bench.matmul_peak(8192, 20, device="cuda", dtype=torch.bfloat16)
        c.result(
            "bf16 matmul peak",
            f"{peak / 1e12:.1f} TFLOP/s (8192^3, best of 20) on {torch.cuda.get_device_name(0)}",
            None,
        )
    else:
        peak = pretrain_bench.matmul_peak(threads=1)
        c.result("fp32 matmul peak", f"{peak / 1e9:.1f} GFLOP/s (2048^3, 1 thread; dry run)", None)
    return peak


def _check_resume(
    c: Check, sz: dict, store: Path, dev: torch.device, nproc: int, tmp: Path, hist: list[dict]
) -> None:
    """Kill a run after its checkpoint, resume it: its losses after the resume against `hist`, the
    uninterrupted run's."""
    # resume after kill: SIGKILL once the checkpoint after ckpt_every steps is written, then --resume
    _, seen = pretrain(sz, tmp, store, "killed", nproc, kill_after=sz["ckpt_every"] + 2)
    out, _ = pretrain(sz, tmp, store, "killed", nproc, resume=True)
    res = _metrics(Path(out["run_dir"]))
    cont = [h["step"] for h in res] == list(range(1, sz["steps"] + 1))
    frm = out.get("resumed_from")
    after = [(a, b) for a, b in zip(res, hist) if frm is not None and a["step"] > frm]
    diff = max(
        (abs(a["loss/total"] - b["loss/total"]) / abs(b["loss/total"]) for a, b in after),
        default=float("nan"),
    )
    tol = 0.02 if dev.type == "cuda" else 1e-6
    ok = bool(frm) and cont and seen is not None and frm <= seen < sz["steps"] and diff <= tol
    c.result(
        "resume after kill",
        f"SIGKILL at step {seen}, resumed from checkpoint step {frm}, steps 1..{sz['steps']} logged once each: "
        f"{cont}; losses after the resume vs the uninterrupted run: max relative difference {diff:.2e} "
        f"(<= {tol:g})",
        ok,
    )
    c.failed |= not ok


def check_pretrain(c: Check, sz: dict, store: Path, dev: torch.device, nproc: int, tmp: Path) -> None:
    from lmp_model.pretrain import load_pretrain_config

    base = [f"data.store={store}", f"data.k={sz['k']}", *sz["overrides"], "mlflow.enabled=false"]
    cfg = load_pretrain_config(sz["config"], base)
    peak = _check_peak(c, dev)
    flops, accum = pretrain_bench.flops_per_step(cfg, str(dev), nproc)
    c.result(
        "model",
        f"d={cfg.model.d}, layers {cfg.model.encoder.layers}+{cfg.model.cross.layers}, k={sz['k']}, micro "
        f"{cfg.train.micro_batch} x accum {accum} x {nproc} ranks = {cfg.train.global_batch} windows/step, "
        f"{flops / 1e9:.1f} GFLOP per step",
        None,
    )
    t = time.perf_counter()
    ref, _ = pretrain(sz, tmp, store, "ref", nproc)
    wall = time.perf_counter() - t
    hist = _metrics(Path(ref["run_dir"]))
    steps = [h["perf/step_time_s"] for h in hist[2:]]
    step = statistics.median(steps)
    wait = sum(h["perf/data_wait_frac"] * h["perf/step_time_s"] for h in hist[2:]) / sum(steps)
    gb = cfg.train.global_batch or cfg.train.micro_batch * nproc
    mfu = flops / step / (nproc * peak)
    backend = "NCCL" if dev.type == "cuda" else "gloo"
    dtype = "bf16" if dev.type == "cuda" else "fp32"
    c.result(
        "pretraining",
        f"{nproc} rank(s), {backend}, {dtype}, ZeRO-{cfg.train.zero_stage}: median step {step * 1e3:.0f} ms = "
        f"{gb / step:,.0f} windows/s; data wait {100 * wait:.1f} % (target < 5 %); loss "
        f"{hist[0]['loss/total']:.2f} -> {hist[-1]['loss/total']:.2f}; wall {wall:.0f} s",
        wait < 0.05,
    )
    c.result(
        "MFU",
        f"{100 * mfu:.1f} % of {nproc} x the measured {dtype} matmul peak ({flops / step / 1e9:,.1f} GFLOP/s; "
        "target >= 35 %)",
        mfu >= 0.35,
    )
    _check_resume(c, sz, store, dev, nproc, tmp, hist)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="on the CPU at a tiny size (2 ranks, gloo)")
    ap.add_argument(
        "--out", default=None, help="summary file (default benchmarks/results/gpu_check.txt; dry run: none)"
    )
    ap.add_argument(
        "--keep", default=None, help="keep the store and runs in this folder (default: a temp dir)"
    )
    args = ap.parse_args(argv)
    return args


def _run_checks(c: Check, sz: dict, dev: torch.device, nproc: int, tmp: Path) -> None:
    """The store (written unless kept), then each check; an error in one is reported and the next runs."""
    t = time.perf_counter()
    dims = dict(zip(("video", "audio", "text"), sz["dims"]))
    store = tmp / "store"
    if not (store / "store.json").exists():
        window_loader.write_store(store, sz["movies"], sz["shots"], sz["tokens_per_shot"], dims, 0)
    c.result(
        "store",
        f"{sz['movies']} movies x {sz['shots']} shots, dims {sz['dims']}, {sz['tokens_per_shot']:.1f} tokens/shot, "
        f"float16 ({time.perf_counter() - t:.0f} s to write)",
        None,
    )
    for name, fn in (
        ("loader", lambda: check_loader(c, sz, store, dev)),
        ("pretraining", lambda: check_pretrain(c, sz, store, dev, nproc, tmp)),
    ):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - report and go on to the next check
            c.result(name, f"ERROR {type(e).__name__}: {str(e)[-600:]}", False)
            c.failed = True


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    t0 = time.perf_counter()
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device visible; run it on a GPU machine, or --dry-run to test it on the CPU"
        )
        return 2
    sz = SIZES["dry" if dry else "gpu"]
    dev = torch.device("cpu" if dry else "cuda")
    nproc = 2 if dry else torch.cuda.device_count()
    c = Check()
    gpus = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) or "none"
    c.say(
        f"# gpu_check{' --dry-run (CPU, tiny size)' if dry else ''}  {time.strftime('%Y-%m-%d %H:%M')}  "
        f"{platform.machine()} {os.cpu_count()} cpus  torch {torch.__version__}  GPUs: {gpus}  "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    torch.set_num_threads(1 if dry else min(8, os.cpu_count() or 1))
    tmp_ctx = tempfile.TemporaryDirectory() if args.keep is None else None
    tmp = Path(args.keep or tmp_ctx.name)
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp / "runs", ignore_errors=True)  # a kept folder: the store is reused, the runs are not
    try:
        _run_checks(c, sz, dev, nproc, tmp)
    finally:
        if tmp_ctx is not None:
            tmp_ctx.cleanup()
    wall = time.perf_counter() - t0
    c.say(
        f"# {'FAILED' if c.failed else 'ok'}: {wall / 60:.1f} min (target < 10 min); load average "
        f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    out = args.out or (None if dry else str(HERE / "results" / "gpu_check.txt"))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text("\n".join(c.lines) + "\n")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
