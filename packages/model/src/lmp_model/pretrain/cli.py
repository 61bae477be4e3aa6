"""`lmp-pretrain CONFIG [key=value ...] [--resume]`: the pretraining entry point.

Run it directly (one process), or under a launcher for several ranks:
`torchrun --nproc_per_node 2 -m lmp_model.pretrain.cli CONFIG ...`, `deepspeed --num_gpus 2 ...`, or
`srun` (SLURM variables). Exit codes: 0 done, 2 invalid config, arguments or input (one line naming the
file/key/value: an empty store, data.k too large for model.max_tokens, an unwritable train.out_dir, no
intact checkpoint to resume, ...; `-v` adds the traceback), 3 non-finite loss, 75 preempted (checkpoint
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
        "--resume",
        action="store_true",
        help="continue from the newest intact checkpoint of the run (fresh if none)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show the traceback of an error")
    return p.parse_args(argv)


def error(exc: BaseException, verbose: bool, code: int = 2) -> int:
    """Report `exc` as one line `lmp-pretrain: error: ...` (the traceback first when `verbose`)."""
    from lmp_data.cli import print_error

    print_error("lmp-pretrain", exc, verbose)
    return code


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
    except (ConfigError, OSError) as e:
        return error(e, args.verbose)
    from lmp_model.pretrain import preempt
    from lmp_model.pretrain.checkpoint import CheckpointError
    from lmp_model.pretrain.train import NonFiniteLossError, run

    preempt.install_handler()
    try:
        result = run(cfg, resume=args.resume)
    except preempt.Preempted as e:
        print(f"lmp-pretrain: {e}", file=sys.stderr)
        return preempt.PREEMPTED_EXIT_CODE
    except NonFiniteLossError as e:
        return error(e, args.verbose, 3)
    except (ConfigError, CheckpointError, ValueError, KeyError, OSError) as e:  # bad input, not a bug
        return error(e, args.verbose)
    if rank == "0":
        print(json.dumps(result.summary()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
