"""Pretraining on a real single-node SLURM (slurm/local-cluster.sh): `sbatch --wait slurm/pretrain.sh`
with 2 tasks (ZeRO-2 over gloo), the submitit path, preemption -> requeue -> resume, and a bad config.

The cluster runs for this module in a tmp folder and is stopped at its end even when a test fails
(module scope: other modules start their own on the same fixed ports, one at a time).
The jobs share the node's 2 CPUs, so they run one after another; each takes tens of seconds on an idle
machine (imports + DeepSpeed set-up dominate; 40 tiny steps take ~10 s).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Each job takes seconds of training but up to minutes of start-up when the 2 cores are busy.
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
LOCAL_CLUSTER = ROOT / "slurm" / "local-cluster.sh"
PRETRAIN_SH = ROOT / "slurm" / "pretrain.sh"
TINY = ROOT / "experiments" / "configs" / "pretrain" / "tiny.yaml"
STEPS, CKPT_EVERY = 40, 10
# model.max_tokens: windows of the tiny demo store can hold more than tiny.yaml's 64 tokens.
COMMON = [
    f"train.steps={STEPS}",
    f"train.ckpt_every={CKPT_EVERY}",
    "train.zero_stage=2",
    "model.max_tokens=256",
]
EXPERIMENT = "lmp-pretrain-tiny"  # tiny.yaml's mlflow.experiment
JOB_TIMEOUT = 1200  # generous: teammates share the 2 cores


# ----------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The local SLURM cluster: environment with SLURM_CONF; stopped (and checked gone) at the end."""
    if shutil.which("bash") is None:
        pytest.skip("bash is needed")
    d = tmp_path_factory.mktemp("slurm")
    pids: dict[str, int] = {}
    start = subprocess.run(
        ["bash", str(LOCAL_CLUSTER), "start", str(d)], capture_output=True, text=True, timeout=600
    )
    try:
        assert start.returncode == 0, f"local-cluster.sh start failed:\n{start.stdout}\n{start.stderr}"
        assert f"export SLURM_CONF={d}/etc/slurm.conf" in start.stdout
        pids.update({n: int((d / "run" / f"{n}.pid").read_text()) for n in ("slurmctld", "slurmd")})
        env = {**os.environ, "SLURM_CONF": str(d / "etc" / "slurm.conf")}
        env.pop("SLURM_JOB_ID", None)  # never mistake the test runner for a job
        yield env
    finally:
        stop = subprocess.run(
            ["bash", str(LOCAL_CLUSTER), "stop", str(d)], capture_output=True, text=True, timeout=300
        )
        assert stop.returncode == 0, stop.stderr
    for name, pid in pids.items():
        alive = Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/comm").read_text().strip() == name
        assert not alive, f"{name} (pid {pid}) still running after local-cluster.sh stop"


@pytest.fixture(scope="module")
def work(tmp_path_factory, cluster):
    """The tiny demo store (`lmp-data demo OUT --size tiny`), a SQLite MLflow store and a run folder."""
    d = tmp_path_factory.mktemp("pretrain")
    lmp_data = Path(sys.executable).parent / "lmp-data"
    r = subprocess.run(
        [str(lmp_data), "demo", str(d / "demo"), "--size", "tiny", "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    store = d / "demo" / "pretrain.zarr"
    assert store.is_dir()
    env = {
        **cluster,
        "MLFLOW_TRACKING_URI": f"sqlite:///{d}/mlflow.db",
        "CONFIG": str(TINY),
        "STORE": str(store),
    }
    return {"dir": d, "env": env, "store": store, "uri": env["MLFLOW_TRACKING_URI"]}


def _overrides(work, name: str, extra: list[str] = ()) -> list[str]:
    return [f"name={name}", f"train.out_dir={work['dir'] / 'runs'}", *COMMON, *extra]


def _submit(work, name: str, extra: list[str] = ()) -> tuple[subprocess.Popen, str, Path]:
    """`sbatch --wait slurm/pretrain.sh` in the background; returns the process, job id and log path."""
    env = {**work["env"], "OVERRIDES": " ".join(_overrides(work, name, extra))}
    log = work["dir"] / f"{name}-%j.out"
    proc = subprocess.Popen(
        ["sbatch", "--wait", "--parsable", f"--output={log}", str(PRETRAIN_SH)],
        cwd=work["dir"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    job_id = proc.stdout.readline().strip().split(";")[0]
    assert job_id.isdigit(), (
        f"sbatch printed {job_id!r}: {proc.stderr.read() if proc.poll() is not None else ''}"
    )
    return proc, job_id, Path(str(log).replace("%j", job_id))


def _job(env, job_id: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", job_id], env=env, capture_output=True, text=True, timeout=30
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def _summary(log_text: str) -> dict:
    """The JSON line rank 0 prints at the end of a run."""
    lines = [line for line in log_text.splitlines() if line.startswith('{"run_dir"')]
    assert lines, "no run summary in the job log"
    return json.loads(lines[-1])


def _mlflow_runs(work, name: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=work["uri"])
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp is not None, f"no MLflow experiment {EXPERIMENT!r} in {work['uri']}"
    return client.search_runs([exp.experiment_id], f"attributes.run_name = '{name}'")


def _check_finished_run(work, name: str, final_loss: float):
    """One MLflow run named `name`, FINISHED, with every step's loss; the exported weights exist."""
    from mlflow.tracking import MlflowClient

    runs = _mlflow_runs(work, name)
    assert len(runs) == 1, f"expected one MLflow run {name!r}, found {len(runs)}"
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["train.zero_stage"] == "2"
    assert run.data.params["derived.world_size"] == "2"
    hist = MlflowClient(tracking_uri=work["uri"]).get_metric_history(run.info.run_id, "loss/total")
    assert sorted({m.step for m in hist}) == list(range(1, STEPS + 1))
    last = max(hist, key=lambda m: (m.step, m.timestamp))
    assert last.value == pytest.approx(final_loss, rel=1e-6)
    weights = work["dir"] / "runs" / name / "export" / "model.safetensors"
    assert weights.is_file() and weights.stat().st_size > 10_000
    return run


def _weights(work, name: str) -> dict:
    from safetensors.torch import load_file

    return load_file(work["dir"] / "runs" / name / "export" / "model.safetensors")


@pytest.fixture(scope="module")
def reference(work):
    """An uninterrupted 2-task run through `sbatch --wait slurm/pretrain.sh`."""
    t0 = time.monotonic()
    proc, job_id, log = _submit(work, "ref")
    rc = proc.wait(timeout=JOB_TIMEOUT)
    text = log.read_text() if log.exists() else ""
    return {"rc": rc, "job": job_id, "log": text, "seconds": time.monotonic() - t0}


# -------------------------------------------------------------------------------------------- tests
def test_sbatch_pretrain_completes(work, reference):
    assert reference["rc"] == 0, reference["log"][-3000:]
    info = _job(work["env"], reference["job"])
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "0"
    assert "start: 2 tasks on localhost" in reference["log"]
    assert re.search(r"master localhost:\d+", reference["log"])
    port = int(re.search(r"master localhost:(\d+)", reference["log"]).group(1))
    assert port == 10000 + int(reference["job"]) % 50000
    summary = _summary(reference["log"])
    assert summary["steps"] == STEPS and summary["resumed_from"] is None
    run = _check_finished_run(work, "ref", summary["final_losses"]["loss/total"])
    assert run.info.run_id == summary["mlflow_run_id"]


def test_submitit_pretrain_completes(work, reference):
    assert reference["rc"] == 0
    cmd = [
        sys.executable,
        str(ROOT / "experiments" / "submit_pretrain.py"),
        str(TINY),
        f"data.store={work['store']}",
        *_overrides(work, "sub"),
        "slurm.tasks_per_node=2",
        "slurm.time_min=60",
        "--wait",
    ]
    r = subprocess.run(
        cmd, cwd=work["dir"], env=work["env"], capture_output=True, text=True, timeout=JOB_TIMEOUT
    )
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    job_id = re.search(r"^job id: (\d+) \(slurm", r.stdout, re.M).group(1)
    assert re.search(r"^logs: \S+_0_log\.out", r.stdout, re.M)
    run_id = re.search(r"^MLflow run: ([0-9a-f]{32})$", r.stdout, re.M).group(1)
    # The result files are written before the job's processes exit: give SLURM a moment to see the end.
    deadline = time.monotonic() + 180
    while _job(work["env"], job_id)["JobState"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(1)
    assert _job(work["env"], job_id)["JobState"] == "COMPLETED"
    result = json.loads(re.search(r"^result: (\{.*\})$", r.stdout, re.M).group(1))
    assert result["mlflow_run_id"] == run_id and result["steps"] == STEPS
    run = _check_finished_run(work, "sub", result["final_losses"]["loss/total"])
    assert run.info.run_id == run_id
    # Same config, seed and world size as the sbatch run: the same training.
    ref = _summary(reference["log"])
    assert result["final_losses"]["loss/total"] == pytest.approx(ref["final_losses"]["loss/total"], rel=1e-5)


def test_preemption_requeues_and_resumes(work, reference):
    assert reference["rc"] == 0
    proc, job_id, log = _submit(work, "pre")
    metrics = work["dir"] / "runs" / "pre" / "metrics.jsonl"
    deadline = time.monotonic() + JOB_TIMEOUT
    steps_done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists():
            steps_done = len(metrics.read_text().splitlines())
            if steps_done >= 5:
                break
        time.sleep(0.1)
    assert 5 <= steps_done < STEPS, f"could not signal mid-run (steps done: {steps_done})"
    # What SLURM does 120 s before the time limit (--signal=B:USR1@120).
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], env=work["env"], check=True, timeout=30)
    rc = proc.wait(timeout=JOB_TIMEOUT)
    text = log.read_text()
    assert rc == 0, text[-3000:]
    info = _job(work["env"], job_id)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", info
    assert "got SIGUSR1" in text and f"requeueing job {job_id}:" in text
    resumed = [int(s) for s in re.findall(r"resumed from \S+ \(step (\d+)\)", text)]
    assert len(resumed) == 1 and 5 <= resumed[0] < STEPS, resumed
    summary = _summary(text)
    assert summary["resumed_from"] == resumed[0]
    # The MLflow run continued: one run, FINISHED, every step, tagged with the checkpoint it resumed.
    run = _check_finished_run(work, "pre", summary["final_losses"]["loss/total"])
    assert run.info.run_id == summary["mlflow_run_id"]
    assert run.data.tags.get("resumed_from", "").startswith("step")
    # Same result as the uninterrupted run.
    ref = _summary(reference["log"])
    assert summary["final_losses"]["loss/total"] == pytest.approx(ref["final_losses"]["loss/total"], rel=1e-5)
    a, b = _weights(work, "ref"), _weights(work, "pre")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


def test_invalid_config_fails_fast(work):
    t0 = time.monotonic()
    proc, job_id, log = _submit(work, "bad", ["train.lr=-1"])
    rc = proc.wait(timeout=600)
    elapsed = time.monotonic() - t0
    text = log.read_text()
    assert rc == 2, text
    assert "train.lr" in text and "expected > 0" in text, text
    assert "invalid config" in text and "start:" not in text  # never reached srun
    info = _job(work["env"], job_id)
    assert info["JobState"] == "FAILED" and info["Restarts"] == "0" and info["ExitCode"] == "2:0"
    assert not (work["dir"] / "runs" / "bad").exists()
    assert elapsed < 300, f"a config error took {elapsed:.0f} s to surface"
