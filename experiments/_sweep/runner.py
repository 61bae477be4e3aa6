"""The sweep driver: Ray up, one MLflow parent run, Tune stages, the results table, Ray down.

A sweep folder (`runs/sweeps/<table>-<scale>-<time>/`) holds `sweep.json` (the parent run id and
what is needed to resume), `tune/<stage>/` (Ray Tune state), `trials/<key>/attempt-<n>/` (one folder
per attempt: pretraining output, exported weights), `results/` (table.md, table.parquet,
trials.parquet, table.png — also logged to the parent run) and `sweep.log`: everything the sweep's
process and its trials printed (Ray, Tune, DeepSpeed, ...), while the console shows one progress display,
a line per finished trial and the table (`progress.py`; `verbose` / `-v`: the full stream on the console).

Ray set-up is `ray_env.py`, the results table and the parent run's Description `report.py`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from lmp_data.console import quiet_known_warnings
from lmp_data.files import atomic_write

from .config import REPO_ROOT, SweepConfig, repo_path
from .progress import SweepConsole, SweepProgress
from .ray_env import EXPERIMENTS_DIR, LOOPBACK_ENV, init_ray, loopback_only_ray, worker_modules  # noqa: F401
from .report import CHART, ML_VIEW, NOTE_LIMIT, _write_table, description, ui_hint  # noqa: F401
from .spec import SweepContext, TrialSpec
from .tracking import TRIAL_TAG, child_runs, ensure_experiment, git_commit, reopen_parent, start_parent
from .tracking import tracking_uri as resolve_uri


@dataclass
class Stage:
    """A set of trials run by one Tuner. `specs` may depend on the rows of earlier stages."""

    name: str
    specs: list[TrialSpec] | Callable[[dict[str, list[dict]]], list[TrialSpec]]
    in_table: bool = True


@dataclass
class SweepOutcome:
    sweep_dir: Path
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    complete: bool
    rows: list[dict] = field(default_factory=list)
    markdown: str = ""
    verdict: str = ""  # one line on the paper's ordering (markdown), "" for tables without paper numbers

    @property
    def exit_code(self) -> int:
        return 0 if self.complete else 130


def _new_sweep_dir(cfg: SweepConfig, table: str) -> Path:
    base = repo_path(cfg.out_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = base / f"{table}-{cfg.scale}-{stamp}" if i == 0 else base / f"{table}-{cfg.scale}-{stamp}-{i}"
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new sweep folder under {base}")


def find_resumable(cfg: SweepConfig, table: str, resume: str) -> Path:
    """`--resume PATH` -> PATH; `--resume latest` -> the newest sweep folder of this table and scale."""
    if resume != "latest":
        path = Path(resume).expanduser().resolve()
        if not (path / "sweep.json").is_file():
            raise FileNotFoundError(
                f"--resume {resume}: {path / 'sweep.json'} not found (not a sweep folder)"
            )
        return path
    base = repo_path(cfg.out_dir)
    cands = sorted(p.parent for p in base.glob(f"{table}-{cfg.scale}-*/sweep.json"))
    if not cands:
        raise FileNotFoundError(f"--resume latest: no {table} sweep at scale {cfg.scale} under {base}")
    return max(cands, key=lambda p: (p / "sweep.json").stat().st_mtime)


def _trial_name(trial) -> str:
    return trial.config["trial"]["key"]


def _run_stage(
    stage: str, specs: list[TrialSpec], ctx: SweepContext, cfg: SweepConfig, sweep_dir: Path
) -> dict[str, dict]:
    """Fit (or resume) one stage; returns {key: {"status", "error", "metrics"}} as Tune saw it."""
    from ray import tune

    from .progress import ProgressCallback
    from .trial import run_trial

    # the typed specs and context reach the trials whole (Tune would put placeholders for objects in
    # param_space); param_space holds each spec's JSON record, which Tune shows and saves for resuming
    with_specs = tune.with_parameters(run_trial, specs={s.key: s for s in specs}, sweep=ctx)
    trainable = tune.with_resources(
        with_specs, {"cpu": cfg.ray.cpus_per_trial, "gpu": cfg.ray.gpus_per_trial}
    )
    storage = sweep_dir / "tune"
    path = storage / stage
    if tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(
            str(path), trainable=trainable, resume_unfinished=True, resume_errored=False
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([s.to_dict() for s in specs])},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=cfg.ray.max_concurrent_trials or None,
                reuse_actors=False,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=stage,
                storage_path=str(storage),
                failure_config=tune.FailureConfig(max_failures=cfg.ray.max_failures),
                verbose=cfg.ray.verbose,
                callbacks=[ProgressCallback()],  # stateless: feeds progress.activate()'s display
            ),
        )
    return _seen(tuner.fit())


def _seen(grid) -> dict[str, dict]:
    """{key: {"status", "error", "metrics"}} of the trials in Tune's result grid. Tune reads a result's
    config from its reported metrics, so a trial interrupted before it reported has none: its key is then
    its folder's name (`_trial_name`)."""
    seen: dict[str, dict] = {}
    for result in grid:
        key = result.config["trial"]["key"] if result.config else Path(result.path).name
        metrics = dict(result.metrics or {})
        if result.error is not None:
            seen[key] = {"status": "failed", "error": _error_text(result.error)}
        elif "child_run_id" in metrics:
            seen[key] = {"status": "ok", "error": "", "metrics": metrics}
        else:
            seen[key] = {"status": "unfinished", "error": ""}
    return seen


def _error_text(err: BaseException) -> str:
    """The root cause of a trial's error in one line (Ray wraps it in RayTaskError / TuneError)."""
    cause = err
    while getattr(cause, "cause", None) is not None and cause.cause is not cause:
        cause = cause.cause
    text = f"{type(cause).__name__}: {cause}".splitlines()[0]
    return text if len(text) <= 300 else text[:297] + "..."


def _rows_for(
    stage_specs: list[TrialSpec], seen: dict[str, dict], runs_by_key: dict, commit: str, sweep_dir: Path
) -> list:
    rows = []
    for spec in stage_specs:
        key = spec.key
        info = seen.get(key, {"status": "unfinished", "error": ""})
        runs = runs_by_key.get(key, [])
        last = runs[-1] if runs else None
        metrics = dict(last.data.metrics) if (last is not None and info["status"] == "ok") else {}
        metrics.update({k: v for k, v in info.get("metrics", {}).items() if isinstance(v, int | float)})
        rows.append(
            {
                "order": spec.order,
                "variant": spec.variant,
                "seed": spec.seed,
                "key": key,
                "status": info["status"],
                "error": info.get("error", ""),
                "child_run_id": info.get("metrics", {}).get("child_run_id")
                or (last.info.run_id if last else None),
                "git_commit": (last.data.tags.get("lmp.git_commit") if last else None) or commit,
                "attempts": max(len(runs), len(list((sweep_dir / "trials" / key).glob("attempt-*")))),
                "metrics": metrics,
                "outputs": info.get("metrics", {}),
            }
        )
    return rows


def run_sweep(
    table: str,
    title: str,
    stages: list[Stage],
    cfg: SweepConfig,
    *,
    data: dict[str, str] | None = None,
    label_columns: list[str] | None = None,
    columns: dict[str, dict[str, str]] | None = None,
    resume: str | None = None,
    script: str | None = None,
) -> SweepOutcome:
    """Run (or resume) a sweep end to end and write its table. See the module docstring for the layout.
    `script`: the table script that resumes it (default experiments/ablate_<table>.py), for the hint.

    Unless `cfg.verbose`, the process's output goes to `<sweep>/sweep.log` from the moment the folder
    exists; an error is printed in one line with the log's path (the traceback is in the log) and raised
    again, marked `lmp_reported` (the CLI then exits 1 without printing it twice)."""
    from .progress import activate

    console = SweepConsole(verbose=cfg.verbose)
    try:
        outcome = _run_sweep(table, title, stages, cfg, console, data, label_columns, columns, resume)
        _report(console, outcome, script or f"experiments/ablate_{table}.py", cfg)
        return outcome
    except BaseException as e:
        if console.redirected:
            traceback.print_exc()  # into the log
            console.line(f"[sweep] failed: {_error_text(e) if str(e) else type(e).__name__}")
            console.line(f"[sweep] full log: {console.log_path}")
            try:
                e.lmp_reported = True  # type: ignore[attr-defined]
            except AttributeError:
                pass
        raise
    finally:
        activate(None)
        console.stop()


def _run_sweep(
    table: str,
    title: str,
    stages: list[Stage],
    cfg: SweepConfig,
    console: SweepConsole,
    data: dict[str, str] | None,
    label_columns: list[str] | None,
    columns: dict[str, dict[str, str]] | None,
    resume: str | None,
) -> SweepOutcome:
    from ray import tune  # noqa: F401  (fail early if Ray Tune is missing)

    from .progress import activate

    quiet_known_warnings()
    uri = resolve_uri(cfg.mlflow)
    commit = git_commit()
    sweep_dir, experiment_id, parent, uri, ctx = _open_sweep(
        table, title, cfg, console, data, resume, uri, commit
    )
    started = init_ray(cfg)
    client = MlflowClient(uri)
    rows_by_stage: dict[str, list[dict]] = {}
    complete = True
    interrupted = False
    progress = SweepProgress(console, title)
    activate(progress)
    try:
        for n_stage, stage in enumerate(stages):
            specs = stage.specs(rows_by_stage) if callable(stage.specs) else stage.specs
            if not specs:
                rows_by_stage[stage.name] = []
                continue
            progress.begin_stage(stage.name, specs, n_stage, len(stages))
            try:
                seen = _run_stage(stage.name, specs, ctx, cfg, sweep_dir)
            except KeyboardInterrupt:
                interrupted = True
                seen = {}
            runs_by_key: dict[str, list] = {}
            for run in child_runs(uri, experiment_id, parent):
                runs_by_key.setdefault(run.data.tags.get(TRIAL_TAG, ""), []).append(run)
            rows_by_stage[stage.name] = _rows_for(specs, seen, runs_by_key, commit, sweep_dir)
            if interrupted or any(r["status"] == "unfinished" for r in rows_by_stage[stage.name]):
                complete = False
                break
    except BaseException as e:  # a stage could not even start (e.g. its input trial failed)
        if not isinstance(e, KeyboardInterrupt):
            client.set_tag(parent, "error", f"{type(e).__name__}: {e}"[:5000])
        _close_stale_children(client, uri, experiment_id, parent, final=False)
        client.set_terminated(parent, status="KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        progress.end()
        if started:
            import ray

            ray.shutdown()
    _close_stale_children(client, uri, experiment_id, parent, final=complete)
    rows = [r for st in stages if st.in_table for r in rows_by_stage.get(st.name, [])]
    outcome = SweepOutcome(sweep_dir, parent, experiment_id, uri, complete, rows)
    if rows:
        outcome.markdown = _write_table(outcome, client, table, title, label_columns or [], columns or {})
    status = "FINISHED" if complete else "KILLED"
    client.set_terminated(parent, status=status)
    return outcome


def _open_sweep(
    table: str,
    title: str,
    cfg: SweepConfig,
    console: SweepConsole,
    data: dict[str, str] | None,
    resume: str | None,
    uri: str,
    commit: str,
) -> tuple[Path, str, str, str, SweepContext]:
    """(sweep folder, experiment id, parent run id, tracking URI, trial context): a resumed sweep's from its
    sweep.json (its parent run reopened), else a new folder, parent run and sweep.json."""
    if resume:
        sweep_dir = find_resumable(cfg, table, resume)
        console.start(sweep_dir)
        _say_log(console, title, cfg, sweep_dir)
        state = json.loads((sweep_dir / "sweep.json").read_text())
        experiment_id, parent, uri = state["experiment_id"], state["parent_run_id"], state["tracking_uri"]
        ctx = SweepContext.from_dict(state["ctx"])  # the same data, stores and settings as before
        reopen_parent(uri, parent)
        console.line(f"[sweep] resuming {sweep_dir} (parent run {parent})")
    else:
        sweep_dir = _new_sweep_dir(cfg, table)
        console.start(sweep_dir)
        _say_log(console, title, cfg, sweep_dir)
        experiment_id = ensure_experiment(cfg.mlflow, uri)
        parent = start_parent(
            uri,
            experiment_id,
            sweep_dir.name,
            {
                "lmp.table": table,
                "lmp.scale": cfg.scale,
                "lmp.git_commit": commit,
                "lmp.sweep_dir": str(sweep_dir),
            },
            {"scale": cfg.scale, "seeds": cfg.seeds, "config": json.dumps(dataclasses.asdict(cfg))},
        )
        ctx = SweepContext(
            sweep_dir=str(sweep_dir),
            tracking_uri=uri,
            experiment_id=experiment_id,
            parent_run_id=parent,
            git_commit=commit,
            scale=cfg.scale,
            repo_root=str(REPO_ROOT),
            experiment_name=cfg.mlflow.experiment,
            cpus_per_trial=cfg.ray.cpus_per_trial,
            pretrain_config=str(repo_path(cfg.pretrain_config)),
            pretrain_overrides=list(cfg.pretrain_overrides),
            probe=dataclasses.replace(cfg.probe),
            data=dict(data or {}),
        )
        state = {
            "table": table,
            "tracking_uri": uri,
            "experiment_id": experiment_id,
            "parent_run_id": parent,
            "ctx": ctx.to_dict(),
        }
        atomic_write(sweep_dir / "sweep.json", json.dumps(state, indent=1))
    return sweep_dir, experiment_id, parent, uri, ctx


def _report(console: SweepConsole, outcome: SweepOutcome, script: str, cfg: SweepConfig) -> None:
    """The table, the verdict, and how to resume / what failed / where the log and the UI are."""
    sweep_dir, complete, rows = outcome.sweep_dir, outcome.complete, outcome.rows
    console.line(outcome.markdown)
    if outcome.verdict:
        console.line(outcome.verdict.replace("**", ""))
    if not complete:
        console.line(
            f"[sweep] interrupted with unfinished trials; resume with:\n  .venv/bin/python {script} "
            f"--scale {cfg.scale} --resume {sweep_dir}"
        )
    failed = [r["key"] for r in rows if r["status"] == "failed"]
    if failed:
        console.line(f"[sweep] {len(failed)} trial(s) failed after retries: {', '.join(failed)}")
    if (failed or not complete) and console.log_path is not None:
        console.line(f"[sweep] full log: {console.log_path}")
    console.line(ui_hint(outcome.tracking_uri, outcome.experiment_id, outcome.parent_run_id))


def _say_log(console: SweepConsole, title: str, cfg: SweepConfig, sweep_dir: Path) -> None:
    console.line(f"[sweep] {title} at scale {cfg.scale}: {sweep_dir}")
    if console.log_path is not None:
        console.line(f"[sweep] Ray, Tune and trial output: {console.log_path} (-v: on the console)")


def _close_stale_children(client: MlflowClient, uri: str, exp: str, parent: str, final: bool) -> None:
    """Child runs left RUNNING by killed workers: KILLED (their trial was retried, resumed or stopped)."""
    for run in child_runs(uri, exp, parent):
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status=RunStatus.to_string(RunStatus.KILLED))


def install_sigterm_as_interrupt() -> None:
    """SIGTERM (e.g. SLURM preemption) stops the sweep like Ctrl-C: Tune saves state, resumable."""
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
