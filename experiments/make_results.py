"""Generate docs/results.md: Tables 1-3 as this project reproduces them, beside the paper's numbers.

By default it runs the three sweeps at the default scale with 3 seeds (ablate_losses, ablate_seq_len,
ablate_features; one after the other, each ~15-25 min on 2 cores), then reads their result tables.
`--reuse` takes the newest complete sweep of each table at that scale instead of running it;
`--sweep TABLE=DIR` names one explicitly.

    .venv/bin/python experiments/make_results.py                   # runs all three (~45 min on 2 cores)
    .venv/bin/python experiments/make_results.py --reuse           # only rewrite docs/results.md
    .venv/bin/python experiments/make_results.py --scale smoke --out /tmp/results.md

For each table, every adjacent pair of the paper's ordering is checked on each group average
(Content and Metadata: higher is better; User: lower is better). The margin is given in standard
errors of the difference of the two seed means, z = Δ / sqrt(s_a²/n_a + s_b²/n_b) (s: the seeds'
sample std), so z > 2 is a clear win and |z| < 1 is within noise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
from _sweep import paper
from _sweep.config import REPO_ROOT, load_sweep_config, repo_path

from lmp_data.files import atomic_write

HAND_MARKER = "<!-- written by hand: make_results.py keeps everything from here on -->"
GROUPS = paper.GROUPS
SCRIPTS = {"losses": "ablate_losses.py", "seq_len": "ablate_seq_len.py", "features": "ablate_features.py"}
# the paper's numbers, orderings and claims live in _sweep/paper.py (the sweeps' MLflow Descriptions use them)
TABLES = {
    t: {"script": s, "title": paper.TABLES[t].title, "paper": paper.TABLES[t].paper,
        "pairs": paper.TABLES[t].pairs, "claim": paper.TABLES[t].claim}
    for t, s in SCRIPTS.items()
}  # fmt: skip


def newest_complete(table: str, scale: str) -> Path | None:
    base = repo_path(load_sweep_config(scale).out_dir)
    done = [p.parent.parent for p in base.glob(f"{table}-{scale}-*/results/table.parquet")]
    done = [p for p in done if _complete(p)]
    return max(done, key=lambda p: (p / "results" / "table.parquet").stat().st_mtime) if done else None


def _complete(sweep_dir: Path) -> bool:
    trials = pl.read_parquet(sweep_dir / "results" / "trials.parquet")
    return trials.height > 0 and not (trials["status"] == "unfinished").any()


def run_sweep(table: str, scale: str, seeds: list[int], log_dir: Path) -> Path:
    script = REPO_ROOT / "experiments" / TABLES[table]["script"]
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{table}-{scale}.log"
    cmd = [sys.executable, str(script), "--scale", scale, "--seeds", *map(str, seeds)]
    print(f"[results] running {' '.join(cmd[1:])} (log: {log})", flush=True)
    t0 = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=fh, stderr=subprocess.STDOUT).returncode
    print(f"[results] {table}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
    if rc != 0:
        raise SystemExit(f"{script.name} exited {rc}; see {log} (resume it with --resume, then --reuse)")
    found = newest_complete(table, scale)
    if found is None:
        raise SystemExit(f"{script.name} finished but no complete sweep folder was found; see {log}")
    return found


z_margin = paper.z_margin


def render_table(table: str, summary: pl.DataFrame, sweep_dir: Path) -> str:
    spec = TABLES[table]
    rows = {r["variant"]: r for r in summary.iter_rows(named=True)}
    lines = [f"### {spec['title']}", ""]
    head = ["Row", "Content ↑ (ours)", "Metadata ↑ (ours)", "User ↓ (ours)", "Content ↑ (paper)",
            "Metadata ↑ (paper)", "User ↓ (paper)", "Seeds"]  # fmt: skip
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, numbers in spec["paper"].items():
        r = rows.get(variant)
        ours = []
        for g, _, _ in GROUPS:
            if r is None or r[f"{g}_mean"] is None:
                ours.append("failed" if r is not None else "not run")
            else:
                d = 3 if g == "user" else 2
                ours.append(f"{r[f'{g}_mean']:.{d}f} ± {r[f'{g}_std']:.{d}f}")
        seeds = f"{r['seeds_ok']}/{r['seeds']}" if r is not None else "0"
        theirs = " | ".join(f"{v:.2f}" for v in numbers) if numbers is not None else "— | — | —"
        lines.append(f"| {variant} | " + " | ".join(ours) + f" | {theirs} | {seeds} |")
    lines += ["", verdict(table, rows), ""]
    lines.append(f"Sweep folder `{sweep_dir.relative_to(REPO_ROOT) if sweep_dir.is_relative_to(REPO_ROOT) else sweep_dir}`; "
                 f"MLflow parent run `{_parent(sweep_dir)}` (its `results/` artifacts hold the per-trial table "
                 "with every child run id and git commit).")  # fmt: skip
    return "\n".join(lines) + "\n"


def _parent(sweep_dir: Path) -> str:
    try:
        return json.loads((sweep_dir / "sweep.json").read_text())["parent_run_id"]
    except (OSError, KeyError, ValueError):
        return "unknown"


def verdict(table: str, rows: dict) -> str:
    """One sentence: does the paper's ordering hold, per group, and by how many standard errors."""
    return paper.verdict(table, rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="default", choices=("smoke", "default", "paper"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--reuse", action="store_true", help="use the newest complete sweeps instead of running them"
    )
    p.add_argument(
        "--sweep", action="append", default=[], metavar="TABLE=DIR", help="a finished sweep folder"
    )
    p.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    p.add_argument("--out", default=str(REPO_ROOT / "docs" / "results.md"))
    args = p.parse_args(argv)
    given = {}
    for item in args.sweep:
        table, _, path = item.partition("=")
        if table not in TABLES or not path:
            raise SystemExit(f"--sweep {item}: expected TABLE=DIR with TABLE in {', '.join(TABLES)}")
        given[table] = Path(path).resolve()
    t0 = time.perf_counter()
    sections, used = [], {}
    for table in args.tables:
        sweep_dir = given.get(table) or (newest_complete(table, args.scale) if args.reuse else None)
        if sweep_dir is None:
            sweep_dir = run_sweep(table, args.scale, args.seeds, repo_path("runs/results-logs"))
        summary = pl.read_parquet(sweep_dir / "results" / "table.parquet")
        sections.append(render_table(table, summary, sweep_dir))
        used[table] = sweep_dir
    for table in TABLES:
        if table not in args.tables:
            sections.append(
                f"### {TABLES[table]['title']}\n\nNot generated in this run: `.venv/bin/python experiments/"
                f"{TABLES[table]['script']} --scale {args.scale}`, then `experiments/make_results.py --reuse`.\n"
            )
    sections.sort(key=lambda sec: [TABLES[t]["title"] in sec for t in TABLES].index(True))
    commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"  # fmt: skip
    header = (
        "# Does the pretraining help? Tables 1-3 on the demo benchmark\n\n"
        f"Generated by `experiments/make_results.py --scale {args.scale}` at commit `{commit}` "
        f"({time.strftime('%Y-%m-%d')}). Our numbers: mean ± sample std over seeds {args.seeds} of the LVU "
        "group averages (Content, Metadata: top-1 accuracy in %; User: MSE) of linear probes on the frozen "
        "model's time-averaged features, on the generated demo benchmark (`lmp_data.demo`), not on LVU. The "
        "paper's numbers are on LVU with the paper's encoders and 25k pretraining movies: compare orderings, "
        "not values.\n\n"
        "Margins are z = Δ / sqrt(s_a²/n_a + s_b²/n_b), the difference of two rows' seed means in standard "
        "errors (positive: the paper's way).\n\n"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = ""  # the hand-written part (from HAND_MARKER on) survives a regeneration
    if out.is_file() and HAND_MARKER in out.read_text():
        kept = "\n" + out.read_text()[out.read_text().index(HAND_MARKER) :]
    atomic_write(out, header + "\n".join(sections) + kept)
    print(f"[results] wrote {out} from {', '.join(f'{k}={v}' for k, v in used.items())} "
          f"in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
