"""Every benchmark in one run, one report of ratios to this machine's limits (issue 14).

    .venv/bin/python benchmarks/run_all.py [--tiny] [--out benchmarks/results/report.txt] [--only loader,step,...]

Calls the benchmark scripts beside it (window_loader.py, pretrain_bench.py, bench_lvu.py, ingest_bench.py;
each also runs alone) and writes one report: a header (machine, load average at start and end), one line
per figure -- what was measured, the target, PASS / MISS (or SKIP / ERROR) and, for a miss, what bounds
it -- then each benchmark's own lines. Profiles of the loader and of a training step go beside the
report (`profile_loader.txt`, `profile_step.txt`): the "bound" of a missed target points there.

Figures (targets from issues 2, 4, 7 and 14):
- loader/memcpy    ShotWindows batches vs a memcpy of the same bytes, CPU              >= 50 %
- loader/zarr      the same vs reading each window from Zarr                           >= 10x
- loader/d2d       batches gathered on a GPU vs a device-to-device copy (GPU only)      >= 50 %
- step/peak        training step FLOP/s vs the measured 1-thread fp32 matmul peak      >= 35 %
- data wait        time blocked on the next batch / step time                          < 5 %
- ranks 2/1        2 ranks vs 1 rank windows/s (gloo, 1 thread each)                   >= 1.7x
- ZeRO-2/ZeRO-0, ZeRO-3/ZeRO-0   step time at 2 ranks                                  <= 1.3x, <= 1.5x
- eval probe       LVU-sized probe (LVU's ~10k clips, 9 tasks x 3 seeds)                <= 30 s
- eval encode      clip encoding vs the 1-thread matmul peak (+ encode + probe s/1000 clips)  >= 35 %
- ingest           seconds of movie per second of ingest (offline encoders)            >= 2x
- memory           store bytes per shot and peak while building batches: the demo (measured store) and
                   a MAD-sized store (computed: 1.4 M shots, 2048 + 896 + 768 dims, 100 tokens/window)
GPU figures at the paper's scale (bf16 MFU, NCCL, resume after kill): benchmarks/gpu_check.sh.

`--tiny`: every benchmark at a toy size (a minute or few; the test suite runs it and checks that every
line is there, not the figures).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # the benchmark scripts beside this one

import bench_lvu  # noqa: E402
import ingest_bench  # noqa: E402
import pretrain_bench  # noqa: E402
import window_loader  # noqa: E402

FIGURES = (
    "loader/memcpy",
    "loader/zarr",
    "loader/d2d",
    "step/peak",
    "data wait",
    "ranks 2/1",
    "ZeRO-2/ZeRO-0",
    "ZeRO-3/ZeRO-0",
    "eval probe",
    "eval encode",
    "ingest",
    "memory demo",
    "memory MAD",
)
"""The report's figure lines, in order (the test checks each is there)."""

SECTIONS = ("loader", "step", "eval", "ingest", "memory")

MAD = {
    "shots": 1_400_000,
    "dims": {"video": 2048, "audio": 896, "text": 768},
    "tokens_per_window": 100,
    "k": 30,
}

SIZES = {
    "full": {
        "loader": {"movies": 300, "shots_per_movie": 1000, "batches": 300, "zarr_windows": 300},
        "step": {"config": "demo.yaml", "steps": 20, "zero_steps": 15, "skip": 3},
        "probe": {"clips": None, "seeds": 3},
        "demo": "default",
        "ingest_minutes": 2.0,
    },
    "tiny": {
        "loader": {"movies": 20, "shots_per_movie": 200, "batches": 30, "zarr_windows": 30},
        "step": {"config": "tiny.yaml", "steps": 5, "zero_steps": 4, "skip": 2},
        "probe": {"clips": 400, "seeds": 1},
        "demo": "tiny",
        "ingest_minutes": 0.15,
    },
}


class Report:
    def __init__(self) -> None:
        self.figures: dict[str, str] = {}
        self.details: list[str] = []
        self.errors: list[str] = []

    def figure(self, name: str, measured: str, target: str, ok: bool | None, bound: str = "") -> None:
        """One figure line. ok: True PASS, False MISS, None SKIP."""
        status = "SKIP" if ok is None else ("PASS" if ok else "MISS")
        line = f"{name:<14} {measured}  | target {target} | {status}"
        if bound and ok is not True:
            line += f" | {'bound' if ok is False else 'note'}: {bound}"
        self.figures[name] = line
        print(line, flush=True)

    def error(self, names: tuple[str, ...], e: BaseException) -> None:
        msg = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        for n in names:
            if n not in self.figures:
                self.figures[n] = f"{n:<14} ERROR | {msg}"
        self.errors.append(traceback.format_exc())
        print(traceback.format_exc(), file=sys.stderr, flush=True)

    def log(self, s: str) -> None:
        self.details.append(s)
        print("  " + s, flush=True)


def _load() -> str:
    a = os.getloadavg()
    return f"{a[0]:.1f}/{a[1]:.1f}/{a[2]:.1f}"


def _section(rep: Report, title: str) -> Callable[[str], None]:
    rep.details += ["", f"## {title}  (load average {_load()} at start)"]
    return rep.log


def run_loader(rep: Report, size: dict, prof_dir: Path, results: Path | None) -> None:
    log = _section(rep, "window loader (benchmarks/window_loader.py)")
    start = len(rep.details) - 1
    prof = prof_dir / "profile_loader.txt"
    r = window_loader.measure(**size["loader"], profile=str(prof), log=log)
    share = _profile_line(r.get("profile", ""), 2)
    ratio = r["ratio_cpu_time"] or r["ratio"]
    rep.figure(
        "loader/memcpy",
        f"{100 * ratio:.0f} % in CPU time ({100 * r['ratio']:.0f} % in wall time; {r['loader_gbs']:.2f} GB/s, "
        f"{r['loader_wps']:,.0f} windows/s vs memcpy {r['copy_gbs']:.2f} GB/s wall; batch 64, k=30, demo dims, 1 thread)",
        ">= 50 %",
        ratio >= 0.5,
        f"{share} ({prof.name})",
    )
    rep.figure(
        "loader/zarr",
        f"{r['vs_zarr']:.0f}x ({r['loader_wps']:,.0f} vs {r['zarr_wps']:,.0f} windows/s)",
        ">= 10x",
        r["vs_zarr"] >= 10,
    )
    if results is not None:
        (results / "window_loader.txt").write_text("\n".join(rep.details[start:]) + "\n")
    if torch.cuda.is_available():
        g = window_loader.measure(**size["loader"], zarr_windows=0, device="cuda", log=log)
        rep.figure(
            "loader/d2d",
            f"{100 * g['ratio']:.0f} % ({g['loader_gbs']:.1f} GB/s vs device-to-device copy {g['copy_gbs']:.1f} GB/s)",
            ">= 50 %",
            g["ratio"] >= 0.5,
        )
    else:
        rep.figure(
            "loader/d2d", "no GPU here", ">= 50 %", None, "run benchmarks/gpu_check.sh on a GPU machine"
        )


def run_step(rep: Report, size: dict, prof_dir: Path, results: Path | None) -> None:
    log = _section(rep, "pretraining (benchmarks/pretrain_bench.py)")
    start = len(rep.details) - 1
    s = size["step"]
    prof = prof_dir / "profile_step.txt"
    config = REPO / "experiments" / "configs" / "pretrain" / s["config"]
    r = pretrain_bench.measure(
        config,
        s["steps"],
        s["zero_steps"],
        s["skip"],
        ["train.device=cpu"],
        threads=1,
        profile=str(prof),
        log=log,
    )
    one = r["one_rank"][1]
    contended = f"the run got {one['cpu_share']:.2f} of its core (CPU time / wall; load average {_load()})"
    mfu = one["mfu_cpu"] if one["mfu_cpu"] is not None else one["mfu"]
    rep.figure(
        "step/peak",
        f"{100 * mfu:.1f} % in CPU time ({one['step_cpu_s'] * 1e3:.0f} ms per step; {100 * one['mfu']:.1f} % in wall "
        f"time, {one['wps']:.1f} windows/s) of the 1-thread fp32 matmul peak ({r['peak1_cpu'] / 1e9:.1f} GFLOP/s in "
        f"CPU time, {r['peak1'] / 1e9:.1f} wall); "
        f"{r['flops'] / 1e9:.1f} GFLOP per step, 1 rank, 1 thread",
        ">= 35 %",
        mfu >= 0.35,
        f"{_profile_line(r.get('profile', ''), 2)}; {_profile_line(r.get('profile', ''), 3)} ({prof.name}); {contended}",
    )
    rep.figure(
        "data wait", f"{100 * one['wait']:.2f} % of step time (1 rank, 1 thread)", "< 5 %", one["wait"] < 0.05
    )
    z0 = r["zero"][0]
    rep.figure(
        "ranks 2/1",
        f"{r['scaling']:.2f}x ({z0['wps']:.1f} vs {one['wps']:.1f} windows/s, gloo, 1 thread each, ZeRO-0)",
        ">= 1.7x",
        r["scaling"] >= 1.7,
        f"the 2 ranks got {z0['cpu_share']:.2f} of 2 cores (CPU time / wall, incl. start-up) on a machine with "
        f"{os.cpu_count()} cpus at load average {_load()}, one rank alone {one['cpu_share']:.2f} of one: per CPU "
        f"second the 2 ranks gave {r['scaling'] * one['cpu_share'] / (2 * z0['cpu_share']):.2f} of one rank's "
        "windows (1.0 = no cost for the second rank: its all-reduce and duplicated work)",
    )
    for st, lim in ((2, 1.3), (3, 1.5)):
        ratio = r[f"zero{st}_ratio"]
        zs = r["zero"][st]
        rep.figure(
            f"ZeRO-{st}/ZeRO-0",
            f"{ratio:.2f}x step time ({zs['step_s'] * 1e3:.0f} vs {z0['step_s'] * 1e3:.0f} ms, 2 ranks)",
            f"<= {lim}x",
            ratio <= lim,
            f"ZeRO-{st} ranks got {zs['cpu_share']:.2f} of 2 cores vs {z0['cpu_share']:.2f} for ZeRO-0; "
            + (
                "ZeRO-3 all-gathers every layer's parameters in forward and backward (gloo over loopback)"
                if st == 3
                else "gradient reduce-scatter over gloo"
            ),
        )
    if results is not None:
        (results / "pretrain_bench.txt").write_text("\n".join(rep.details[start:]) + "\n")


def run_eval(rep: Report, size: dict, prof_dir: Path, results: Path | None) -> None:
    log = _section(rep, "evaluation (benchmarks/bench_lvu.py)")
    start = len(rep.details) - 1
    p = size["probe"]
    lvu = Path(bench_lvu.LVU)
    if lvu.is_dir():
        pr = bench_lvu.measure_probe(str(lvu), p["seeds"], p["clips"], log=log)
        full = p["clips"] is None and p["seeds"] == 3
        prof = prof_dir / "profile_probe.txt"
        text = bench_lvu.profile_probe(str(lvu), clips=p["clips"])
        prof.write_text(text + "\n")
        rep.figure(
            "eval probe",
            f"{pr['seconds']:.1f} s for {pr['clips']} clips x {pr['probes']} probes ({pr['per_1000']:.2f} s per 1000 clips)"
            + ("" if full else "; toy size, target not applicable"),
            "<= 30 s (LVU-sized: ~10k clips, 9 tasks x 3 seeds)",
            (pr["seconds"] <= 30) if full else None,
            f"{_profile_line(text, 1)}; {_profile_line(text, 2)} ({prof.name}); load average {_load()}",
        )
    else:
        pr = None
        rep.figure(
            "eval probe", f"no LVU labels at {lvu}", "<= 30 s", None, "copy LVU 1.0's label files there"
        )
    store = bench_lvu.demo_eval_store(size["demo"])
    en = bench_lvu.measure_encode(store, log=log)
    total = en["per_1000"] + (pr["per_1000"] if pr else 0.0)
    rep.figure(
        "eval encode",
        f"{100 * en['mfu']:.1f} % of the 1-thread matmul peak in CPU time; {en['per_1000']:.1f} s per 1000 demo clips "
        f"(encode + probe {total:.1f} s per 1000 clips)",
        ">= 35 %",
        en["mfu"] >= 0.35,
        f"{en['bound']} (a few windows per clip, batches of up to 64 windows, each feature's forward once)",
    )
    if results is not None:
        (results / "bench_lvu.txt").write_text("\n".join(rep.details[start:]) + "\n")


def run_ingest(rep: Report, size: dict, results: Path | None) -> None:
    log = _section(rep, "ingest (benchmarks/ingest_bench.py)")
    start = len(rep.details) - 1
    r = ingest_bench.measure(size["ingest_minutes"], log=log)
    rep.figure(
        "ingest",
        f"{r['rtf']:.2f}x real time ({r['duration']:.0f} s of movie in {r['wall']:.0f} s)",
        ">= 2x",
        r["rtf"] >= 2,
        f"the encoders take {100 * r['encode'] / (r['encode'] + r['decode']):.0f} % of decode + encode "
        "(EfficientNet-Lite0 on 3 frames/shot, MiniLM, on CPU)",
    )
    if results is not None:
        (results / "ingest_bench.txt").write_text("\n".join(rep.details[start:]) + "\n")


def run_memory(rep: Report, size: dict) -> None:
    from lmp_data import FeatureStore
    from lmp_data.gather import WindowGather, memory_estimate

    log = _section(rep, "memory (lmp_data.gather: measured store + memory_estimate)")
    from lmp_data.demo import DEMO_DIR, demo_folder, make_demo

    demo = make_demo(demo_folder(size["demo"], 0, REPO / DEMO_DIR), seed=0, size=size["demo"])
    mem = FeatureStore.open(demo.pretrain_store).load_all(dtype="float32")
    g = WindowGather(mem, 30)
    nb = g.nbytes()
    n_tok = int(mem.token_offsets[-1])
    tps = n_tok / mem.n_shots
    est = memory_estimate(mem.n_shots, tps, mem.dims, feature_bytes=4, k=30, batch=32, held=2)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    log(
        f"demo '{size['demo']}' pretrain store: {mem.n_shots} shots, {n_tok} tokens ({tps:.1f} per shot), dims "
        f"{mem.dims}, float32 in memory: WindowGather holds {nb['store'] / 1e6:.1f} MB ({nb['store'] / mem.n_shots:.0f} B "
        f"per shot; computed {est['store_per_shot']:.0f}) + host tables {nb['host_tables'] / 1e6:.1f} MB"
    )
    rep.figure(
        "memory demo",
        f"{nb['store'] / mem.n_shots:.0f} B per shot, store {nb['store'] / 1e6:.1f} MB, peak {est['peak'] / 1e6:.1f} MB "
        f"(demo config: batch 32, k=30, 2 prefetched)",
        f"fits this machine's RAM ({ram / 1e9:.0f} GB)",
        est["peak"] < ram,
    )
    e = memory_estimate(
        MAD["shots"], MAD["tokens_per_window"] / MAD["k"], MAD["dims"], feature_bytes=2, k=MAD["k"], batch=64,
        tokens_per_window=MAD["tokens_per_window"], held=4,
    )  # fmt: skip
    e1k = memory_estimate(
        MAD["shots"], MAD["tokens_per_window"] / MAD["k"], MAD["dims"], feature_bytes=2, k=MAD["k"], batch=1024,
        tokens_per_window=MAD["tokens_per_window"], held=1,
    )  # fmt: skip
    log(
        f"MAD-sized (computed): {MAD['shots']:,} shots, dims {MAD['dims']}, {MAD['tokens_per_window']} tokens per "
        f"window of {MAD['k']}, float16 store: {e['store_per_shot']:,.0f} B per shot (host tables "
        f"{e['host_per_shot']} B per shot more), store {e['store'] / 1e9:.1f} GB; a batch of 64 windows "
        f"{e['batch'] / 1e6:.0f} MB (fp32 out), of 1024 {e1k['batch'] / 1e6:.0f} MB; peak {e['peak'] / 1e9:.1f} GB at "
        f"micro-batch 64 with 4 prefetched (paper.yaml), {e1k['peak'] / 1e9:.1f} GB building 1024 at once"
    )
    rep.figure(
        "memory MAD",
        f"{e['store_per_shot']:,.0f} B per shot, store {e['store'] / 1e9:.1f} GB, peak {e['peak'] / 1e9:.1f} GB "
        f"(micro-batch 64, 4 prefetched; {e1k['peak'] / 1e9:.1f} GB for one batch of 1024) -- computed",
        "fits one 40 GB GPU (else data.gather=host: the store in host memory)",
        e1k["peak"] < 40e9,
    )


def _profile_line(text: str, i: int) -> str:
    lines = text.splitlines()
    return lines[i].strip() if len(lines) > i else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="toy sizes (seconds to minutes), for the test suite")
    ap.add_argument(
        "--out", default=None, help="report file (default benchmarks/results/report.txt; --tiny: a temp dir)"
    )
    ap.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    args = ap.parse_args(argv)
    size = SIZES["tiny" if args.tiny else "full"]
    if args.out:
        out = Path(args.out).resolve()
    elif args.tiny:
        out = Path(tempfile.mkdtemp(prefix="lmp-bench-")) / "report.txt"
    else:
        out = HERE / "results" / "report.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    # the per-benchmark result files are refreshed only by a full-size run into benchmarks/results/
    results = out.parent if (not args.tiny and out.parent == HERE / "results") else None
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SECTIONS)
    if unknown:
        ap.error(f"--only: unknown sections {sorted(unknown)} (choose from {SECTIONS})")

    load0, t0 = _load(), time.perf_counter()
    rep = Report()
    torch.set_num_threads(1)
    steps = [
        ("loader", ("loader/memcpy", "loader/zarr", "loader/d2d"), lambda: run_loader(rep, size, out.parent, results)),
        ("step", ("step/peak", "data wait", "ranks 2/1", "ZeRO-2/ZeRO-0", "ZeRO-3/ZeRO-0"), lambda: run_step(rep, size, out.parent, results)),
        ("eval", ("eval probe", "eval encode"), lambda: run_eval(rep, size, out.parent, results)),
        ("ingest", ("ingest",), lambda: run_ingest(rep, size, results)),
        ("memory", ("memory demo", "memory MAD"), lambda: run_memory(rep, size)),
    ]  # fmt: skip
    for name, figures, fn in steps:
        if name not in only:
            continue
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
            rep.error(figures, e)
    wall = time.perf_counter() - t0
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    header = [
        f"# lmp benchmark report  {time.strftime('%Y-%m-%d %H:%M')}  size {'tiny' if args.tiny else 'full'}  "
        f"(.venv/bin/python benchmarks/run_all.py{' --tiny' if args.tiny else ''}; {wall / 60:.1f} min)",
        f"# machine: {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, GPU: {gpu}",
        f"# load average (1/5/15 min) at start {load0}, at end {_load()} on {os.cpu_count()} cpus: other jobs "
        "share this machine, so every time below is an upper bound; ratios pair each figure with its limit "
        "measured in the same run, alternating where possible",
        "# figure        measured  | target | PASS/MISS | what bounds a miss",
    ]
    body = [rep.figures[n] for n in FIGURES if n in rep.figures]
    text = "\n".join([*header, *body, "", "# details", *rep.details]) + "\n"
    if rep.errors:
        text += "\n# errors\n" + "\n".join(rep.errors)
    out.write_text(text)
    print(f"report: {out}", flush=True)
    return 1 if rep.errors else 0


if __name__ == "__main__":
    sys.exit(main())
