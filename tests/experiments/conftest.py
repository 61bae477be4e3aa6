"""Shared fixture of the sweep tests: one finished smoke sweep (Table 1) in a private MLflow store.

It runs the real script (`experiments/ablate_losses.py --scale smoke`): local Ray, DeepSpeed
pretraining, LVU probes, an MLflow parent run and child runs. The "none" trial is made to fail once
(the failure-injection hook), so its retry is part of the same sweep.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PY = REPO / ".venv" / "bin" / "python"


@dataclass
class SmokeSweep:
    root: Path
    tracking_uri: str
    experiment: str
    out_dir: Path
    stdout: str
    returncode: int

    @property
    def sweep_dir(self) -> Path:
        dirs = sorted(self.out_dir.glob("losses-smoke-*"))
        assert len(dirs) == 1, dirs
        return dirs[0]


def run_script(script: str, args: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    return subprocess.run(
        [str(PY if PY.exists() else sys.executable), str(REPO / "experiments" / script), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def sweep_args(root: Path, experiment: str) -> list[str]:
    return [
        "--scale",
        "smoke",
        "--tracking-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--experiment",
        experiment,
        f"out_dir={root / 'sweeps'}",
        f"mlflow.artifact_root={root / 'artifacts'}",
        "ray.num_cpus=2",
        "ray.verbose=0",
    ]


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory) -> SmokeSweep:
    root = tmp_path_factory.mktemp("smoke_sweep")
    proc = run_script(
        "ablate_losses.py", [*sweep_args(root, "smoke-losses"), "inject_failures=[{match: none, times: 1}]"]
    )
    (root / "stdout.txt").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        pytest.fail(f"smoke sweep exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return SmokeSweep(
        root, f"sqlite:///{root / 'mlflow.db'}", "smoke-losses", root / "sweeps", proc.stdout, 0
    )
