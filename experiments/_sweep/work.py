"""What a trial does (the `work` of a trial spec): pretraining + LVU probe, pretraining only, probe only.

Pretraining goes through the same code path as `lmp-pretrain` (`lmp_model.pretrain.run`, DeepSpeed
engine at world size 1; it picks a free rendezvous port itself, so concurrent trials never collide)
and writes into the trial's own attempt folder. Its MLflow run *is* the trial's child run (nested
under the sweep's parent through `mlflow.parent_run_id`): per-step losses, params and the exported
weights (artifact `export/`) come from the pretraining code; the probe metrics are added to it.

"No pretraining" (Table 1, first row) is ambiguous under a linear-probe protocol: the paper trains the
model from scratch on each task. `no_pretrain` in the trial spec chooses: "random_init" (default) probes
the same features of the same architecture, frozen at its random initialisation; "base" probes the
base features v_base + a_base.
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
        seeds=[int(ctx.spec["seed"])],
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


def _log_probe(metrics: dict[str, float], features: list[str]) -> None:
    mlflow.log_metrics({f"probe/{k}": v for k, v in metrics.items()})
    mlflow.log_param("probe.features", "+".join(features))


def pretrain_and_probe(ctx: TrialContext) -> dict[str, Any]:
    """Table 1 / Table 2 trial: pretrain with the spec's overrides, then probe the exported model."""
    from lmp_model.export import load_pretrained

    result = _pretrain(ctx)
    features = list(ctx.spec.get("features") or ctx.sweep["probe"]["features"])
    with ctx.start_child_run(run_id=result.mlflow_run_id) as run:
        ctx.maybe_fail("probe")
        model = load_pretrained(result.export_dir)
        metrics = _probe(ctx, model, features)
        _log_probe(metrics, features)
    return {**metrics, "child_run_id": run.info.run_id, "export_dir": str(result.export_dir)}


def pretrain_only(ctx: TrialContext) -> dict[str, Any]:
    """Table 3, stage 1: the one pretrained model whose features the probe trials compare."""
    result = _pretrain(ctx)
    with ctx.start_child_run(run_id=result.mlflow_run_id) as run:
        ctx.maybe_fail("export")
    return {"child_run_id": run.info.run_id, "export_dir": str(result.export_dir)}


def _random_init_model(ctx: TrialContext):
    """The pretraining config's architecture at its seeded random initialisation, frozen; and its k."""
    from lmp_bench.api import open_store, random_model
    from lmp_model.pretrain import load_pretrain_config

    cfg = load_pretrain_config(ctx.sweep["pretrain_config"], [*ctx.sweep["pretrain_overrides"]])
    store = open_store(ctx.sweep["data"]["eval_store"])
    model = random_model(store, cfg.model, seed=int(ctx.spec["seed"]))
    model.encoders = store.encoders
    return model, cfg.data.k


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
            if mode not in ("random_init", "base"):
                raise ValueError(
                    f"trial {ctx.key}: no_pretrain must be 'random_init' or 'base', got {mode!r}"
                )
            mlflow.log_param("no_pretrain", mode)
            if mode == "base":
                model, features, kw = None, ["v_base", "a_base"], {"method": "no pretraining: base features"}
            else:
                model, kw["k"] = _random_init_model(ctx)
        metrics = _probe(ctx, model, features, **kw)
        _log_probe(metrics, features)
    return {**metrics, "child_run_id": run.info.run_id}
