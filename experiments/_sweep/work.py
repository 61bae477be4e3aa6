"""What a trial does (the `work` function of a `TrialSpec`): pretraining + LVU probe, pretraining only, probe only.

Pretraining goes through the same code path as `lmp-pretrain` (`lmp_model.pretrain.run`, DeepSpeed
engine at world size 1; it picks a free rendezvous port itself, so concurrent trials never collide)
and writes into the trial's own attempt folder. Its MLflow run *is* the trial's child run (nested
under the sweep's parent through `mlflow.parent_run_id`): per-step losses, params and the exported
weights (artifact `export/`) come from the pretraining code; the probe metrics are added to it.

What the MLflow UI shows of a trial: its child run is named after its row and seed ("w/o L_intra · seed
0"); its Description (mlflow.note.content) gives the probe scores, the probe over pretraining and, from the
pretraining code, each loss term beside its chance level with the loss plot. The probe over pretraining:
with `probe.curve_every = N` a pretrained trial keeps weights every N steps (and at step 0, the random
initialisation) and probes each the way it probes the final model; the scores are the child run's
`probe/*` metrics against the pretraining step, the final probe at the last step. Table 3's probe trials
link the run that pretrained their model instead of copying its curves.

"No pretraining" rows (Table 1): `no_pretrain` in the trial spec names one of lmp_bench's baselines
(`lmp_bench.api.NO_PRETRAIN`), built by lmp_bench for the pretraining config's architecture and k:
"random_init" (default) probes the architecture frozen at its random initialisation (seeded by the
trial's seed), "base" probes the base features v_base + a_base, "scratch" trains the architecture from
scratch on each task (the paper's row, `lmp_bench.scratch`).

Seeds: a trial's `seed` is its pretraining seed (and the random initialisation of a no-pretraining
model); its probe seed is `probe_seed(ctx)` = seed + `probe.seed_offset` (default 1000), so probe
and pretraining randomness are independent, and every row of a table uses the same probe seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow

from .trial import TrialContext

GROUP_KEYS = ("content", "metadata", "user")
NOTE_TAG = "mlflow.note.content"  # a run's Description in the MLflow UI


def curve_every(ctx: TrialContext) -> int:
    """Pretraining steps between the points of the trial's probe-over-training curve (0: no curve)."""
    return max(0, int(ctx.sweep.probe.curve_every or 0))


def _pretrain(ctx: TrialContext, snapshots: bool = False, extra: Sequence[str] = (), track: bool = True):
    """Run pretraining for this trial; returns lmp_model's PretrainResult. `snapshots`: keep weights every
    `probe.curve_every` steps (and at step 0) for the probe-over-training curve. `extra`: overrides on top
    (a stage of a multi-stage recipe: its name, steps, init_from); `track=False`: no MLflow run (an
    earlier stage; the trial's child run is its last pretraining's)."""
    from lmp_model.pretrain import run

    trial = [f"train.seed={int(ctx.spec.seed)}", f"name={ctx.key}", f"train.out_dir={ctx.dir}"]
    if snapshots and curve_every(ctx):
        trial.append(f"train.snapshot_every={curve_every(ctx)}")
    cfg = trial_config(ctx, [*trial, *extra])
    cfg.train.threads = ctx.sweep.threads
    cfg.mlflow.enabled = track
    cfg.mlflow.tracking_uri = ctx.sweep.tracking_uri
    cfg.mlflow.experiment = ctx.sweep.experiment_name
    cfg.mlflow.parent_run_id = ctx.sweep.parent_run_id
    cfg.mlflow.run_name = ctx.run_name
    cfg.mlflow.tags = {**cfg.mlflow.tags, **ctx.run_tags()}
    cfg.mlflow.log_weights = True
    result = run(cfg)
    if track and not result.mlflow_run_id:
        raise RuntimeError(
            f"trial {ctx.key}: pretraining finished without an MLflow run (tracking store "
            f"{ctx.sweep.tracking_uri} unreachable?); the sweep needs one child run per trial"
        )
    return result


def trial_config(ctx: TrialContext, overrides: Sequence[str] = ()):
    """The trial's typed `PretrainConfig`: the sweep's config (its YAML + `pretrain_overrides`), the row's
    recipe function (`TrialSpec.pretrain`) on it, then the sweep's store and `overrides` (the trial's seed,
    folder, a stage's steps), validated (`lmp_model.pretrain.with_overrides`)."""
    from lmp_model.pretrain import load_pretrain_config, with_overrides

    cfg = load_pretrain_config(ctx.sweep.pretrain_config, [*ctx.sweep.pretrain_overrides])
    if ctx.spec.pretrain is not None:
        cfg = ctx.spec.pretrain(cfg)
    return with_overrides(cfg, [f"data.store={ctx.sweep.data['store']}", *overrides])


def probe_features(ctx: TrialContext) -> list[str]:
    """The features the trial probes: its spec's, else the sweep's `probe.features`."""
    return list(ctx.spec.features or ctx.sweep.probe.features)


def probe_seed(ctx: TrialContext) -> int:
    """The trial's probe seed: its pretraining seed + `probe.seed_offset` (the spec may set its own)."""
    if ctx.spec.probe_seed is not None:
        return int(ctx.spec.probe_seed)
    return int(ctx.spec.seed) + int(ctx.sweep.probe.seed_offset)


def _probe(ctx: TrialContext, model, features: list[str], **kw) -> dict[str, float]:
    """LVU linear probes on the frozen model's time-averaged features; group averages + per task."""
    from lmp_bench import evaluate_lvu

    probe = ctx.sweep.probe
    data = ctx.sweep.data
    res = evaluate_lvu(
        model,
        data["eval_store"],
        data["labels"],
        features=features,
        tasks=probe.tasks,
        seeds=[probe_seed(ctx)],
        threads=ctx.sweep.threads,
        **{**kw, **(probe.overrides or {})},
    )
    groups = res.group_means(kw.get("method"))
    out = {g: float(groups[g]) for g in GROUP_KEYS if g in groups}
    for r in res.per_task().iter_rows(named=True):
        out[f"lvu/{r['task']}"] = float(r["mean"])
    missing = [g for g in GROUP_KEYS if g not in out]
    if missing:
        raise RuntimeError(
            f"trial {ctx.key}: LVU probe gave no score for group(s) {missing} (skipped: {res.skipped})"
        )
    return out


def transfer_columns(ctx: TrialContext, model, features: list[str], **kw) -> dict[str, Any]:
    """With `probe.transfer`: the transfer tasks on the trial's model, logged to the active run; their
    columns (`_sweep/transfer.py`), or {} when the sweep does not ask for them."""
    from . import transfer

    return transfer.run(ctx, model, features, **kw) if transfer.enabled(ctx) else {}


def _log_probe(ctx: TrialContext, metrics: dict[str, float], features: list[str], step: int = 0) -> None:
    """The table's probe scores on the active child run, at `step` (a pretrained row: its last
    pretraining step, the end of its probe-over-training curve)."""
    mlflow.log_metrics({f"probe/{k}": v for k, v in metrics.items()}, step=step)
    mlflow.log_params({"probe.features": "+".join(features), "probe.seed": probe_seed(ctx)})


def _probe_curve(ctx: TrialContext, result, features: list[str], **kw) -> list[dict[str, float]]:
    """The probe over pretraining: every snapshot before the last step (step 0 = the random
    initialisation), probed exactly as the final model is (`_probe`: same features, tasks, probe seed),
    logged to the active child run as `probe/*` against the pretraining step. The final point is the
    table's own probe, logged by `_log_probe` at the last step. Returns one dict per snapshot."""
    from lmp_bench.curve import SNAPSHOTS, find_points
    from lmp_model.export import load_pretrained

    if not curve_every(ctx) or not (Path(result.run_dir) / SNAPSHOTS).is_dir():
        return []
    points = []
    for p in find_points(result.run_dir, include_export=False):
        if p.step >= result.steps:
            continue
        m = _probe(ctx, load_pretrained(p.path), features, **kw)
        mlflow.log_metrics({f"probe/{k}": v for k, v in m.items()}, step=p.step)
        points.append({"step": p.step, **m})
    return points


def _run_link(ctx: TrialContext, run_id: str) -> str:
    return f"#/experiments/{ctx.sweep.experiment_id}/runs/{run_id}?workflowType=machine_learning"


def _describe(
    ctx: TrialContext,
    run_id: str,
    metrics: dict[str, float],
    features: list[str],
    curve: list[dict[str, float]] | None = None,
    steps: int | None = None,
    extra: str = "",
) -> None:
    """The child run's Description (mlflow.note.content): its row, seed and probe scores, the probe
    over pretraining (its points; the charts are under Model metrics -> probe), then what the
    pretraining run wrote there (loss per term beside its chance level). Never raises."""
    try:
        client = mlflow.MlflowClient(ctx.sweep.tracking_uri)
        before = client.get_run(run_id).data.tags.get(NOTE_TAG, "")
        score = ", ".join(
            f"{g.capitalize()} {metrics[g]:.{3 if g == 'user' else 2}f}" for g in GROUP_KEYS if g in metrics
        )
        lines = [
            f"**{ctx.spec.variant}**, seed {ctx.spec.seed} (probe seed {probe_seed(ctx)}), trial "
            f"`{ctx.key}` attempt {ctx.attempt} of sweep run [{ctx.sweep.parent_run_id}]"
            f"({_run_link(ctx, ctx.sweep.parent_run_id)})",
            "",
            f"**LVU probe** ({'+'.join(features)}): {score}.",
        ]
        if extra:
            lines += ["", extra]
        if curve:
            final = [{"step": steps, **metrics}] if steps is not None else []
            lines += [
                "",
                "**Probe over pretraining** (Model metrics -> probe: the same scores against the step; "
                "step 0 = the random initialisation):",
                "",
                "| Step | Content ↑ | Metadata ↑ | User ↓ |",
                "|---|---|---|---|",
            ]
            for pt in [*curve, *final]:
                cells = [f"{pt[g]:.{3 if g == 'user' else 2}f}" if g in pt else "—" for g in GROUP_KEYS]
                lines.append(f"| {pt['step']} | " + " | ".join(cells) + " |")
        if before:
            lines += ["", before]
        client.set_tag(run_id, NOTE_TAG, "\n".join(lines) + "\n")
    except Exception as e:  # noqa: BLE001 - the Description is a convenience; the metrics are the record
        print(f"[trial {ctx.key}] could not write the run's Description: {type(e).__name__}: {e}", flush=True)


def pretrain_and_probe(ctx: TrialContext) -> dict[str, Any]:
    """Table 1 / Table 2 trial: pretrain with the spec's overrides, then probe the exported model."""
    from lmp_model.export import load_pretrained

    result = _pretrain(ctx, snapshots=True)
    features = probe_features(ctx)
    with ctx.start_child_run(run_id=result.mlflow_run_id) as run:
        curve = _probe_curve(ctx, result, features)
        model = load_pretrained(result.export_dir)
        metrics = _probe(ctx, model, features)
        _log_probe(ctx, metrics, features, step=result.steps)
        metrics |= transfer_columns(ctx, model, features)
    _describe(ctx, run.info.run_id, metrics, features, curve, result.steps)
    return {**metrics, "child_run_id": run.info.run_id, "export_dir": str(result.export_dir)}


def pretrain_only(ctx: TrialContext) -> dict[str, Any]:
    """Table 3, stage 1: the one pretrained model whose features the probe trials compare."""
    result = _pretrain(ctx)
    return {"child_run_id": result.mlflow_run_id, "export_dir": str(result.export_dir)}


def _no_pretrain_kw(ctx: TrialContext, mode: str) -> dict[str, Any]:
    """evaluate_lvu's arguments for a no-pretraining row: the pretraining config's architecture and k,
    initialised with the trial's seed (lmp_bench builds the model: `lmp_bench.api.random_model`)."""
    from omegaconf import OmegaConf

    from lmp_bench.api import NO_PRETRAIN
    from lmp_bench.scratch import ScratchConfig

    cfg = trial_config(ctx)
    kw: dict[str, Any] = {
        "no_pretrain": mode,
        "method": NO_PRETRAIN[mode],
        "model_config": cfg.model,
        "k": cfg.data.k,
        "init_seed": int(ctx.spec.seed),
    }
    if mode == "scratch":
        sc = OmegaConf.merge(OmegaConf.structured(ScratchConfig), ctx.sweep.probe.scratch or {})
        kw["scratch"] = OmegaConf.to_object(sc)
        kw["scratch"].threads = ctx.sweep.threads
    return kw


def probe_only(ctx: TrialContext) -> dict[str, Any]:
    """No-pretraining row (Table 1) or a feature combination of one pretrained model (Table 3)."""
    from lmp_bench.api import NO_PRETRAIN
    from lmp_model.export import load_pretrained

    features = probe_features(ctx)
    with ctx.start_child_run() as run:
        mlflow.log_params({"trial.variant": ctx.spec.variant, "trial.seed": ctx.spec.seed})
        kw: dict[str, Any] = {}
        extra = ""
        if ctx.spec.from_export:
            mlflow.log_param("pretrained_from", ctx.spec.from_export)
            model = load_pretrained(ctx.spec.from_export)
            source = _pretrain_run_of(ctx.spec.from_export)
            if source:  # its loss curves live on the pretraining run: a link, not a copy
                mlflow.set_tag("lmp.pretrain_run_id", source)
                extra = (
                    f"Features of the model pretrained in run [{source}]({_run_link(ctx, source)}) "
                    "(its loss curves and per-term chance levels are there)."
                )
        else:
            mode = ctx.spec.no_pretrain or "random_init"
            if mode not in NO_PRETRAIN:
                raise ValueError(
                    f"trial {ctx.key}: no_pretrain must be one of {list(NO_PRETRAIN)}, not {mode!r}"
                )
            mlflow.log_param("no_pretrain", mode)
            model, kw = None, _no_pretrain_kw(ctx, mode)
            if mode == "base":
                features = ["v_base", "a_base"]
            extra = f"No pretraining (`{mode}`): no pretraining run, so no loss or probe-over-training curve."
        metrics = _probe(ctx, model, features, **kw)
        _log_probe(ctx, metrics, features)
        metrics |= transfer_columns(ctx, model, features, **kw)
    _describe(ctx, run.info.run_id, metrics, features, extra=extra)
    return {**metrics, "child_run_id": run.info.run_id}


def _pretrain_run_of(export_dir: str) -> str | None:
    """The MLflow run id an export records (its pretraining run), or None."""
    from lmp_model.export import load_info

    try:
        meta = load_info(export_dir).get("meta") or {}
    except (OSError, ValueError):
        return None
    return str(meta["mlflow_run_id"]) if meta.get("mlflow_run_id") else None
