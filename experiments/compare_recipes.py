"""The three pretraining recipes under one protocol: LMP, Movies2Scenes (M2S) and hierarchical mask
prediction (HSSL), beside the no-pretraining rows, on the same store, probes and budget.

Rows: no pretraining (base features; the LMP architecture frozen at its random init; trained from
scratch on each task), LMP, M2S, HSSL; each over the sweep's seeds (3 by default). One trial = one
pretraining through `lmp_model.pretrain.run` (the DeepSpeed engine of `lmp-pretrain`, recipe set by
`recipe=`) + the LVU linear probe on its export, one MLflow child run; a no-pretraining trial is the probe
(or the scratch training) alone. Same protocol for every row:
- budget: the sweep's pretraining config (demo.yaml at default scale) for every recipe, so every
  pretrained row runs the same optimizer steps of the same global batch on the same windows; each
  trial's pretraining wall time and steps are reported (results/budget.md, MLflow `compare/*`);
- width: HSSL's contextualiser and M2S's scene encoder take the LMP model's encoder size (d, layers,
  heads, ff_mult, dropout) from that config;
- probes: each recipe's own representation (`lmp_model.recipes.RECIPES[...].default_features`): LMP the
  sweep's probe.features (v_ctx+a_ctx+v_cross_a), HSSL v_ctx, M2S v_scene; same probe seeds;
- transfer tasks (`probe.transfer`, on by default here; `probe.transfer=false` leaves them out): per-shot
  attributes, shot ordering, next shot, zero-shot retrieval R@1 / median rank, on the same features and
  probe seed (`_sweep/transfer.py`); a task a model cannot do is n/a (retrieval needs LMP's joint
  video/audio/language space; the scratch row has no one model) -> results/transfer.md, table.md.
M2S is the paper's pipeline in one trial (experiments/pretrain_m2s.py's stages: shot -> movie -> scene
on scene pairs mined between metadata-similar movies), the sweep's optimizer steps split 0.2 / 0.2 / 0.6
over the stages (`M2S_BUDGET`); the trial's child run is the scene stage's, the earlier stages' runs are
untracked folders of the trial (their final losses and the mining summary are on the child run).
HSSL's shot tokens are video + audio.

    .venv/bin/python experiments/compare_recipes.py                 # default scale, demo data
    .venv/bin/python experiments/compare_recipes.py --scale smoke   # tiny, one seed (tests)
    .venv/bin/python experiments/compare_recipes.py --only lmp,hssl --seeds 0 1 2
    .venv/bin/python experiments/compare_recipes.py --resume        # continue the newest interrupted sweep
"""

from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path

from _sweep import work
from _sweep.cli import main as sweep_main
from _sweep.cli import select
from _sweep.runner import Stage
from _sweep.spec import TrialSpec

TABLE = "recipes"
TITLE = "Pretraining recipes under one protocol"
NO_PRETRAIN_ROWS = {"none-base": "base", "none-random": "random_init", "none-scratch": "scratch"}
ROWS = [  # slug, row label, recipe (None: no pretraining)
    ("none-base", "No pretraining: base features", None),
    ("none-random", "No pretraining: frozen random init", None),
    ("none-scratch", "No pretraining: scratch (supervised)", None),
    ("lmp", "LMP", "lmp"),
    ("m2s", "M2S (shot → movie → scene, mined pairs)", "m2s"),
    ("hssl", "HSSL (mask prediction)", "hssl"),
]


def as_recipe(recipe: str, cfg):
    """Row recipe: the sweep's pretraining config switched to `recipe` ("hssl" or "m2s"), its transformer
    as wide as LMP's (d, layers, heads, ff_mult, dropout of `model.encoder`) and its max_shots LMP's."""
    if recipe not in ("hssl", "m2s"):
        raise ValueError(
            f"as_recipe: 'hssl' or 'm2s' (LMP rows use the sweep's config as it is), got {recipe!r}"
        )
    if recipe == "hssl":
        cfg.recipe = "hssl"
        cfg.hssl.modalities = ["video", "audio"]
        cfg.hssl.max_shots = cfg.model.max_shots
        encoder = cfg.hssl.encoder
    else:
        cfg.recipe = "m2s"
        cfg.m2s.scene.pairs = "mined"
        cfg.data.views = 1  # same-movie window pairs are LMP's window term's positives; M2S wants none
        cfg.m2s.max_shots = cfg.model.max_shots
        encoder = cfg.m2s.scene.encoder
    for name in ("d", "layers", "heads", "ff_mult", "dropout"):
        setattr(encoder, name, getattr(cfg.model.encoder, name))
    return cfg


M2S_BUDGET = {"shot": 0.2, "movie": 0.2, "scene": 0.6}
"""M2S's stages and their share of the sweep's optimizer steps (experiments/pretrain_m2s.py's default)."""


def _pretrain_m2s(ctx):
    """M2S's stages one after the other, each from the previous one's export, together the sweep's
    optimizer steps; the last stage's MLflow run is the trial's child run. Returns (its PretrainResult,
    {stage: PretrainResult}, total steps)."""
    from pretrain_m2s import pipeline_steps, split_steps

    cfg = work.trial_config(ctx)
    steps = split_steps(pipeline_steps(cfg), dict(ctx.spec.stages or M2S_BUDGET))
    results, prev = {}, None
    for i, (stage, n) in enumerate(steps.items()):
        extra = [f"m2s.stage={stage}", f"train.steps={n}", "train.epochs=0", "train.ckpt_every=0"]
        extra += [f"train.init_from={prev}"] if prev else []
        last = i == len(steps) - 1
        if not last:
            extra.append(f"name={ctx.key}-{stage}")
        results[stage] = work._pretrain(ctx, extra=extra, track=last)
        prev = str(results[stage].export_dir)
    return results[stage], results, sum(steps.values())


def recipe_trial(ctx):
    """Pretrain with the row's recipe, probe its export with the row's features; times the pretraining."""
    import mlflow

    from lmp_model.export import load_pretrained

    t0 = time.perf_counter()
    stages = {}
    if ctx.spec.recipe == "m2s":
        result, stages, steps = _pretrain_m2s(ctx)
    else:
        result = work._pretrain(ctx)
        steps = result.steps
    wall = time.perf_counter() - t0
    features = work.probe_features(ctx)
    with ctx.start_child_run(run_id=result.mlflow_run_id) as run:
        if stages:
            _log_stages(stages)
        model = load_pretrained(result.export_dir)
        metrics = work._probe(ctx, model, features, method=ctx.spec.variant)
        work._log_probe(ctx, metrics, features)
        mlflow.log_metrics({"compare/pretrain_wall_s": wall, "compare/optimizer_steps": float(steps)})
        metrics |= work.transfer_columns(ctx, model, features)
    return {
        **metrics,
        "pretrain_wall_s": wall,
        "optimizer_steps": float(steps),
        "child_run_id": run.info.run_id,
        "export_dir": str(result.export_dir),
    }


def _log_stages(stages: dict) -> None:
    """On the active (last stage's) run: every stage's steps and final losses, the scene pairs' mining
    summary and table (artifacts `m2s/`)."""
    import json

    import mlflow

    for stage, res in stages.items():
        mlflow.log_metric(f"m2s/{stage}/steps", float(res.steps))
        for key, value in res.final_losses.items():
            mlflow.log_metric(f"m2s/{stage}/final_{key.replace('loss/', '').replace('/', '_')}", float(value))
    last = list(stages.values())[-1]
    info = Path(last.run_dir) / "scene_pairs.json"
    if info.is_file():
        mined = json.loads(info.read_text())
        mlflow.log_metrics(
            {f"m2s/mining/{k}": float(v) for k, v in mined.items() if isinstance(v, int | float)}
        )
        for name in ("scene_pairs.json", "scene_pairs.parquet"):
            mlflow.log_artifact(str(Path(last.run_dir) / name), "m2s")


def build(cfg, only):
    from lmp_model.recipes import RECIPES

    specs, columns = [], {}
    for order, (slug, label, recipe) in enumerate(ROWS):
        columns[label] = {"Recipe": recipe or "—"}
        for seed in cfg.seeds:
            row = dict(key=f"{slug}-s{seed}", slug=slug, variant=label, seed=seed, order=order)
            if recipe is None:
                specs.append(TrialSpec(**row, work=work.probe_only, no_pretrain=NO_PRETRAIN_ROWS[slug]))
                continue
            features = RECIPES[recipe].default_features.split("+") if recipe != "lmp" else None
            pretrain = partial(as_recipe, recipe) if recipe != "lmp" else None
            specs.append(
                TrialSpec(**row, work=recipe_trial, recipe=recipe, pretrain=pretrain, features=features)
            )
    return [Stage("trials", select(specs, only))], columns


def budget_markdown(sweep_dir: Path) -> str | None:
    """Per row: optimizer steps and pretraining wall time (mean ± std over seeds), from trials.parquet."""
    import polars as pl

    path = sweep_dir / "results" / "trials.parquet"
    if not path.is_file():
        return None
    trials = pl.read_parquet(path)
    if "pretrain_wall_s" not in trials.columns:
        return None
    rows = (
        trials.filter(pl.col("pretrain_wall_s").is_not_null())
        .group_by("variant", maintain_order=True)
        .agg(
            pl.col("order").first(),
            pl.col("optimizer_steps").mean().alias("steps"),
            pl.col("pretrain_wall_s").mean().alias("wall_mean"),
            pl.col("pretrain_wall_s").std().fill_null(0.0).alias("wall_std"),
            pl.len().alias("n"),
        )
        .sort("order")
    )
    lines = [
        "## Budget",
        "",
        "| Variant | Optimizer steps | Pretraining wall time (s) | Trials |",
        "|---|---|---|---|",
    ]
    for r in rows.iter_rows(named=True):
        lines.append(
            f"| {r['variant']} | {r['steps']:.0f} | {r['wall_mean']:.1f} ± {r['wall_std']:.1f} | {r['n']} |"
        )
    return "\n".join(lines) + "\n"


def _write_budget(out, cfg) -> None:
    """The budget table (steps, wall time) beside the sweep's table, on disk and on the parent run."""
    budget = budget_markdown(out.sweep_dir)
    if budget:
        (out.sweep_dir / "results" / "budget.md").write_text(budget)
        with open(out.sweep_dir / "results" / "table.md", "a") as f:
            f.write("\n" + budget)
        try:  # beside the parent run's table (the run has ended; artifacts can still be added)
            from mlflow.tracking import MlflowClient

            client = MlflowClient(out.tracking_uri)
            client.log_artifact(out.parent_run_id, str(out.sweep_dir / "results" / "budget.md"), "results")
        except Exception as e:  # noqa: BLE001 - the files on disk are the record
            print(f"[sweep] could not log budget.md to the parent run: {e}", flush=True)
        print(budget, flush=True)


def main(argv: list[str] | None = None) -> int:
    # this table has the transfer columns unless the command line says probe.transfer=false
    return sweep_main(
        TABLE,
        TITLE,
        __doc__.splitlines()[0],
        build,
        argv,
        label_columns=["Recipe"],
        overrides=["probe.transfer=true"],
        after=_write_budget,
    )


if __name__ == "__main__":
    sys.exit(main())
