"""The transfer tasks as columns of a sweep (`probe.transfer`): per-shot attributes (AVE-style), shot
ordering, next shot, zero-shot retrieval R@1 / median rank (`lmp_bench.transfer`, paper section 4.3).

A trial with `probe.transfer` on runs `lmp_bench.evaluate_transfer` on the model it probed, with the
same features as its LVU probe (the recipe's own representation; the base row its base features) and
its probe seed, on the transfer labels (`data.transfer_labels`; the demo's `transfer/` by default).
Its child run gets every transfer metric (`transfer/<task>/<metric>`), the trial reports the headline
`COLUMNS`, and a task the model cannot do is n/a with its reason (tag `transfer.na`, output
`transfer_na`): zero-shot retrieval needs video, audio and language features in one space (LMP's
v_ctx/a_ctx/l_ctx), which HSSL, M2S and the base features do not have; the scratch row trains one model
per LVU task, so there is no one model to transfer. `write_table` adds the columns to the sweep's
results (table.parquet, table.md, transfer.md, the parent run's Description).
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

from lmp_data.files import atomic_write

COLUMNS = (  # (trial metric, lmp_bench task, metric, scale, header)
    ("transfer/ave", "ave/average", "per_class_accuracy", 100.0, "Shot attributes ↑"),
    ("transfer/ordering", "ordering", "accuracy", 100.0, "Shot ordering ↑"),
    ("transfer/next_shot", "next_shot", "accuracy", 100.0, "Next shot ↑"),
    ("transfer/v2a_r1", "retrieval/scene->soundtrack", "R@1", 100.0, "Scene→sound R@1 ↑"),
    ("transfer/v2a_mdr", "retrieval/scene->soundtrack", "median_rank", 1.0, "Scene→sound MdR ↓"),
    ("transfer/a2v_r1", "retrieval/soundtrack->scene", "R@1", 100.0, "Sound→scene R@1 ↑"),
    ("transfer/a2v_mdr", "retrieval/soundtrack->scene", "median_rank", 1.0, "Sound→scene MdR ↓"),
    ("transfer/d2v_r1", "retrieval/description->scene", "R@1", 100.0, "Description→scene R@1 ↑"),
    ("transfer/d2v_mdr", "retrieval/description->scene", "median_rank", 1.0, "Description→scene MdR ↓"),
)
"""The table's transfer columns: accuracies and R@1 in %, median ranks as ranks (1 is best)."""

NA_KEY = "transfer_na"
SCRATCH_NA = "n/a: the scratch row trains one model per LVU task; there is no one model to transfer"


def enabled(ctx) -> bool:
    return bool(ctx.sweep.probe.transfer)


def labels_dir(data: dict[str, Any]) -> str | None:
    """The transfer labels folder: `data["transfer"]`, else a `transfer/` beside the LVU labels (the demo's
    layout; sweeps started before the transfer columns existed record no `transfer` path)."""
    if data.get("transfer"):
        return str(data["transfer"])
    labels = data.get("labels")
    if labels and (Path(labels).parent / "transfer").is_dir():
        return str(Path(labels).parent / "transfer")
    return None


def _mlflow_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)  # MLflow metric names: alphanumerics, _ - . space /


def run(ctx, model, features: list[str], no_pretrain: str | None = None, **kw) -> dict[str, Any]:
    """The transfer tasks on the trial's model (`model`; None with `no_pretrain` for the no-pretraining
    rows, `kw` = their `evaluate_lvu` arguments: model_config, k, init_seed). Logs to the active MLflow
    run; returns {column metric: value} for the tasks that ran and `transfer_na` naming the others."""
    import mlflow

    from lmp_bench.probe import ProbeConfig
    from lmp_bench.transfer import evaluate_transfer

    from .work import probe_seed

    probe = ctx.sweep.probe
    if no_pretrain == "scratch":
        na = dict.fromkeys((c[1] for c in COLUMNS), SCRATCH_NA)
        mlflow.set_tag("transfer.na", _na_text(na))
        return {NA_KEY: _na_text(na)}
    root = labels_dir(ctx.sweep.data)
    if root is None:
        why = "n/a: no transfer labels (data.transfer_labels)"
        mlflow.set_tag("transfer.na", why)
        return {NA_KEY: why}
    shot_features = [f for f in features if f != "l_ctx"]  # per token, not per shot
    if not shot_features:
        why = "n/a: the transfer tasks read per-shot features; l_ctx is per token"
        mlflow.set_tag("transfer.na", why)
        return {NA_KEY: why}
    args: dict[str, Any] = {}
    if no_pretrain == "base":
        model = "base"
    elif no_pretrain == "random_init":
        args = {"model_config": kw.get("model_config"), "init_seed": int(kw.get("init_seed") or 0)}
    if kw.get("k") is not None:
        args["k"] = int(kw["k"])
    pcfg = ProbeConfig(**(probe.transfer_probe or {}))
    t0 = time.perf_counter()
    res = evaluate_transfer(
        model,
        ctx.sweep.data["eval_store"],
        root,
        tasks=probe.transfer_tasks,
        seeds=[probe_seed(ctx)],
        probe=pcfg,
        features="+".join(shot_features),
        threads=ctx.sweep.threads,
        **{**args, **(probe.transfer_overrides or {})},
    )
    wall = time.perf_counter() - t0
    summary = {(r["task"], r["metric"]): r["mean"] for r in res.summary().iter_rows(named=True)}
    mlflow.log_metrics({_mlflow_name(f"transfer/{t}/{m}"): float(v) for (t, m), v in summary.items()})
    mlflow.log_metric("transfer/wall_s", wall)
    out: dict[str, Any] = {"transfer_wall_s": wall}
    for key, task, metric, scale, _ in COLUMNS:
        if (task, metric) in summary:
            out[key] = float(summary[(task, metric)]) * scale
    if res.skipped:
        out[NA_KEY] = _na_text(res.skipped)
        mlflow.set_tag("transfer.na", out[NA_KEY][:5000])
    return out


def _na_text(skipped: dict[str, str]) -> str:
    """ "task: reason; ..." with tasks of the same reason joined."""
    by_reason: dict[str, list[str]] = {}
    for task, why in skipped.items():
        by_reason.setdefault(why, []).append(task)
    return "; ".join(f"{', '.join(tasks)}: {why}" for why, tasks in by_reason.items())


# -------------------------------------------------------------------------------------------- the table
def summarize(rows: list[dict]) -> list[dict]:
    """One dict per variant (sweep order): `<column>` (mean, std, n) over its finished trials, or None
    when no trial has it, and `na` (the reasons the trials gave)."""
    out: dict[str, dict] = {}
    for r in sorted(rows, key=lambda r: r["order"]):
        row = out.setdefault(r["variant"], {"variant": r["variant"], "values": {}, "na": set()})
        if r["status"] != "ok":
            continue
        outputs = r.get("outputs") or {}
        for key, *_ in COLUMNS:
            v = outputs.get(key, (r.get("metrics") or {}).get(key))
            if isinstance(v, int | float) and math.isfinite(v):
                row["values"].setdefault(key, []).append(float(v))
        if outputs.get(NA_KEY):
            row["na"].add(str(outputs[NA_KEY]))
    res = []
    for row in out.values():
        item = {"variant": row["variant"], "na": "; ".join(sorted(row["na"]))}
        for key, *_ in COLUMNS:
            vals = row["values"].get(key, [])
            if vals:
                mean = sum(vals) / len(vals)
                std = (
                    math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
                )
                item[key] = (mean, std, len(vals))
            else:
                item[key] = None
        res.append(item)
    return res


def has_values(summary: list[dict]) -> bool:
    return any(item[key] is not None for item in summary for key, *_ in COLUMNS)


def markdown(summary: list[dict]) -> str:
    """The transfer columns, one row per variant (mean ± std over seeds; n/a where the model cannot do
    the task), and the reasons for the n/a cells."""
    head = ["Variant", *(c[4] for c in COLUMNS)]
    lines = [
        "## Transfer tasks",
        "",
        "Accuracies (shot attributes: mean per-class accuracy over the attributes) and R@1 in %, median rank",
        "(MdR) of the right clip among the test clips; mean ± std over seeds.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for item in summary:
        cells = [item["variant"]]
        for key, _, metric, *_ in COLUMNS:
            v = item[key]
            digits = 1 if metric == "median_rank" else 2
            cells.append("n/a" if v is None else f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {item['variant']}: {item['na']}" for item in summary if item["na"]]
    if notes:
        lines += ["", "n/a:", *notes]
    return "\n".join(lines) + "\n"


def column_name(key: str, stat: str) -> str:
    """table.parquet column of a transfer column's statistic: `transfer_ave_mean`, `transfer_v2a_r1_std`."""
    return f"{key.replace('/', '_')}_{stat}"


def write_table(outcome, title: str = "") -> str | None:
    """Add the transfer columns to a finished sweep's results: `<key>_mean` / `<key>_std` columns in
    results/table.parquet (null = n/a), a "Transfer tasks" section in table.md and transfer.md, both
    logged to the parent run, whose Description gets the section too. Returns the markdown (None: no
    trial ran the transfer tasks)."""
    import polars as pl
    from mlflow.tracking import MlflowClient

    summary = summarize(outcome.rows)
    if not has_values(summary):
        return None
    md = markdown(summary)
    res = Path(outcome.sweep_dir) / "results"
    table = res / "table.parquet"
    if table.is_file():
        frame = pl.read_parquet(table)
        by_variant = {item["variant"]: item for item in summary}
        cols = {}
        for key, *_ in COLUMNS:
            for i, stat in enumerate(("mean", "std")):
                cols[column_name(key, stat)] = pl.Series(
                    [
                        (by_variant.get(v) or {}).get(key)[i] if (by_variant.get(v) or {}).get(key) else None
                        for v in frame["variant"].to_list()
                    ],
                    dtype=pl.Float64,
                )
        cols["transfer_na"] = pl.Series([(by_variant.get(v) or {}).get("na", "") for v in frame["variant"]])
        frame = frame.with_columns(**cols)
        atomic_write(table, frame.write_parquet)
    (res / "transfer.md").write_text(md)
    with open(res / "table.md", "a") as f:
        f.write("\n" + md)
    try:  # the parent run has ended; artifacts and tags can still be added
        client = MlflowClient(outcome.tracking_uri)
        for name in ("transfer.md", "table.md", "table.parquet"):
            client.log_artifact(outcome.parent_run_id, str(res / name), "results")
        note = client.get_run(outcome.parent_run_id).data.tags.get("mlflow.note.content", "")
        client.set_tag(outcome.parent_run_id, "mlflow.note.content", f"{note}\n{md}" if note else md)
        for item in summary:
            slug = "".join(c if c.isalnum() or c in "._-" else "_" for c in item["variant"])
            for key, *_ in COLUMNS:
                if item[key] is not None:
                    client.log_metric(outcome.parent_run_id, f"{key}/{slug}", item[key][0])
    except Exception as e:  # noqa: BLE001 - the files on disk are the record
        print(f"[sweep] could not log the transfer table to the parent run: {e}", flush=True)
    return md
