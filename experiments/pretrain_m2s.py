"""Movies2Scenes' stages in one command: each stage an `lmp-pretrain` run starting from the previous export.

    python experiments/pretrain_m2s.py experiments/configs/pretrain/demo_m2s.yaml [key=value ...] \
        [--stages shot,movie,scene] [--budget shot=0.2,movie=0.2,scene=0.6] [--nproc 2] [--resume]

Stage s runs `lmp-pretrain CONFIG key=value ... name=<name>-<s> m2s.stage=<s> train.init_from=<previous
stage's export>` (under `torchrun --nproc_per_node N` with `--nproc N`), so every stage is an ordinary
run: DeepSpeed engine, checkpoints, `--resume`, its own MLflow run (tagged `m2s_pipeline=<name>`),
an export. The model holds every stage's modules under the same names, so a stage loads the previous
export strictly; only the current stage's modules train.

The paper's pipeline: shot (E_shot, neighbouring shots) -> movie (E_movie + L_output on movie pairs,
similar / not similar by metadata) -> scene (MoCo on the scene pairs mined with E_movie between similar
movies: the scene stage mines them from the movie stage's export when it starts, into its run folder's
`scene_pairs.parquet`; `m2s.scene.pairs=split|mixed` for the other positives). Data of each stage:
`lmp_model.recipes.m2s_data`.

Budget: the config's `train.steps` (or the steps its `train.epochs` make for one LMP run of the same
data and batch) is the whole pipeline's, split over the stages by `--budget` (default shot 0.2, movie
0.2, scene 0.6; the last stage gets the rounding), so M2S spends exactly the optimizer steps of one LMP
run of the same config. A stage whose export exists is skipped; `--resume` continues an interrupted stage.

Prints one JSON line: the stages' run folders, exports, MLflow run ids and wall times; the last export is
the pipeline's (`lmp-bench lvu --model <export>` probes its v_scene).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from lmp_model.pretrain.config import ConfigError, load_pretrain_config
from lmp_model.pretrain.dist import launch_command

DEFAULT_BUDGET = {"shot": 0.2, "movie": 0.2, "scene": 0.6}
RUNNABLE = ("shot", "movie", "scene")
DEFAULT_STAGES = "shot,movie,scene"


def parse_budget(text: str, stages: list[str]) -> dict[str, float]:
    """ "shot=0.25,scene=0.75" -> fractions for `stages` (missing ones from DEFAULT_BUDGET), summing to 1."""
    given: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        try:
            given[key] = float(value)
        except ValueError:
            raise ValueError(f"--budget {text!r}: expected stage=fraction pairs, got {part!r}") from None
    bad = [s for s in given if s not in stages]
    if bad:
        raise ValueError(f"--budget {text!r}: stages {bad} are not in --stages {','.join(stages)}")
    frac = {s: given.get(s, DEFAULT_BUDGET.get(s, 0.0)) for s in stages}
    total = sum(frac.values())
    if total <= 0 or any(v <= 0 for v in frac.values()):
        raise ValueError(f"--budget {text!r}: every stage needs a fraction > 0, got {frac}")
    return {s: v / total for s, v in frac.items()}


def pipeline_steps(cfg, world: int = 1) -> int:
    """The optimizer steps of one run of `cfg`: `train.steps`, else what `train.epochs` gives one LMP run
    (windows per epoch = data.windows_per_epoch or ceil(shots of the run's movies / k); lmp_model.pretrain)."""
    t = cfg.train
    if t.steps:
        return int(t.steps)
    from lmp_data import FeatureStore
    from lmp_model.pretrain.data import resolve_store, select_movies

    store = FeatureStore.open(resolve_store(cfg.data, True, lambda: None))
    ids = set(select_movies(store, cfg.data))
    manifest = store.movies()
    shots = sum(n for m, n in zip(manifest["movie_id"].to_list(), manifest["n_shots"].to_list()) if m in ids)
    per_epoch = cfg.data.windows_per_epoch or -(-int(shots) // cfg.data.k)
    global_batch = t.global_batch or t.micro_batch * world
    accum = max(1, global_batch // (t.micro_batch * world))
    return max(1, int(t.epochs * ((per_epoch // world) // t.micro_batch) / accum))


def split_steps(total: int, budget: dict[str, float]) -> dict[str, int]:
    """`total` optimizer steps over the stages by fraction (each >= 1; the last stage takes the rounding)."""
    stages = list(budget)
    out = {s: max(1, round(total * budget[s])) for s in stages[:-1]}
    out[stages[-1]] = max(1, total - sum(out.values()))
    return out


def stage_overrides(cfg, stage: str, steps: int, prev_export: str | None) -> list[str]:
    """The overrides that make `cfg` stage `stage` of the pipeline, `steps` optimizer steps long."""
    out = [f"name={cfg.name}-{stage}", f"m2s.stage={stage}", f"mlflow.tags.m2s_pipeline={cfg.name}"]
    out += [f"train.steps={steps}", "train.epochs=0"]
    if prev_export is not None:
        out.append(f"train.init_from={prev_export}")
    return out


def command(config: str, overrides: list[str], nproc: int, resume: bool) -> list[str]:
    args = [config, *overrides] + (["--resume"] if resume else [])
    return launch_command(args, nproc)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Movies2Scenes stages (shot -> scene) as chained lmp-pretrain runs",
        epilog=__doc__.split("\n\n", 2)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "config", help="pretrain YAML with recipe: m2s, e.g. experiments/configs/pretrain/demo_m2s.yaml"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--stages", default=DEFAULT_STAGES, help=f"stages in order (default {DEFAULT_STAGES})")
    p.add_argument(
        "--budget",
        default="",
        help="fraction of the config's steps per stage (default shot=0.2,movie=0.2,scene=0.6)",
    )
    p.add_argument("--nproc", type=int, default=1, help="ranks per stage (torchrun; default 1)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted stage")
    args = p.parse_args(argv)
    return args


def _plan(args: argparse.Namespace):
    """(stages, config, optimizer steps per stage) of the command line; ConfigError/ValueError/OSError if
    it does not make an M2S pipeline."""
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in RUNNABLE]
    if bad or not stages:
        raise ValueError(f"--stages {args.stages!r}: runnable stages are {RUNNABLE}")
    budget = parse_budget(args.budget, stages)
    cfg = load_pretrain_config(args.config, args.overrides)
    if cfg.recipe != "m2s":
        raise ValueError(f"{args.config}: recipe is {cfg.recipe!r}; this runs recipe 'm2s' (set recipe=m2s)")
    steps = split_steps(pipeline_steps(cfg, args.nproc), budget)
    return stages, cfg, steps


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        stages, cfg, steps = _plan(args)
    except (ConfigError, ValueError, OSError) as e:
        print(f"pretrain_m2s: error: {e}", file=sys.stderr)
        return 2
    if (
        "scene" in stages
        and cfg.m2s.scene.pairs != "split"
        and "movie" not in stages[: stages.index("scene")]
    ):
        print("pretrain_m2s: warning: the scene stage mines its pairs with E_movie, which no movie stage "
              "trains before it here (mining from the weights it starts from)", file=sys.stderr)  # fmt: skip
    prev: str | None = cfg.train.init_from or None
    done = []
    for stage in stages:
        over = stage_overrides(cfg, stage, steps[stage], prev)
        run_dir = (cfg.run_dir.parent / f"{cfg.name}-{stage}").resolve()
        export = run_dir / "export"
        t0 = time.perf_counter()
        if (export / "lmp.json").is_file():
            print(f"pretrain_m2s: stage {stage}: {export} exists, skipped", file=sys.stderr, flush=True)
            summary = {"run_dir": str(run_dir), "export_dir": str(export), "skipped": True}
        else:
            print(f"pretrain_m2s: stage {stage}: {' '.join(over)}", file=sys.stderr, flush=True)
            proc = subprocess.run(
                command(args.config, [*args.overrides, *over], args.nproc, args.resume),
                stdout=subprocess.PIPE,
                text=True,
            )
            lines = [line for line in proc.stdout.splitlines() if line.startswith('{"run_dir"')]
            if proc.returncode != 0 or not lines:
                print(f"pretrain_m2s: error: stage {stage} failed (exit {proc.returncode}); rerun with --resume",
                      file=sys.stderr)  # fmt: skip
                return proc.returncode or 1
            summary = json.loads(lines[-1])
        summary |= {"stage": stage, "wall_s": round(time.perf_counter() - t0, 1)}
        done.append(summary)
        prev = summary["export_dir"]
    print(json.dumps({"export_dir": prev, "stages": done}), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
