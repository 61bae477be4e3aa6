"""The command line shared by the ablation scripts."""

from __future__ import annotations

import argparse
import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .config import REPO_ROOT, SCALES, SweepConfig, load_sweep_config
from .spec import TrialSpec


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=description,
        epilog="Extra KEY=VALUE arguments override the sweep config (e.g. ray.cpus_per_trial=2 seeds=[0,1]).",
    )
    p.add_argument("--scale", choices=SCALES, default="default", help="preset in experiments/configs/sweeps/")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the preset's)")
    p.add_argument(
        "--only",
        type=lambda v: [x for x in v.split(",") if x],
        metavar="SLUG[,SLUG...]",
        help="run only these rows (variant slugs, comma-separated)",
    )
    p.add_argument(
        "--ray-address", default=None, help="existing Ray cluster (default: $RAY_ADDRESS, else local)"
    )
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<repo>/mlflow.db)")
    p.add_argument("--experiment", help="MLflow experiment name (default: lmp-ablations)")
    p.add_argument("--store", help="pretraining feature store (default: demo data, built on first use)")
    p.add_argument("--eval-store", help="LVU clip feature store")
    p.add_argument("--labels", help="LVU labels directory")
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="SWEEP_DIR",
        help="resume an interrupted sweep (its folder; without a value: the newest of this table and scale)",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="the full output of Ray, Tune and the trials on the console (default: in <sweep>/sweep.log)",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    return p


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    dot = list(args.overrides)
    for flag, key in (
        ("ray_address", "ray.address"),
        ("num_cpus", "ray.num_cpus"),
        ("tracking_uri", "mlflow.tracking_uri"),
        ("experiment", "mlflow.experiment"),
        ("store", "data.store"),
        ("eval_store", "data.eval_store"),
        ("labels", "data.labels"),
    ):
        value = getattr(args, flag)
        if value is not None:
            dot.append(f"{key}={value}")
    if getattr(args, "verbose", False):
        dot.append("verbose=true")
    if args.seeds:
        dot.append(f"seeds=[{','.join(str(s) for s in args.seeds)}]")
    bad = [o for o in dot if "=" not in o]
    if bad:
        raise SystemExit(f"overrides must be KEY=VALUE, got: {' '.join(bad)}")
    cfg = load_sweep_config(args.scale, dot)
    if cfg.ray.address is None and os.environ.get("RAY_ADDRESS"):
        cfg.ray.address = os.environ["RAY_ADDRESS"]
    return cfg


def select(specs: list[TrialSpec], only: list[str] | None) -> list[TrialSpec]:
    """Keep the rows named by `--only` (variant slugs); fail naming the unknown ones."""
    if not only:
        return specs
    known = {s.slug for s in specs}
    unknown = sorted(set(only) - known)
    if unknown:
        raise SystemExit(
            f"--only: unknown variant(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return [s for s in specs if s.slug in only]


def _script(build_stages) -> str:
    """The table script that defines `build_stages` (what resumes its sweep), relative to the repo."""
    path = Path(inspect.getsourcefile(build_stages) or "").resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def main(
    table: str,
    title: str,
    description: str,
    build_stages,
    argv: list[str] | None = None,
    label_columns: list[str] | None = None,
    *,
    overrides: Sequence[str] = (),
    after: Callable[[Any, SweepConfig], None] | None = None,
) -> int:
    """Parse the command line, resolve the data, run (or resume) the sweep; the process exit code.

    `build_stages(cfg, only) -> (stages, columns)` builds the table's `TrialSpec`s from the config.
    `overrides` come before the command line's (which win); `after(outcome, cfg)` runs once the sweep
    has ended, before the transfer table is written.
    """
    from .data import resolve_data
    from .runner import install_sigterm_as_interrupt, run_sweep

    args = parser(description).parse_intermixed_args(argv)
    if args.resume and "=" in args.resume and not os.path.exists(args.resume):
        args.overrides.append(args.resume)  # `--resume key=value`: the value was an override
        args.resume = "latest"
    args.overrides[:0] = list(overrides)
    cfg = config_from_args(args)
    t0 = __import__("time").perf_counter()
    data = resolve_data(cfg.data) if not args.resume else None
    stages, columns = build_stages(cfg, args.only)
    install_sigterm_as_interrupt()
    try:
        out = run_sweep(
            table,
            title,
            stages,
            cfg,
            data=data,
            label_columns=label_columns,
            columns=columns,
            resume=args.resume,
            script=_script(build_stages),
        )
    except Exception as e:
        if getattr(e, "lmp_reported", False):  # one line + the log's path already printed
            return 1
        raise
    if after is not None:
        after(out, cfg)
    from .transfer import write_table

    transfer_md = write_table(out)  # the transfer columns, when the trials ran them (probe.transfer)
    if transfer_md:
        print(transfer_md, flush=True)
    print(f"[sweep] {table} at scale {cfg.scale}: {__import__('time').perf_counter() - t0:.0f} s", flush=True)
    return out.exit_code
