"""One Ray Tune trial: a fresh folder, an MLflow child run, the work, a report back to Tune.

The trainable is a plain Tune function. The work it does (pretrain + probe, or probe only) is the
trial spec's `work`, a Python function (`TrialSpec`, `_sweep/spec.py`), so each table chooses its own
and a recipe can add one.
Every attempt of a trial gets its own folder (`trials/<key>/attempt-<n>`) and its own child run:
a retried trial leaves its failed attempt visible as a FAILED run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow

from lmp_data.console import quiet_known_warnings

from .spec import SweepContext, TrialSpec
from .tracking import TRIAL_TAG

quiet_known_warnings()  # in each Ray worker, before the work imports DeepSpeed (lmp_data.console)


@dataclass
class TrialContext:
    """What a work function gets: its spec, the sweep's shared settings, a private folder."""

    spec: TrialSpec
    sweep: SweepContext
    attempt: int
    dir: Path

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def run_name(self) -> str:
        """The child run's name in the MLflow UI: the table row and the seed ("w/o L_intra · seed 0"), and
        the attempt when the trial was retried (the trial key stays in the `lmp.trial` tag)."""
        name = f"{self.spec.variant} · seed {self.spec.seed}"
        return name if self.attempt <= 1 else f"{name} · attempt {self.attempt}"

    def run_tags(self) -> dict[str, str]:
        return {
            TRIAL_TAG: self.key,
            "lmp.attempt": str(self.attempt),
            "lmp.variant": self.spec.variant,
            "lmp.seed": str(self.spec.seed),
            "lmp.git_commit": self.sweep.git_commit,
            "lmp.trial_dir": str(self.dir),
        }

    def start_child_run(self, run_id: str | None = None) -> mlflow.ActiveRun:
        """Open (or, given `run_id`, reopen) this trial's child run; FAILED if its block raises."""
        mlflow.set_tracking_uri(self.sweep.tracking_uri)
        if run_id is not None:
            return mlflow.start_run(run_id=run_id)
        return mlflow.start_run(
            experiment_id=self.sweep.experiment_id,
            run_name=self.run_name,
            parent_run_id=self.sweep.parent_run_id,
            tags=self.run_tags(),
        )


def _new_attempt_dir(sweep_dir: str, key: str) -> tuple[int, Path]:
    """Claim `trials/<key>/attempt-<n>` atomically (mkdir), n = 1, 2, ... across retries and resumes."""
    base = Path(sweep_dir) / "trials" / key
    base.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = base / f"attempt-{n}"
        try:
            path.mkdir()
            return n, path
        except FileExistsError:
            n += 1


def run_trial(config: dict[str, Any], specs: dict[str, TrialSpec], sweep: SweepContext) -> None:
    """The Tune trainable (`tune.with_parameters(run_trial, specs=..., sweep=...)`): config["trial"] is the
    spec's record (`TrialSpec.to_dict`), `specs` the stage's typed specs by key. Reports the work's
    metrics (content, metadata, user, child_run_id, ...)."""
    from ray import tune

    key = config["trial"]["key"]
    if key not in specs:  # a resumed sweep restores its trials from Tune's state, the specs from the script
        raise KeyError(f"trial {key}: not among the table's rows this time (resumed with other --only rows?)")
    spec = specs[key]
    attempt, trial_dir = _new_attempt_dir(sweep.sweep_dir, spec.key)
    ctx = TrialContext(spec=spec, sweep=sweep, attempt=attempt, dir=trial_dir)
    (trial_dir / "spec.json").write_text(json.dumps({"spec": spec.to_dict(), "pid": os.getpid()}, indent=1))
    metrics = spec.work(ctx)
    (trial_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, default=str))
    tune.report({**metrics, "attempt": attempt})
