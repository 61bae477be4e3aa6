"""MLflow logging of an evaluation, linked to the pretraining run it evaluated.

The run records params (model source, features, tasks, seeds, probe config), per-task metrics
(`lvu/<task>` mean over seeds, `lvu/<task>.std`, every seed as a step of `lvu/<task>/seed`), the group
averages (`lvu/content`, ...), and the printed table and the Parquet file as artifacts. When the
pretraining run is known and exists in the tracking store, the evaluation run is created in the same
experiment as its child (`mlflow.parentRunId`), so the UI nests it; the tag `lmp.pretrain_run_id` is
set either way. Tracking failures are logged as warnings and never fail an evaluation (the results
are on disk anyway). Uses `lmp_model.tracking` (default URI `sqlite:///<repo>/mlflow.db`, overridden
by `MLFLOW_TRACKING_URI`).
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "lmp-bench"
PRETRAIN_TAG = "lmp.pretrain_run_id"


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_")


def _pretrain_experiment(uri: str, run_id: str | None) -> str | None:
    """Name of the experiment holding the pretraining run, or None if it is not in this store."""
    if not run_id:
        return None
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        run = client.get_run(run_id)
        return client.get_experiment(run.info.experiment_id).name
    except Exception as e:  # noqa: BLE001
        log.warning("pretraining run %s not found in %s (%s); tagging only", run_id, uri, e)
        return None


def log_evaluation(
    kind: str,
    metrics: Mapping[str, float],
    params: Mapping[str, Any],
    table_text: str,
    files: list[Path] = (),
    pretrain_run_id: str | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    step_metrics: Mapping[str, list[tuple[int, float]]] | None = None,
) -> str | None:
    """Create one MLflow run for an evaluation; returns its id (None when tracking is unavailable)."""
    from lmp_model.tracking import Tracker, default_tracking_uri, flatten

    uri = tracking_uri or default_tracking_uri()
    parent_exp = _pretrain_experiment(uri, pretrain_run_id)
    tags = {"lmp.kind": kind}
    if pretrain_run_id:
        tags[PRETRAIN_TAG] = pretrain_run_id
    same_exp = parent_exp is not None and (experiment is None or experiment == parent_exp)
    tracker = Tracker(
        experiment or parent_exp or DEFAULT_EXPERIMENT,
        run_name or f"{kind}",
        tracking_uri=uri,
        parent_run_id=pretrain_run_id if same_exp else None,
        tags=tags,
    )
    if not tracker.active:
        return None
    tracker.log_params(flatten(dict(params)))
    tracker.log_metrics({_metric(k): float(v) for k, v in metrics.items()}, step=0)
    for name, points in (step_metrics or {}).items():
        for step, value in points:
            tracker.log_metrics({_metric(name): float(value)}, step=int(step))
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / f"{kind}_table.txt"
        table.write_text(table_text + "\n", encoding="utf-8")
        tracker.log_artifact(table)
    for f in files:
        tracker.log_artifact(f)
    tracker.end()
    return tracker.run_id


def _metric(name: str) -> str:
    # MLflow metric names: alphanumerics, _ - . space / only
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)


def lvu_metrics(result) -> tuple[dict[str, float], dict[str, list[tuple[int, float]]]]:
    """(metrics, per-seed step metrics) of an `LVUResult`; names prefixed by method when several."""
    metrics: dict[str, float] = {}
    steps: dict[str, list[tuple[int, float]]] = {}
    several = len(result.methods) > 1
    for r in result.per_task().iter_rows(named=True):
        p = f"lvu/{_slug(r['method'])}/" if several else "lvu/"
        metrics[f"{p}{r['task']}"] = r["mean"]
        metrics[f"{p}{r['task']}.std"] = r["std"]
    for r in result.groups().iter_rows(named=True):
        p = f"lvu/{_slug(r['method'])}/" if several else "lvu/"
        metrics[f"{p}{r['group']}"] = r["mean"]
        metrics[f"{p}{r['group']}.std"] = r["std"]
    for r in result.runs.iter_rows(named=True):
        p = f"lvu/{_slug(r['method'])}/" if several else "lvu/"
        steps.setdefault(f"{p}{r['task']}/seed", []).append((r["seed"], r["value"]))
    for task, n in result.missing.items():
        metrics[f"lvu/missing/{task}"] = n
    return metrics, steps
