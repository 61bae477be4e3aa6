"""`lmp-pretrain CONFIG [key=value ...] [--resume]`: the pretraining entry point.

Run it directly (one process), or under a launcher for several ranks:
`torchrun --nproc_per_node 2 -m lmp_model.pretrain.cli CONFIG ...`, `deepspeed --num_gpus 2 ...`, or
`srun` (SLURM variables). Exit codes: 0 done, 2 invalid config or arguments, 3 non-finite loss, 75 preempted (checkpoint
saved on SLURM's warning signal, see `preempt`; requeue and run again with --resume).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

EPILOG = """examples:
  lmp-pretrain experiments/configs/pretrain/demo.yaml
  lmp-pretrain experiments/configs/pretrain/tiny.yaml train.steps=50 train.zero_stage=2 name=try1
  torchrun --nproc_per_node 2 -m lmp_model.pretrain.cli experiments/configs/pretrain/demo.yaml
  lmp-pretrain experiments/configs/pretrain/demo.yaml --resume     # continue the latest checkpoint

Overrides are OmegaConf dotlist keys of PretrainConfig: name, model.*, data.*, train.*, mlflow.*.
The run folder is <train.out_dir>/<name>: config.yaml, metrics.jsonl, loss_curve.png, checkpoints/,
export/ (model.safetensors + lmp.json, loadable with lmp_model.export.load_pretrained).
MLflow: MLFLOW_TRACKING_URI or mlflow.tracking_uri, default sqlite:///<repo root>/mlflow.db.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="lmp-pretrain",
        description="Pretrain the LMP model (DeepSpeed, checkpoints, MLflow).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="pretrain YAML, e.g. experiments/configs/pretrain/demo.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint of the run (fresh if none)"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank = os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == "0" else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    from lmp_model.pretrain.config import ConfigError, load_pretrain_config

    try:
        cfg = load_pretrain_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as e:
        print(f"lmp-pretrain: error: {e}", file=sys.stderr)
        return 2
    from lmp_model.pretrain import preempt
    from lmp_model.pretrain.train import NonFiniteLossError, run

    preempt.install_handler()
    try:
        result = run(cfg, resume=args.resume)
    except preempt.Preempted as e:
        print(f"lmp-pretrain: {e}", file=sys.stderr)
        return preempt.PREEMPTED_EXIT_CODE
    except NonFiniteLossError as e:
        print(f"lmp-pretrain: error: {e}", file=sys.stderr)
        return 3
    except FileExistsError as e:
        print(f"lmp-pretrain: error: {e}", file=sys.stderr)
        return 2
    if rank == "0":
        print(json.dumps(result.summary()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
