"""What a trial does (the `work` of a trial spec): pretraining + LVU probe, pretraining only, probe only.

Pretraining goes through the same code path as `lmp-pretrain` (`lmp_model.pretrain.run`, DeepSpeed
engine at world size 1; it picks a free rendezvous port itself, so concurrent trials never collide)
and writes into the trial's own attempt folder. Its MLflow run *is* the trial's child run (nested
under the sweep's parent through `mlflow.parent_run_id`): per-step losses, params and the exported
weights (artifact `export/`) come from the pretraining code; the probe metrics are added to it.

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

from typing import Any

import mlflow

from .trial import TrialContext

GROUP_KEYS = ("content", "metadata", "user")


def _pretrain(ctx: TrialContext):
    """Run pretraining for this trial; returns lmp_model's PretrainResult."""
    from lmp_model.pretrain import load_pretrain_config, run

    seed = int(ctx.spec["seed"])
    overrides = [
        *ctx.sweep["pretrain_overrides"],
        *ctx.spec.get("pretrain_overrides", []),
        f"train.seed={seed}",
        f"name={ctx.key}",
        f"train.out_dir={ctx.dir}",
        f"data.store={ctx.sweep['data']['store']}",
    ]
    cfg = load_pretrain_config(ctx.sweep["pretrain_config"], overrides)
    threads = int(ctx.sweep.get("cpus_per_trial") or 1)
    cfg.train.threads = max(1, threads)
    cfg.mlflow.enabled = True
    cfg.mlflow.tracking_uri = ctx.sweep["tracking_uri"]
    cfg.mlflow.experiment = ctx.sweep["experiment_name"]
    cfg.mlflow.parent_run_id = ctx.sweep["parent_run_id"]
    cfg.mlflow.run_name = f"{ctx.key}#{ctx.attempt}"
    cfg.mlflow.tags = {**cfg.mlflow.tags, **ctx.run_tags()}
    cfg.mlflow.log_weights = True
    result = run(cfg)
    if not result.mlflow_run_id:
        raise RuntimeError(
            f"trial {ctx.key}: pretraining finished without an MLflow run (tracking store "
            f"{ctx.sweep['tracking_uri']} unreachable?); the sweep needs one child run per trial"
        )
    return result


def probe_seed(ctx: TrialContext) -> int:
    """The trial's probe seed: its pretraining seed + `probe.seed_offset` (the spec may set its own)."""
    if ctx.spec.get("probe_seed") is not None:
        return int(ctx.spec["probe_seed"])
    return int(ctx.spec["seed"]) + int(ctx.sweep["probe"].get("seed_offset", 1000))


def _probe(ctx: TrialContext, model, features: list[str], **kw) -> dict[str, float]:
    """LVU linear probes on the frozen model's time-averaged features; group averages + per task."""
    from lmp_bench import evaluate_lvu

    probe = ctx.sweep["probe"]
    data = ctx.sweep["data"]
    res = evaluate_lvu(
        model,
        data["eval_store"],
        data["labels"],
        features=features,
        tasks=probe.get("tasks"),
        seeds=[probe_seed(ctx)],
        threads=max(1, int(ctx.sweep.get("cpus_per_trial") or 1)),
        **{**kw, **(probe.get("overrides") or {})},
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


def _log_probe(ctx: TrialContext, metrics: dict[str, float], features: list[str]) -> None:
    mlflow.log_metrics({f"probe/{k}": v for k, v in metrics.items()})
    mlflow.log_params({"probe.features": "+".join(features), "probe.seed": probe_seed(ctx)})


def pretrain_and_probe(ctx: TrialContext) -> dict[str, Any]:
    """Table 1 / Table 2 trial: pretrain with the spec's overrides, then probe the exported model."""
    from lmp_model.export import load_pretrained

    result = _pretrain(ctx)
    features = list(ctx.spec.get("features") or ctx.sweep["probe"]["features"])
    with ctx.start_child_run(run_id=result.mlflow_run_id) as run:
        ctx.maybe_fail("probe")
        model = load_pretrained(result.export_dir)
        metrics = _probe(ctx, model, features)
        _log_probe(ctx, metrics, features)
    return {**metrics, "child_run_id": run.info.run_id, "export_dir": str(result.export_dir)}


def pretrain_only(ctx: TrialContext) -> dict[str, Any]:
    """Table 3, stage 1: the one pretrained model whose features the probe trials compare."""
    result = _pretrain(ctx)
    with ctx.start_child_run(run_id=result.mlflow_run_id) as run:
        ctx.maybe_fail("export")
    return {"child_run_id": run.info.run_id, "export_dir": str(result.export_dir)}


def _no_pretrain_kw(ctx: TrialContext, mode: str) -> dict[str, Any]:
    """evaluate_lvu's arguments for a no-pretraining row: the pretraining config's architecture and k,
    initialised with the trial's seed (lmp_bench builds the model: `lmp_bench.api.random_model`)."""
    from omegaconf import OmegaConf

    from lmp_bench.api import NO_PRETRAIN
    from lmp_bench.scratch import ScratchConfig
    from lmp_model.pretrain import load_pretrain_config

    cfg = load_pretrain_config(ctx.sweep["pretrain_config"], [*ctx.sweep["pretrain_overrides"]])
    kw: dict[str, Any] = {
        "no_pretrain": mode,
        "method": NO_PRETRAIN[mode],
        "model_config": cfg.model,
        "k": cfg.data.k,
        "init_seed": int(ctx.spec["seed"]),
    }
    if mode == "scratch":
        sc = OmegaConf.merge(OmegaConf.structured(ScratchConfig), ctx.sweep["probe"].get("scratch") or {})
        kw["scratch"] = OmegaConf.to_object(sc)
        kw["scratch"].threads = max(1, int(ctx.sweep.get("cpus_per_trial") or 1))
    return kw


def probe_only(ctx: TrialContext) -> dict[str, Any]:
    """No-pretraining row (Table 1) or a feature combination of one pretrained model (Table 3)."""
    from lmp_model.export import load_pretrained

    features = list(ctx.spec.get("features") or ctx.sweep["probe"]["features"])
    with ctx.start_child_run() as run:
        mlflow.log_params({"trial.variant": ctx.spec["variant"], "trial.seed": ctx.spec["seed"]})
        ctx.maybe_fail("probe")
        kw: dict[str, Any] = {}
        if ctx.spec.get("from_export"):
            mlflow.log_param("pretrained_from", ctx.spec["from_export"])
            model = load_pretrained(ctx.spec["from_export"])
        else:
            mode = ctx.spec.get("no_pretrain", "random_init")
            if mode not in ("random_init", "base", "scratch"):
                raise ValueError(
                    f"trial {ctx.key}: no_pretrain must be 'random_init', 'base' or 'scratch', got {mode!r}"
                )
            mlflow.log_param("no_pretrain", mode)
            model, kw = None, _no_pretrain_kw(ctx, mode)
            if mode == "base":
                features = ["v_base", "a_base"]
        metrics = _probe(ctx, model, features, **kw)
        _log_probe(ctx, metrics, features)
    return {**metrics, "child_run_id": run.info.run_id}
