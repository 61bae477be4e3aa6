"""Small MLflow helpers shared by pretraining, benchmarks and sweeps.

- `default_tracking_uri()`: `MLFLOW_TRACKING_URI`, else a SQLite file at the repository root.
- `git_commit()`: the commit the code runs from (a tag on every run).
- `Tracker`: one MLflow run through an explicit `MlflowClient` (no global "active run", so concurrent
  trials in one process never cross), nested under a parent run when given, resumable by run id.
  If the tracking store is unreachable, or a call fails later, it logs ONE warning and from then on
  does nothing: training never stops because tracking did. With `journal=PATH` it also keeps, in a small
  JSON file, what the run is (URI, experiment, name, parent, run id), its params and tags and its end
  status, whether or not they reached the store, so that what was missed can be uploaded later
  (`lmp-pretrain --sync-mlflow RUN_DIR`, with the metrics from the run's `metrics.jsonl`).

Against an http(s) tracking server the Tracker bounds MLflow's HTTP retries unless the environment sets
them: `MLFLOW_HTTP_REQUEST_MAX_RETRIES=3`, `MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=2`,
`MLFLOW_HTTP_REQUEST_TIMEOUT=30` (MLflow's own defaults, 7 retries and 120 s, would stall a training
step ~4 minutes when the server goes away; these give up after ~15 s, once).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmp_data.files import atomic_write

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
MAX_PARAM_LEN = 6000
"""MLflow 3 rejects longer param values; longer ones are truncated with a marker."""
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
"""Set (unless already set) when a Tracker talks to an http(s) server: a dead server costs ~15 s, once."""


class _QuietRetries(logging.Filter):
    """Drops urllib3's one-line-per-retry warnings about MLflow API calls (the Tracker's single warning says
    what happened); installed on `urllib3.connectionpool` once a Tracker talks to an http(s) server."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Retrying") and "/api/2.0/mlflow/" in msg)


_QUIET = _QuietRetries()


def repo_root(start: str | Path | None = None) -> Path:
    """The workspace root (the folder holding `uv.lock` and `packages/`), searched upwards from `start`
    (default: the working directory, then this file's location); the working directory if none."""
    candidates = [Path(start)] if start is not None else [Path.cwd(), Path(__file__).resolve()]
    for c in candidates:
        for d in [c, *c.parents]:
            if (d / "uv.lock").is_file() and (d / "packages").is_dir():
                return d
    return Path.cwd()


def default_tracking_uri(root: str | Path | None = None) -> str:
    """`MLFLOW_TRACKING_URI` if set, else `sqlite:///<root>/mlflow.db` (root: default `repo_root()`)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return uri or f"sqlite:///{Path(root or repo_root()) / 'mlflow.db'}"


def git_commit(cwd: str | Path | None = None) -> str:
    """HEAD's commit hash (suffixed `-dirty` when tracked files differ), or "unknown" outside git."""
    where = str(cwd or repo_root())
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--"], cwd=where, capture_output=True, timeout=10
        ).returncode
        return sha + ("-dirty" if dirty == 1 else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(d: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested mapping -> flat {"a.b.c": value} (lists stay values), for MLflow params."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key, sep))
        else:
            out[key] = v
    return out


def _reachable(uri: str, timeout: float = 5.0) -> str | None:
    """None if an http(s) tracking server answers `/health`, else the reason; other schemes: None."""
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as r:  # noqa: S310
            return None if r.status == 200 else f"/health answered HTTP {r.status}"
    except (urllib.error.URLError, OSError) as e:
        return str(getattr(e, "reason", e))


def _artifact_location(uri: str) -> str | None:
    """Absolute artifact root beside a SQLite store, so runs started from any folder (Ray trial
    folders, SLURM job folders) put artifacts in one place; None (MLflow's default) otherwise."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()
    return None


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
"""The experiment kind "Machine learning" (MLflow 3: model training, not GenAI apps). MLflow 3.17's UI, with
its GenAI / Model training switch, does not pick the view from this tag: it opens the view stored in the
browser (GenAI until the user clicks "Model training" once) unless the link says
`?workflowType=machine_learning`, as the links lmp prints do (experiments/_sweep/runner.py `ML_VIEW`).
The tag still records the kind (experiment settings) for UIs that follow it."""


def mark_training_experiment(client: Any, exp: Any) -> None:
    """Tag experiment `exp` (an `Experiment`) as model training, unless it already carries a kind."""
    if EXPERIMENT_KIND_TAG not in (getattr(exp, "tags", None) or {}):
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)


def ensure_experiment(client: Any, name: str, uri: str) -> str:
    """Id of experiment `name`, created (with an absolute artifact location, tagged as model training) if
    missing; safe when two processes race to create it."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            client.create_experiment(
                name, artifact_location=_artifact_location(uri), tags={EXPERIMENT_KIND_TAG: TRAINING_KIND}
            )
        except Exception:  # lost a creation race: the other process made it
            pass
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise RuntimeError(f"MLflow experiment {name!r} at {uri}: could not be created")
    mark_training_experiment(client, exp)
    return exp.experiment_id


NOTE_TAG = "mlflow.note.content"
"""A run's Description in the MLflow UI (markdown; the run page shows its first lines)."""


def artifact_url(run_id: str, path: str) -> str:
    """A run artifact's URL on the MLflow server, relative to the UI page: `![...](url)` in a
    Description shows the image inline."""
    from urllib.parse import quote

    return f"get-artifact?path={quote(path, safe='')}&run_uuid={run_id}"


def loss_note(history: list[Mapping[str, Any]], run_id: str | None = None, image: str | None = None) -> str:
    """Markdown for a pretraining run's Description: each loss term at the first and the last logged step
    beside its chance level ln(candidates) (`loss_chance/<term>` of the same step) and their ratio
    (1.00: the term learned nothing; lower is better), then the total; with `run_id` and `image` (an
    artifact path), the loss-curve plot shown inline. "" without history."""
    if not history:
        return ""
    first, last = history[0], history[-1]
    terms = [k[5:] for k in last if k.startswith("loss/") and k != "loss/total"]
    lines = [
        f"**Loss per term beside its chance level** (step {first.get('step', '?')} -> {last.get('step', '?')}; "
        "chance = ln(number of candidates), the loss of a uniform guess). Charts: Model metrics, where "
        "searching a term's name (e.g. `intra/video`) shows its `loss/` and `loss_chance/` charts together.",
        "",
        "| Term | Loss, first step | Loss, last step | Chance, last step | Last / chance |",
        "|---|---|---|---|---|",
    ]
    for t in terms:
        chance = last.get(f"loss_chance/{t}")
        ratio = f"{last[f'loss/{t}'] / chance:.2f}" if chance else "—"
        lines.append(
            f"| {t} | {first.get(f'loss/{t}', float('nan')):.4f} | {last[f'loss/{t}']:.4f} | "
            + (f"{chance:.4f}" if chance is not None else "—")
            + f" | {ratio} |"
        )
    if "loss/total" in last:
        lines.append(
            f"| total | {first.get('loss/total', float('nan')):.4f} | {last['loss/total']:.4f} | — | — |"
        )
    if run_id and image:
        lines += ["", f"![loss per term, dashed: its chance level]({artifact_url(run_id, image)})"]
    return "\n".join(lines) + "\n"


class Tracker:
    """One MLflow run, tolerant of an unreachable store. `enabled=False` makes every call a no-op
    (ranks other than 0 use that)."""

    def __init__(
        self,
        experiment: str,
        run_name: str | None = None,
        *,
        tracking_uri: str | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        enabled: bool = True,
        journal: str | Path | None = None,
        note: str = "",
    ) -> None:
        self.uri = tracking_uri or default_tracking_uri()
        self.run_id: str | None = None
        self.client: Any = None
        self._warned = False
        self.lost: str | None = None
        """Why tracking stopped (None: every call so far reached the store)."""
        self.note = note
        self.journal = Path(journal) if journal is not None and enabled else None
        if self.journal is not None:
            self._journal = self._open_journal(experiment, run_name, parent_run_id, run_id, tags)
        if not enabled:
            return
        if self.uri.startswith(("http://", "https://")):
            for k, v in HTTP_DEFAULTS.items():
                os.environ.setdefault(k, v)
            logging.getLogger("urllib3.connectionpool").addFilter(_QUIET)  # a set: added once
        reason = _reachable(self.uri)
        if reason is not None:
            self._disable(f"tracking server {self.uri} unreachable ({reason})")
            return
        try:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=self.uri)
            if run_id and self._exists(run_id):
                self.client.update_run(run_id, status="RUNNING")
                self.run_id = run_id
            else:
                if run_id:
                    log.warning("MLflow run %s not found at %s: starting a new run", run_id, self.uri)
                    tags = {**(tags or {}), "continues_run": run_id}
                exp_id = ensure_experiment(self.client, experiment, self.uri)
                all_tags = {k: str(v) for k, v in (tags or {}).items()}
                if parent_run_id:
                    all_tags[PARENT_TAG] = parent_run_id
                self.run_id = self.client.create_run(exp_id, run_name=run_name, tags=all_tags).info.run_id
        except Exception as e:  # noqa: BLE001 - any failure of the store means "no tracking"
            self._disable(f"MLflow at {self.uri} failed ({type(e).__name__}: {e})")
        self._record(run_id=self.run_id)

    # ------------------------------------------------------------------------------------ journal
    def _open_journal(self, experiment, run_name, parent_run_id, run_id, tags) -> dict[str, Any]:
        """The journal's content: the existing file's when it describes the run being continued (same
        run id, or none on both sides), else a fresh one."""
        fresh: dict[str, Any] = {"params": {}, "tags": {}}
        old: dict[str, Any] = {}
        try:
            old = json.loads(self.journal.read_text())  # type: ignore[union-attr]
        except (OSError, ValueError):
            pass
        base = old if isinstance(old, dict) and old.get("run_id") == run_id else fresh
        base.update(
            tracking_uri=self.uri,
            experiment=experiment,
            run_name=run_name,
            parent_run_id=parent_run_id,
            run_id=run_id,
            status=None,
        )
        base.setdefault("params", {})
        base.setdefault("tags", {})
        base["tags"].update({k: str(v) for k, v in (tags or {}).items()})
        return base

    def _record(self, **fields: Any) -> None:
        """Update the journal (atomically); never raises."""
        if self.journal is None:
            return
        for k, v in fields.items():
            if k in ("params", "tags"):
                self._journal[k].update(v)
            else:
                self._journal[k] = v
        self._journal["lost"] = self.lost or self._journal.get("lost")  # kept until a sync uploads the rest
        try:
            atomic_write(self.journal, json.dumps(self._journal, indent=1, sort_keys=True))
        except OSError as e:
            log.warning("could not write the MLflow journal %s: %s", self.journal, e)

    def _exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
            return True
        except Exception:  # noqa: BLE001 - MlflowException(RESOURCE_DOES_NOT_EXIST) and friends
            return False

    @property
    def active(self) -> bool:
        return self.run_id is not None and self.client is not None

    def _disable(self, why: str) -> None:
        if not self._warned:
            note = f"; {self.note}" if self.note else ""
            log.warning("%s; training continues without MLflow tracking%s", why, note)
            self._warned = True
            self.lost = why
            self._record()
        self.client = None

    def _call(self, fn_name: str, *args: Any, **kwargs: Any) -> None:
        if not self.active:
            return
        try:
            getattr(self.client, fn_name)(self.run_id, *args, **kwargs)
        except Exception as e:  # noqa: BLE001
            self._disable(f"MLflow {fn_name} failed ({type(e).__name__}: {e})")

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (already flat) params, 100 per request; long values truncated."""
        from mlflow.entities import Param

        items = []
        for k, v in params.items():
            s = str(v)
            items.append(Param(k, s if len(s) <= MAX_PARAM_LEN else s[: MAX_PARAM_LEN - 3] + "..."))
        self._record(params={p.key: p.value for p in items})
        for i in range(0, len(items), 100):
            self._call("log_batch", params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self._call("log_batch", metrics=[Metric(k, float(v), ts, step) for k, v in metrics.items()])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._record(tags={k: str(v) for k, v in tags.items()})
        self._call("log_batch", tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def set_note(self, markdown: str) -> None:
        """The run's Description in the MLflow UI (kept in the journal like any tag)."""
        self.set_tags({NOTE_TAG: markdown})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._call("log_artifact", str(path), artifact_path)

    def log_dir(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log the files of folder `path` under `artifact_path` (not under `artifact_path/<folder name>`)."""
        self._call("log_artifacts", str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run FINISHED / FAILED / KILLED."""
        self._record(status=status)
        self._call("set_terminated", status=status)
