"""Submit one LMP pretraining to SLURM with submitit (or run it locally with `--local`).

    python experiments/submit_pretrain.py experiments/configs/pretrain/tiny.yaml train.zero_stage=2 \
        slurm.tasks_per_node=2 slurm.time_min=60 [--slurm-config my_cluster.yaml] [--local] [--wait]

Overrides `key=value` go to the pretraining config (`PretrainConfig`), except `slurm.*` keys, which set
the job's resources (`SlurmConfig` below; a YAML of the same keys can be given with `--slurm-config`).
Every task runs the same pretraining as `lmp-pretrain CONFIG ... --resume`, in-process, after
`submitit.helpers.TorchDistributedEnvironment().export()`, so it is the same run as `sbatch
slurm/pretrain.sh`. It prints the job id, the log paths and the MLflow run (found by a submission tag);
`--wait` waits for the result.

Preemption / time limit: submitit asks SLURM for USR2 `signal_delay_s` before the limit. Each task
catches it with `lmp_model.pretrain.preempt` (replacing submitit's handler, which would checkpoint from
inside a step); the run saves a checkpoint at the next step boundary and stops, then rank 0 runs
`scontrol requeue` and the requeued job resumes in the same MLflow run. If the run has not stopped
`signal_delay_s / 2` seconds after the signal, rank 0 requeues anyway and the job resumes from the
latest periodic checkpoint. Before the handler is installed (imports), submitit's own handler requeues
the job (the callable is a `Checkpointable`).

Each submission gets its own submitit folder (`<run dir>/submitit/<submission id>`): submitit keys its
files by job id, and a restarted cluster reuses job ids.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lmp_model.pretrain import preempt
from lmp_model.pretrain.config import ConfigError, load_pretrain_config

SUBMISSION_TAG = "lmp_submission"


@dataclass
class SlurmConfig:
    """Resources of one pretraining job (submitit's AutoExecutor parameters)."""

    job_name: str = "lmp-pretrain"
    nodes: int = 1
    tasks_per_node: int = 2
    """One task per GPU on GPU nodes; on CPU-only nodes one per CPU slot (`cpus_per_task` wide)."""
    cpus_per_task: int = 1
    gpus_per_task: int = 0
    """0 on CPU-only clusters; 1 on GPU clusters (one rank per GPU)."""
    time_min: int = 240
    partition: str = ""
    mem_gb: float = 0.0
    """0: the cluster's default (DefMemPerCPU)."""
    signal_delay_s: int = 120
    """USR2 this many seconds before the time limit: time to finish a step and save a checkpoint."""
    max_num_timeout: int = 100
    """Requeues after a time limit submitit allows (preemptions are not counted)."""
    additional: dict[str, str] = field(default_factory=dict)
    """Any other sbatch option, e.g. {account: proj1, qos: high}."""


def load_slurm_config(path: str | None, overrides: list[str]) -> SlurmConfig:
    """`SlurmConfig` from an optional YAML plus `slurm.key=value` overrides; errors name the key."""
    try:
        parts: list[Any] = [OmegaConf.structured(SlurmConfig)]
        if path:
            if not Path(path).is_file():
                raise ConfigError(f"slurm config {path}: no such file")
            parts.append(OmegaConf.load(path))
        if overrides:
            parts.append(OmegaConf.from_dotlist([o.removeprefix("slurm.") for o in overrides]))
        cfg = OmegaConf.to_object(OmegaConf.merge(*parts))
    except OmegaConfBaseException as e:
        where = path or "overrides"
        raise ConfigError(
            f"slurm config {where}: key {getattr(e, 'full_key', None)!r}: {str(e).splitlines()[0]}"
        ) from e
    assert isinstance(cfg, SlurmConfig)
    for ok, key in [
        (cfg.nodes >= 1, "nodes"),
        (cfg.tasks_per_node >= 1, "tasks_per_node"),
        (cfg.cpus_per_task >= 1, "cpus_per_task"),
        (cfg.gpus_per_task >= 0, "gpus_per_task"),
        (cfg.time_min >= 1, "time_min"),
        (cfg.signal_delay_s >= 0, "signal_delay_s"),
    ]:
        if not ok:
            raise ConfigError(f"slurm config: slurm.{key} out of range ({getattr(cfg, key)})")
    return cfg


class PretrainJob(submitit.helpers.Checkpointable):
    """What every task runs: `lmp-pretrain CONFIG OVERRIDES --resume`, with preemption handled at step
    boundaries. Returns the run's summary (rank 0) or None (other ranks)."""

    def __init__(self, config: str, overrides: list[str], workdir: str, grace_s: float):
        self.config, self.overrides, self.workdir, self.grace_s = config, list(overrides), workdir, grace_s

    def __call__(self) -> dict[str, Any] | None:
        import logging

        from lmp_model.pretrain.train import run

        os.chdir(self.workdir)
        env = submitit.JobEnvironment()
        dist_env = submitit.helpers.TorchDistributedEnvironment().export(
            set_cuda_visible_devices=False, overwrite=True
        )
        logging.basicConfig(
            level=logging.INFO if env.global_rank == 0 else logging.WARNING,
            format=f"%(asctime)s [rank {env.global_rank}] %(levelname)s %(name)s: %(message)s",
            force=True,
        )
        print(
            f"submit_pretrain: {env} master {dist_env.master_addr}:{dist_env.master_port} "
            f"restart {os.environ.get('SLURM_RESTART_COUNT', '0')}",
            flush=True,
        )
        cfg = load_pretrain_config(self.config, self.overrides)
        flag = preempt.install_handler()
        on_slurm = env.cluster == "slurm"
        if on_slurm and env.global_rank == 0:
            threading.Thread(target=self._requeue_if_stuck, args=(env, flag), daemon=True).start()
        try:
            result = run(cfg, resume=True)
        except preempt.Preempted as e:
            print(f"submit_pretrain: {e}", flush=True)
            if not on_slurm:
                return {"preempted": True, "step": e.step, "checkpoint": e.checkpoint}
            self._requeue_and_wait(env)
            raise
        if env.global_rank != 0:
            return None
        return result.summary()

    def _requeue_if_stuck(self, env: submitit.JobEnvironment, flag: threading.Event) -> None:
        """Rank 0: after the time-limit signal, give the run `grace_s` to checkpoint; then requeue anyway.
        SIGTERM (a user's scancel, or the scheduler's preemption, which requeues by itself) is left alone."""
        flag.wait()
        time.sleep(self.grace_s)
        if preempt.reason() not in ("SIGUSR1", "SIGUSR2") or _REQUEUED.get(env.job_id):
            return
        print(f"submit_pretrain: run did not stop within {self.grace_s:.0f} s of the signal", flush=True)
        _requeue(env.job_id)

    def _requeue_and_wait(self, env: submitit.JobEnvironment) -> None:
        # Rank 0 requeues; SLURM then ends every task of this job. Returning would write a result file
        # and make the submitter think the job is done.
        if env.global_rank == 0:
            _requeue(env.job_id)
        time.sleep(600)
        raise RuntimeError("the job was not requeued within 600 s after it checkpointed")


_REQUEUED: dict[str, bool] = {}  # plain data: this module is pickled by value (cloudpickle, __main__)


def _requeue(job_id: str) -> None:
    if _REQUEUED.get(job_id):
        return
    _REQUEUED[job_id] = True
    print(f"submit_pretrain: scontrol requeue {job_id}", flush=True)
    subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=60)


def make_executor(scfg: SlurmConfig, folder: Path, local: bool) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(
        folder=folder, cluster="local" if local else None, slurm_max_num_timeout=scfg.max_num_timeout
    )
    params: dict[str, Any] = {
        "name": scfg.job_name,
        "nodes": scfg.nodes,
        "tasks_per_node": scfg.tasks_per_node,
        "cpus_per_task": scfg.cpus_per_task,
        "timeout_min": scfg.time_min,
    }
    if scfg.gpus_per_task:
        params["gpus_per_node"] = scfg.gpus_per_task * scfg.tasks_per_node
    if scfg.mem_gb:
        params["mem_gb"] = scfg.mem_gb
    if ex.cluster == "slurm":
        params["slurm_signal_delay_s"] = scfg.signal_delay_s
        params["slurm_additional_parameters"] = {"requeue": True, **scfg.additional}
        if scfg.partition:
            params["slurm_partition"] = scfg.partition
    ex.update_parameters(**params)
    return ex


def find_mlflow_run(uri: str, experiment: str, submission: str, timeout_s: float) -> Any:
    """The MLflow run tagged with this submission, once rank 0 has created it (None after timeout_s)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    deadline = time.time() + timeout_s
    while True:
        exp = client.get_experiment_by_name(experiment)
        if exp is not None:
            runs = client.search_runs([exp.experiment_id], f"tags.{SUBMISSION_TAG} = '{submission}'")
            if runs:
                return runs[0]
        if time.time() >= deadline:
            return None
        time.sleep(2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("config", help="pretrain YAML, e.g. experiments/configs/pretrain/tiny.yaml")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="pretrain overrides and slurm.* job options"
    )
    p.add_argument("--slurm-config", help="YAML with SlurmConfig keys (job resources)")
    p.add_argument("--local", action="store_true", help="run the tasks as local processes, without SLURM")
    p.add_argument("--wait", action="store_true", help="wait for the job and print its result")
    p.add_argument(
        "--folder", help="submitit folder (default <run dir>/submitit/<submission id>); one per run"
    )
    p.add_argument("--find-run-s", type=float, default=120.0, help="how long to look for the MLflow run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    slurm_ovr = [o for o in args.overrides if o.startswith("slurm.")]
    submission = uuid.uuid4().hex[:12]
    ovr = [o for o in args.overrides if not o.startswith("slurm.")] + [
        f"mlflow.tags.{SUBMISSION_TAG}={submission}"
    ]
    try:
        scfg = load_slurm_config(args.slurm_config, slurm_ovr)
        cfg = load_pretrain_config(args.config, ovr)  # fail here, not in the queue
    except ConfigError as e:
        print(f"submit_pretrain: error: {e}", file=sys.stderr)
        return 2
    from lmp_model.tracking import default_tracking_uri

    uri = cfg.mlflow.tracking_uri or default_tracking_uri()
    if not args.local and not _sbatch_works():
        print(
            "submit_pretrain: error: no reachable SLURM controller (sbatch/squeue failed); use --local",
            file=sys.stderr,
        )
        return 2
    folder = Path(args.folder or cfg.run_dir / "submitit" / submission).resolve()
    ex = make_executor(scfg, folder, args.local)
    job_fn = PretrainJob(
        str(Path(args.config).resolve()), ovr, os.getcwd(), max(10.0, scfg.signal_delay_s / 2)
    )
    job = ex.submit(job_fn)
    print(f"job id: {job.job_id} ({ex.cluster}, {scfg.nodes} node(s) x {scfg.tasks_per_node} task(s))")
    print(f"logs: {job.paths.stdout}  {job.paths.stderr}")
    print(f"submitit folder: {folder}")
    print(f"run dir: {cfg.run_dir.resolve()}")
    print(
        f"MLflow: {uri} experiment {cfg.mlflow.experiment!r}, tag {SUBMISSION_TAG}={submission}", flush=True
    )
    run_id = None
    if cfg.mlflow.enabled and args.find_run_s > 0:
        run = find_mlflow_run(uri, cfg.mlflow.experiment, submission, args.find_run_s)
        run_id = run.info.run_id if run else None
        print(
            f"MLflow run: {run_id or f'not created within {args.find_run_s:.0f} s (job queued or starting)'}"
        )
    if not args.wait:
        return 0
    if ex.cluster == "slurm":
        _wait_slurm(job)
    try:
        results = job.results()
    except submitit.core.utils.UncompletedJobError as e:
        print(f"submit_pretrain: job {job.job_id} failed: {e}", file=sys.stderr)
        return 1
    summary = next((r for r in results if r), None)
    if summary and summary.get("mlflow_run_id") and not run_id:
        print(f"MLflow run: {summary['mlflow_run_id']}")
    print(f"result: {json.dumps(summary)}", flush=True)
    return 0 if summary and not summary.get("preempted") else 1


TERMINAL = (
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
)


def _wait_slurm(job: submitit.Job, grace_s: float = 60.0) -> None:
    """Wait for the job's result files, also watching `scontrol show job`: submitit polls `sacct`,
    which clusters without an accounting database (like slurm/local-cluster.sh) do not answer, so a job
    that died without writing its result would otherwise be waited for forever. A requeued job
    (PENDING/REQUEUED again) is waited for."""
    ended_at = None
    while not job.done():
        state = _scontrol_state(job.job_id)
        if state in TERMINAL:
            ended_at = ended_at or time.monotonic()
            if time.monotonic() - ended_at > grace_s:
                print(f"submit_pretrain: job {job.job_id} ended {state} without a result", file=sys.stderr)
                return
        else:
            ended_at = None
        time.sleep(3)


def _scontrol_state(job_id: str) -> str | None:
    try:
        out = subprocess.run(
            ["scontrol", "show", "job", "--oneliner", job_id], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for field_ in out.split():
        if field_.startswith("JobState="):
            return field_.split("=", 1)[1]
    return None


def _sbatch_works() -> bool:
    try:
        subprocess.run(["squeue", "-h", "-o", "%i"], check=True, timeout=15, capture_output=True)
        return True
    except (OSError, subprocess.SubprocessError):
        return False


if __name__ == "__main__":
    sys.exit(main())
