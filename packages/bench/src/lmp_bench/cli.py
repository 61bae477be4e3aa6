"""`lmp-bench`: evaluate a pretrained LMP on LVU (linear probes) and on the transfer tasks.

    lmp-bench lvu --model RUN_ID_OR_PATH|none|scratch --store CLIP_STORE --labels DIR
                  [--features v_ctx+a_ctx+v_cross_a] [--tasks relationship,scene] [--seeds 3]
                  [--probe linear|mlp] [--strict] [--k K] [--out results.parquet] [--set epochs=50]
    lmp-bench transfer --model RUN_ID_OR_PATH|none|base --store CLIP_STORE --labels TRANSFER_DIR [...]
    lmp-bench curve RUN_DIR --store CLIP_STORE --labels DIR [--tasks ...] [--seeds 3]

Prints the table in the paper's layout, writes a Parquet file and logs an MLflow run linked to the
pretraining run (disable with --no-mlflow). Exit status 1 with a one-line message on bad input. While the
probes train, stderr shows probes done / total, elapsed and ETA: a live bar on a terminal, else a plain line
per finished task (`lmp_bench.progress`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from lmp_bench.features import DEFAULT_FEATURES
from lmp_bench.progress import probe_progress


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="export folder, MLflow run id / runs:/ URI, or 'none'")
    p.add_argument("--store", required=True, help="clip feature store (one movie per clip)")
    p.add_argument("--labels", required=True, help="label folder")
    p.add_argument("--seeds", type=int, default=3, help="probe seeds 0..N-1 (default 3)")
    p.add_argument("--probe", choices=("linear", "mlp"), default="linear")
    p.add_argument("--k", type=int, default=None, help="eval window length (default: the model's k, else 30)")
    p.add_argument("--stride", type=int, default=None, help="eval window stride (default k)")
    p.add_argument("--batch-size", type=int, default=64, help="windows per encoder batch")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0 leaves torch's)")
    p.add_argument(
        "--model-config", default=None, help="model YAML of the random-init baseline (--model none)"
    )
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="ProbeConfig overrides")
    p.add_argument("--out", type=Path, default=None, help="Parquet output (default outputs/bench/...)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log an MLflow run")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: the pretraining run's)")
    p.add_argument(
        "--tracking-uri", default=None, help="default $MLFLOW_TRACKING_URI or sqlite:///<repo>/mlflow.db"
    )
    p.add_argument("-v", "--verbose", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmp-bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    lvu = sub.add_parser("lvu", help="LVU: probes on time-averaged features (paper Tables 1-4)")
    _common(lvu)
    lvu.add_argument("--features", default=DEFAULT_FEATURES, help=f"'+'-joined (default {DEFAULT_FEATURES})")
    lvu.add_argument("--tasks", default=None, help="comma-separated LVU tasks (default: all present)")
    lvu.add_argument(
        "--strict", action="store_true", help="labelled clips missing from the store are an error"
    )
    lvu.add_argument(
        "--scratch-epochs", type=int, default=2, help="--model scratch: end-to-end epochs (lmp_bench.scratch)"
    )
    lvu.set_defaults(func=run_lvu)
    tr = sub.add_parser("transfer", help="transfer tasks: AVE attributes, ordering, next shot, retrieval")
    _common(tr)
    tr.add_argument("--tasks", default=None, help="comma-separated transfer tasks (default: all present)")
    tr.add_argument(
        "--features",
        default=None,
        help="per-shot features, '+'-joined (default: the model's own; LMP v_ctx+a_ctx)",
    )
    tr.add_argument("--samples-per-clip", type=int, default=4, help="ordering / next-shot samples per clip")
    tr.set_defaults(func=run_transfer)
    _curve_parser(sub)
    return parser


def probe_config(head: str, overrides: list[str]):
    """`ProbeConfig(head=...)` with `key=value` overrides (OmegaConf dotlist, type-checked)."""
    from omegaconf import OmegaConf

    from lmp_bench.probe import ProbeConfig

    base = OmegaConf.structured(ProbeConfig(head=head))
    return OmegaConf.to_object(OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides))))


def _model_config(args):
    if args.model_config is None:
        return None
    from lmp_model.config import load_model_config

    return load_model_config(args.model_config)


def _model_arg(s: str):
    return None if s.lower() == "none" else s


def _out_path(args, kind: str) -> Path:
    if args.out is not None:
        return args.out
    from lmp_model.tracking import repo_root

    return repo_root() / "outputs" / "bench" / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.parquet"


def _pretrain_run(args) -> str | None:
    model = _model_arg(args.model)
    if model is None or (model == "base" and not Path(model).exists()):  # no model: no pretraining run
        return None
    return _resolve_model(model)[1].get("pretrain_run_id")


def run_lvu(args) -> int:
    from lmp_bench.api import evaluate_lvu

    probe = probe_config(args.probe, args.set)
    model = _model_arg(args.model)
    scratch = model is not None and model.lower() == "scratch" and not Path(model).exists()
    if model is not None and not scratch:
        model_obj, info = _resolve_model(model)
    else:
        model, model_obj, info = None, None, {}
    extra = {}
    if scratch:  # the paper's no-pretraining row: the architecture trained from scratch per task
        from lmp_bench.scratch import ScratchConfig

        extra = {
            "no_pretrain": "scratch",
            "scratch": ScratchConfig(epochs=args.scratch_epochs, threads=args.threads),
        }
    with probe_progress("lvu"):  # probes done / total, ETA: a bar on a terminal, else a line per task
        res = evaluate_lvu(
            model_obj,
            args.store,
            args.labels,
            features=args.features,
            tasks=args.tasks,
            seeds=args.seeds,
            probe=probe,
            k=args.k if args.k is not None else info.get("k"),
            stride=args.stride,
            batch_size=args.batch_size,
            threads=args.threads,
            strict=args.strict,
            model_config=_model_config(args),
            **extra,
        )
    text = res.format()
    print(text)
    out = res.write_parquet(_out_path(args, "lvu"))
    print(f"\nwrote {out}")
    if not args.no_mlflow:
        _log_lvu(args, res, text, out, probe, info, model)
    return 0


def _log_lvu(args, res, text: str, out: Path, probe, info: dict, model) -> None:
    """Log an LVU evaluation to MLflow (metrics per task, params, the report and the Parquet file)."""
    from lmp_bench.tracking import log_evaluation, lvu_metrics

    metrics, steps = lvu_metrics(res)
    params = {
        "model": args.model,
        "store": str(Path(args.store).resolve()),
        "labels": str(Path(args.labels).resolve()),
        "features": args.features,
        "tasks": args.tasks or "all",
        "seeds": args.seeds,
        "k": args.k or info.get("k") or "default",
        "probe": vars(probe),
    }
    run_id = log_evaluation(
        "lvu",
        metrics,
        params,
        text,
        [out],
        pretrain_run_id=info.get("pretrain_run_id"),
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        run_name=f"lvu {args.features}" if model is not None else "lvu no-pretraining",
        step_metrics=steps,
    )
    print(f"MLflow run {run_id}" if run_id else "MLflow: not logged (tracking unavailable)")


def run_transfer(args) -> int:
    from lmp_bench.tracking import log_evaluation
    from lmp_bench.transfer import evaluate_transfer

    probe = probe_config(args.probe, args.set)
    model = _model_arg(args.model)
    with probe_progress("transfer"):
        res = evaluate_transfer(
            model,
            args.store,
            args.labels,
            tasks=args.tasks,
            seeds=args.seeds,
            probe=probe,
            features=args.features,
            k=args.k,
            batch_size=args.batch_size,
            threads=args.threads,
            model_config=_model_config(args),
            samples_per_clip=args.samples_per_clip,
        )
    text = res.format()
    print(text)
    out = res.write_parquet(_out_path(args, "transfer"))
    print(f"\nwrote {out}")
    if not args.no_mlflow:
        run_id = log_evaluation(
            "transfer",
            res.metrics(),
            {
                "model": args.model,
                "store": str(Path(args.store).resolve()),
                "labels": args.labels,
                "seeds": args.seeds,
                "probe": vars(probe),
                "tasks": args.tasks or "all",
            },
            text,
            [out],
            pretrain_run_id=_pretrain_run(args),
            tracking_uri=args.tracking_uri,
            experiment=args.experiment,
            run_name="transfer",
        )
        print(f"MLflow run {run_id}" if run_id else "MLflow: not logged (tracking unavailable)")
    return 0


def _curve_parser(sub) -> None:
    cv = sub.add_parser(
        "curve", help="LVU probe on every snapshot of one pretraining run, logged to it against the step"
    )
    cv.add_argument("run", help="pretraining run folder (<out_dir>/<name>) or its snapshots/ folder")
    cv.add_argument("--store", required=True, help="clip feature store (one movie per clip)")
    cv.add_argument("--labels", required=True, help="LVU label folder")
    cv.add_argument("--features", default=DEFAULT_FEATURES, help=f"'+'-joined (default {DEFAULT_FEATURES})")
    cv.add_argument("--tasks", default=None, help="comma-separated LVU tasks (default: all present)")
    cv.add_argument("--seeds", type=int, default=3, help="probe seeds 0..N-1 (default 3)")
    cv.add_argument("--probe", choices=("linear", "mlp"), default="linear")
    cv.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="ProbeConfig overrides")
    cv.add_argument("--k", type=int, default=None, help="eval window length (default: the model's k)")
    cv.add_argument("--no-export", action="store_true", help="snapshots only, not the final export")
    cv.add_argument("--out-dir", type=Path, default=None, help="probe_curve.parquet/.png (default RUN)")
    cv.add_argument("--run-id", default="auto", help="MLflow run to log to (default: the run's own)")
    cv.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    cv.add_argument("--tracking-uri", default=None, help="default: the run's own, else the default")
    cv.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0 leaves torch's)")
    cv.add_argument("-v", "--verbose", action="store_true")
    cv.set_defaults(func=run_curve)


def run_curve(args) -> int:
    from lmp_bench.curve import format_curve, pretrain_run_id, probe_curve

    run_id = None if args.no_mlflow else args.run_id
    with probe_progress("curve"):
        df = probe_curve(
            args.run,
            args.store,
            args.labels,
            tasks=args.tasks,
            seeds=args.seeds,
            features=args.features,
            probe=probe_config(args.probe, args.set),
            mlflow_run_id=run_id,
            tracking_uri=args.tracking_uri,
            out_dir=args.out_dir,
            include_export=not args.no_export,
            k=args.k,
            threads=args.threads,
        )
    print(format_curve(df))
    out = args.out_dir or args.run
    print(f"\nwrote {Path(out) / 'probe_curve.parquet'}")
    if run_id is not None:
        rid = pretrain_run_id(args.run) if run_id == "auto" else run_id
        print(f"MLflow run {rid}: probe/* metrics by step" if rid else "MLflow: no run recorded; not logged")
    return 0


class ModelError(ValueError):
    """--model could not be resolved or loaded; the message names the value given."""


def _resolve_model(model: str):
    """`api.resolve_model`, its failures (unknown MLflow run, bad lmp.json, truncated weights) as one
    `ModelError` naming --model."""
    from lmp_bench.api import resolve_model

    try:
        return resolve_model(model)
    except Exception as e:  # MlflowException, SafetensorError, JSONDecodeError, OSError, ...
        raise ModelError(f"--model {model}: {type(e).__name__}: {e}") from e


def _report(args, exc: BaseException) -> int:
    """The one error report of every subcommand: one line, the traceback too with -v."""
    from lmp_data.cli import print_error

    print_error(f"lmp-bench {args.command}", exc, getattr(args, "verbose", False))
    return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lmp_data.console import quiet_known_warnings

    quiet_known_warnings()  # lmp_model imports DeepSpeed; on a machine without a GPU only
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from lmp_bench.lvu import LVUFormatError
    from lmp_bench.lvu_probe import MissingClipsError

    expected: tuple[type[BaseException], ...] = (
        LVUFormatError,
        MissingClipsError,
        OSError,
        ValueError,
        KeyError,  # unknown --tasks name
    )
    try:
        from lmp_data import StoreError

        expected += (StoreError,)
    except ImportError:  # pragma: no cover
        pass
    try:
        return int(args.func(args) or 0)
    except expected as e:
        return _report(args, e)


if __name__ == "__main__":
    sys.exit(main())
