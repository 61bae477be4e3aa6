"""slurm/ray_sweep.sh on the local SLURM cluster: the job starts a Ray head inside its allocation,
runs a smoke sweep on it (the driver connects through RAY_ADDRESS) and stops exactly its Ray."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_helpers import REPO, sweep_args  # noqa: E402

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(1800)]

LOCAL_CLUSTER = REPO / "slurm" / "local-cluster.sh"


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory):
    if not LOCAL_CLUSTER.exists():
        pytest.skip("slurm/local-cluster.sh not there")
    if _port_busy(6817) or _port_busy(6818):
        pytest.skip("another local SLURM cluster holds ports 6817/6818 (one per machine)")
    d = tmp_path_factory.mktemp("slurm")
    start = subprocess.run(
        ["bash", str(LOCAL_CLUSTER), "start", str(d)], capture_output=True, text=True, timeout=600
    )
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        env = {**os.environ, "SLURM_CONF": str(d / "etc" / "slurm.conf")}
        for key in ("SLURM_JOB_ID", "RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
            env.pop(key, None)
        yield env
    finally:
        subprocess.run(
            ["bash", str(LOCAL_CLUSTER), "stop", str(d)], capture_output=True, text=True, timeout=300
        )


def test_ray_sweep_in_slurm_allocation(slurm_env, tmp_path):
    out_file = tmp_path / "job.out"
    cmd = [
        "sbatch",
        "--wait",
        "--cpus-per-task=2",
        f"--output={out_file}",
        f"--chdir={REPO}",
        str(REPO / "slurm" / "ray_sweep.sh"),
        "experiments/ablate_losses.py",
        *sweep_args(tmp_path, "slurm-sweep"),
        "--only",
        "none-random",
    ]
    proc = subprocess.run(cmd, env=slurm_env, capture_output=True, text=True, timeout=1500)
    log = out_file.read_text() if out_file.exists() else ""
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{log[-5000:]}"
    m = re.search(r"Ray head on (\S+):(\d+) .* temp (\S+)", log)
    assert m, log[-3000:]
    head, temp_dir = f"{m.group(1)}:{m.group(2)}", Path(m.group(3))
    assert "sweep exited with 0" in log
    sweep_dir = next((tmp_path / "sweeps").glob("losses-smoke-*"))
    ray_log = log + (sweep_dir / "sweep.log").read_text()  # Ray's own lines go to the sweep's log file
    assert "Started a local Ray instance" not in ray_log  # the driver joined the job's Ray
    assert (
        "Connected to Ray cluster" in ray_log
        or f"Connecting to existing Ray cluster at address: {head}" in ray_log
    )
    trials = pl.read_parquet(sweep_dir / "results" / "trials.parquet")
    assert trials["key"].to_list() == ["none-random-s0"] and trials["status"].to_list() == ["ok"]
    # the job stopped its own Ray: nothing left listening, its temp folder removed
    assert not temp_dir.exists()
    assert not _port_busy(int(m.group(2)))
