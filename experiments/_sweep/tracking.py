"""MLflow for sweeps: the tracking store, the experiment, one parent run per sweep, git provenance.

The experiment is created on the driver with an absolute `file://` artifact location: Ray trials run
in their own folders, and the MLflow UI then serves artifacts without a proxy. Against a tracking
server (an http(s) URI, e.g. scripts/tracking_server.sh) the server's own artifact location is used
(uploads go through the server to its --artifacts-destination) unless `mlflow.artifact_root` is set.
"""

from __future__ import annotations

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from lmp_model.tracking import (
    EXPERIMENT_KIND_TAG,
    TRAINING_KIND,
    default_tracking_uri,
    mark_training_experiment,
)
from lmp_model.tracking import git_commit as lmp_git_commit

from .config import REPO_ROOT, SweepMlflowConfig, repo_path

SWEEP_TAG = "lmp.sweep"
TRIAL_TAG = "lmp.trial"


def tracking_uri(cfg: SweepMlflowConfig) -> str:
    """The configured URI, else $MLFLOW_TRACKING_URI, else the repo's SQLite store `mlflow.db`."""
    return cfg.tracking_uri or default_tracking_uri(REPO_ROOT)


def ensure_experiment(cfg: SweepMlflowConfig, uri: str) -> str:
    """The experiment id, created with an absolute file:// artifact location if it does not exist (the
    server's default location for an http(s) URI without `artifact_root`)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(cfg.experiment)
    if exp is not None:
        if exp.lifecycle_stage != "active":
            raise RuntimeError(
                f"MLflow experiment {cfg.experiment!r} at {uri} is deleted; restore it or choose another "
                "name with mlflow.experiment=NAME"
            )
        mark_training_experiment(client, exp)
        return exp.experiment_id
    kind = {EXPERIMENT_KIND_TAG: TRAINING_KIND}  # the UI's model-training view, not its GenAI view
    if uri.startswith(("http://", "https://")) and not cfg.artifact_root:
        return client.create_experiment(cfg.experiment, tags=kind)
    root = repo_path(cfg.artifact_root or "mlartifacts")
    root.mkdir(parents=True, exist_ok=True)
    return client.create_experiment(
        cfg.experiment, artifact_location=(root / cfg.experiment).as_uri(), tags=kind
    )


def git_commit() -> str:
    """The repo's HEAD, with `-dirty` when tracked files differ from it; "unknown" outside git."""
    return lmp_git_commit(REPO_ROOT)


def start_parent(uri: str, experiment_id: str, name: str, tags: dict[str, str], params: dict) -> str:
    """Create the sweep's parent run (RUNNING) and return its id."""
    client = MlflowClient(uri)
    run = client.create_run(experiment_id, run_name=name, tags={SWEEP_TAG: name, **tags})
    for key, value in params.items():
        client.log_param(run.info.run_id, key, str(value)[:6000])
    return run.info.run_id


def reopen_parent(uri: str, run_id: str) -> None:
    """Mark a resumed sweep's parent run RUNNING again."""
    MlflowClient(uri).update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))


def child_runs(uri: str, experiment_id: str, parent_run_id: str) -> list:
    """All child runs of a parent (every attempt of every trial), oldest first."""
    client = MlflowClient(uri)
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
            max_results=1000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    return sorted(runs, key=lambda r: r.info.start_time or 0)
