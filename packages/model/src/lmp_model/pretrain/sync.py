"""`lmp-pretrain --sync-mlflow RUN_DIR`: upload to MLflow what a pretraining run could not log there.

When the tracking server goes away mid-run, training goes on (`lmp_model.tracking.Tracker` warns once)
and the run folder keeps everything: `metrics.jsonl` (every step), `mlflow.json` (the run's identity,
params, tags, end status; written by the Tracker whether or not the store answered), `config.yaml`,
`loss_curve.png` and `export/`. `sync_run` compares that with the store and uploads only what is
missing there: the run itself (created, nested under its parent, when it never reached the store or
the store no longer has it), params, tags, every (metric, step) the store lacks (the steps training
logs: multiples of `train.log_every` and the last one), the artifacts, and the end status. Running it
again uploads nothing.

Where to: `tracking_uri` if given, else `$MLFLOW_TRACKING_URI`, else the URI the run used.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from lmp_data.files import atomic_write

JOURNAL = "mlflow.json"
METRICS = "metrics.jsonl"
FILE_ARTIFACTS = ("config.yaml", "loss_curve.png")
"""Run-folder files the pretraining run logs as artifacts at the run's root (the export goes to `export/`)."""
BATCH = 1000
"""MLflow's log_batch limit of metrics per request."""


class SyncError(ValueError):
    """A run folder that cannot be synced, or a store that cannot be reached; names the file or URI."""


def _read_journal(run_dir: Path) -> dict[str, Any]:
    path = run_dir / JOURNAL
    if not run_dir.is_dir():
        raise SyncError(f"{run_dir}: no such run folder")
    if not path.is_file():
        raise SyncError(
            f"{path} not found: not a pretraining run folder, or one written before MLflow journals"
        )
    try:
        journal = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SyncError(f"{path}: unreadable ({e})") from e
    if not isinstance(journal, dict) or not journal.get("experiment"):
        raise SyncError(f"{path}: no experiment name in it")
    return journal


def _read_metrics(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir / METRICS
    if not path.is_file():
        return []
    recs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            int(rec["step"])
        except (ValueError, KeyError, TypeError) as e:
            raise SyncError(f"{path}: line {n} is not a metrics record ({e})") from e
        recs.append(rec)
    return recs


def _log_every(run_dir: Path) -> int:
    from omegaconf import OmegaConf

    try:
        return max(
            1, int(OmegaConf.select(OmegaConf.load(run_dir / "config.yaml"), "train.log_every", default=1))
        )
    except (OSError, ValueError, TypeError):
        return 1


def _log_weights(journal: dict[str, Any]) -> bool:
    return str(journal.get("params", {}).get("mlflow.log_weights", "True")).lower() != "false"


def sync_run(run_dir: str | Path, tracking_uri: str | None = None) -> dict[str, Any]:
    """Upload what the store lacks of pretraining run `run_dir`; a summary of what was uploaded.

    Raises SyncError when the folder is not a run folder or the store cannot be reached."""
    run_dir = Path(run_dir).resolve()
    journal = _read_journal(run_dir)
    recs = _read_metrics(run_dir)
    uri, client = _connect(run_dir, journal, tracking_uri)
    run, old_id, created = _find_or_create_run(client, journal, run_dir, uri)
    run_id = run.info.run_id
    params, tags = _sync_params_tags(client, run, run_id, journal)
    missing = _sync_metrics(client, run_id, run_dir, recs)
    uploaded = _sync_artifacts(client, run_id, run_dir, journal)

    # end status: the one training recorded; none recorded (still running, or killed): left as it is
    status = journal.get("status")
    if status and client.get_run(run_id).info.status != status:
        client.set_terminated(run_id, status=status)

    journal.update(run_id=run_id, lost=None, synced={"tracking_uri": uri, "time": time.time()})
    atomic_write(run_dir / JOURNAL, json.dumps(journal, indent=1, sort_keys=True))
    return {
        "run_dir": str(run_dir),
        "tracking_uri": uri,
        "mlflow_run_id": run_id,
        "created_run": created,
        "continues_run": old_id if created and old_id else None,
        "params": len(params),
        "tags": len(tags),
        "metrics": len(missing),
        "steps": len({m.step for m in missing}),
        "artifacts": uploaded,
        "status": status or "not ended (left as is)",
    }


def _connect(run_dir: Path, journal: dict[str, Any], tracking_uri: str | None):
    """(uri, MlflowClient): `tracking_uri`, else $MLFLOW_TRACKING_URI, else the run's; checked reachable."""
    from mlflow.tracking import MlflowClient

    from lmp_model.tracking import _reachable

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "").strip() or journal.get("tracking_uri")
    if not uri:
        raise SyncError(f"{run_dir / JOURNAL}: no tracking URI in it; pass --tracking-uri")
    reason = _reachable(uri)
    if reason is not None:
        raise SyncError(f"tracking server {uri} unreachable ({reason})")
    client = MlflowClient(tracking_uri=uri)
    return uri, client


def _find_or_create_run(client, journal: dict[str, Any], run_dir: Path, uri: str):
    """(run, the journal's run id, created): the journal's run if the store has it, else a new run in the
    experiment (nested under its parent) that records where it came from and which run it continues."""
    from lmp_model.tracking import PARENT_TAG, ensure_experiment

    old_id = journal.get("run_id")
    run = None
    if old_id:
        try:
            run = client.get_run(old_id)
        except Exception:  # noqa: BLE001 - RESOURCE_DOES_NOT_EXIST: a new store, or the run never arrived
            run = None
    created = run is None
    if run is None:
        exp_id = ensure_experiment(client, journal["experiment"], uri)
        tags = {k: str(v) for k, v in journal.get("tags", {}).items()}
        tags["lmp.synced_from"] = str(run_dir)
        if old_id:
            tags["continues_run"] = old_id
        if journal.get("parent_run_id"):
            tags[PARENT_TAG] = journal["parent_run_id"]
        run = client.create_run(exp_id, run_name=journal.get("run_name") or None, tags=tags)
    return run, old_id, created


def _sync_params_tags(client, run, run_id: str, journal: dict[str, Any]):
    """(params, tags) the run lacked, now sent."""
    from mlflow.entities import Param, RunTag

    # params and tags the run lacks (params are immutable: only missing keys are sent)
    params = [Param(k, str(v)) for k, v in journal.get("params", {}).items() if k not in run.data.params]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    tags = [RunTag(k, str(v)) for k, v in journal.get("tags", {}).items() if run.data.tags.get(k) != str(v)]
    for i in range(0, len(tags), 100):
        client.log_batch(run_id, tags=tags[i : i + 100])
    return params, tags


def _sync_metrics(client, run_id: str, run_dir: Path, recs: list[dict[str, float]]) -> list:
    """The (metric, step) points the store lacked, now sent."""
    from mlflow.entities import Metric

    # metrics: every (key, step) training would have logged that the store lacks
    every = _log_every(run_dir)
    last = max((int(r["step"]) for r in recs), default=0)
    logged = [r for r in recs if int(r["step"]) % every == 0 or int(r["step"]) == last]
    keys = sorted({k for r in logged for k in r if k != "step"})
    now = int(time.time() * 1000)
    missing: list[Metric] = []
    for key in keys:
        have = {m.step for m in client.get_metric_history(run_id, key)}
        for r in logged:
            step = int(r["step"])
            if key in r and step not in have:
                missing.append(Metric(key, float(r[key]), now, step))
                have.add(step)
    for i in range(0, len(missing), BATCH):
        client.log_batch(run_id, metrics=missing[i : i + BATCH])
    return missing


def _sync_artifacts(client, run_id: str, run_dir: Path, journal: dict[str, Any]) -> list[str]:
    """The artifact paths the store lacked, now sent."""
    from lmp_model.export import EXPORT_ARTIFACT

    # artifacts: the files and the export folder, file by file, where missing
    uploaded: list[str] = []
    root = {a.path for a in client.list_artifacts(run_id)}
    for name in FILE_ARTIFACTS:
        if (run_dir / name).is_file() and name not in root:
            client.log_artifact(run_id, str(run_dir / name))
            uploaded.append(name)
    export = run_dir / "export"
    if export.is_dir() and _log_weights(journal) and journal.get("status") == "FINISHED":
        have = {Path(a.path).name for a in client.list_artifacts(run_id, EXPORT_ARTIFACT)}
        for f in sorted(export.iterdir()):
            if f.is_file() and f.name not in have:
                client.log_artifact(run_id, str(f), EXPORT_ARTIFACT)
                uploaded.append(f"{EXPORT_ARTIFACT}/{f.name}")
    return uploaded
