"""Learning you can watch: pretrain with snapshots, then the LVU probe on every snapshot, in one go.

    .venv/bin/python experiments/probe_curve.py                         # the demo (demo.yaml)
    .venv/bin/python experiments/probe_curve.py --every 5 --seeds 2 train.epochs=4
    .venv/bin/python experiments/probe_curve.py --config experiments/configs/pretrain/tiny.yaml --every 4
    .venv/bin/python experiments/probe_curve.py data.store=S --store EVAL_STORE --labels LVU_DIR

The same as the two commands
    lmp-pretrain CONFIG train.snapshot_every=N name=NAME
    lmp-bench curve runs/pretrain/NAME --store EVAL_STORE --labels LVU_DIR
With `data.demo` set (the default configs) the clip store and LVU labels are the same generated demo's
(`lmp_data.demo.make_demo` -> `eval_store`, `lvu_dir`). Prints the curve and the pretraining run's
MLflow id: its `probe/content`, `probe/metadata`, `probe/user` and `probe/lvu/<task>` metrics are the
curve, against the pretraining step.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "experiments" / "configs" / "pretrain" / "demo.yaml"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEMO), help="pretrain YAML (default demo.yaml)")
    p.add_argument("--every", type=int, default=10, help="train.snapshot_every (default 10)")
    p.add_argument("--name", default=None, help="run name (default <config name>-curve-<time>)")
    p.add_argument("--store", default=None, help="clip store (default: the demo's)")
    p.add_argument("--labels", default=None, help="LVU labels (default: the demo's)")
    p.add_argument("--features", default=None, help="'+'-joined features (default lmp_bench's)")
    p.add_argument("--tasks", default=None, help="comma-separated LVU tasks (default: all present)")
    p.add_argument("--seeds", type=int, default=3, help="probe seeds (default 3)")
    p.add_argument("overrides", nargs="*", help="pretrain config overrides key=value")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("lmp_bench.curve").setLevel(logging.INFO)

    from lmp_bench.curve import format_curve, probe_curve
    from lmp_bench.features import DEFAULT_FEATURES
    from lmp_model.pretrain import load_pretrain_config, run

    base = load_pretrain_config(args.config, args.overrides)
    name = args.name or f"{base.name}-curve-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = load_pretrain_config(
        args.config, [*args.overrides, f"train.snapshot_every={args.every}", f"name={name}"]
    )
    store, labels = args.store, args.labels
    if store is None or labels is None:
        if cfg.data.store:
            p.error("data.store is set: give --store and --labels (the clip store and LVU labels)")
        from lmp_data.demo import make_demo
        from lmp_model.pretrain.data import demo_store_path

        demo = make_demo(demo_store_path(cfg.data), seed=cfg.data.demo_seed, size=cfg.data.demo)
        store, labels = store or demo.eval_store, labels or demo.lvu_dir

    t0 = time.perf_counter()
    res = run(cfg)
    t_pre = time.perf_counter() - t0
    print(f"pretrained {res.steps} steps in {t_pre:.0f}s -> {res.run_dir}")
    t0 = time.perf_counter()
    df = probe_curve(
        res.run_dir,
        store,
        labels,
        tasks=args.tasks,
        seeds=args.seeds,
        features=args.features or DEFAULT_FEATURES,
    )
    t_curve = time.perf_counter() - t0
    print()
    print(format_curve(df))
    print(f"\nprobe curve of {len(df)} points in {t_curve:.0f}s; wrote {res.run_dir / 'probe_curve.parquet'}")
    if res.mlflow_run_id:
        print(f"MLflow run {res.mlflow_run_id} (probe/* metrics against the step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
