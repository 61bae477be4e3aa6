"""`lmp-pretrain CONFIG [key=value ...] [--resume]`: the pretraining entry point.
`lmp-pretrain --sync-mlflow RUN_DIR [--tracking-uri URI]`: upload what MLflow missed of a run
(the tracking server went away mid-run; see `lmp_model.pretrain.sync`).

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
  lmp-pretrain --sync-mlflow runs/pretrain/demo    # upload what the tracking server missed (it went away)

Overrides are OmegaConf dotlist keys of PretrainConfig: name, model.*, data.*, train.*, mlflow.*.
The run folder is <train.out_dir>/<name>: config.yaml, metrics.jsonl, loss_curve.png, checkpoints/,
export/ (model.safetensors + lmp.json, loadable with lmp_model.export.load_pretrained).
MLflow: MLFLOW_TRACKING_URI or mlflow.tracking_uri, default sqlite:///<repo root>/mlflow.db; a tracking
server on PostgreSQL for clusters: scripts/tracking_server.sh. If the server goes away mid-run, training
goes on (one warning), metrics stay in metrics.jsonl, and --sync-mlflow RUN_DIR uploads them later.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="lmp-pretrain",
        description="Pretrain the LMP model (DeepSpeed, checkpoints, MLflow).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="pretrain YAML, e.g. experiments/configs/pretrain/demo.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest intact checkpoint of the run (fresh if none)",
    )
    p.add_argument(
        "--sync-mlflow",
        metavar="RUN_DIR",
        help="upload to MLflow what run RUN_DIR could not log there (metrics.jsonl, params, artifacts, status)",
    )
    p.add_argument(
        "--tracking-uri",
        help="with --sync-mlflow: where to (default $MLFLOW_TRACKING_URI, else the URI the run used)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show the traceback of an error")
    args = p.parse_args(argv)
    if args.sync_mlflow is None and args.config is None:
        p.error("the config (a pretrain YAML) is required, or --sync-mlflow RUN_DIR")
    if args.sync_mlflow is not None and (args.config is not None or args.resume):
        p.error("--sync-mlflow RUN_DIR takes no config, overrides or --resume")
    if args.tracking_uri is not None and args.sync_mlflow is None:
        p.error("--tracking-uri goes with --sync-mlflow (for training: mlflow.tracking_uri=URI)")
    return args


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def sync(args: argparse.Namespace) -> int:
    """`--sync-mlflow RUN_DIR`: upload what the store lacks; print a JSON summary."""
    from lmp_model.pretrain.sync import SyncError, sync_run

    try:
        summary = sync_run(args.sync_mlflow, args.tracking_uri)
    except (SyncError, OSError) as e:
        return error(e, args.verbose)
    except Exception as e:  # noqa: BLE001 - the store failed midway: one line; running it again resumes
        return error(
            RuntimeError(f"sync of {args.sync_mlflow} failed midway ({type(e).__name__}: {_one_line(e)})"),
            args.verbose,
            1,
        )
    print(json.dumps(summary), flush=True)
    return 0


def error(exc: BaseException, verbose: bool, code: int = 2) -> int:
    """Report `exc` as one line `lmp-pretrain: error: ...` (the traceback first when `verbose`)."""
    from lmp_data.cli import print_error

    print_error("lmp-pretrain", exc, verbose)
    return code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from lmp_data.console import quiet_known_warnings

    quiet_known_warnings()  # before DeepSpeed is imported; on a machine without a GPU only
    rank = os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == "0" else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    if args.sync_mlflow is not None:
        return sync(args)
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
