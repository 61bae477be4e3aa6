"""Shared fixture of the sweep tests: one finished smoke sweep (Table 1) in a private MLflow store.

It runs the real script (`experiments/ablate_losses.py --scale smoke`): local Ray, DeepSpeed
pretraining, LVU probes, an MLflow parent run and child runs. The "none-random" trial is made to fail once
(`flaky_ablate_losses.py`: the script with that trial's work wrapped to fail), so its retry is part of the
same sweep.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from sweep_helpers import run_script, sweep_args  # noqa: E402


@dataclass
class SmokeSweep:
    root: Path
    tracking_uri: str
    experiment: str
    out_dir: Path
    stdout: str
    returncode: int
    stderr: str = ""

    @property
    def sweep_dir(self) -> Path:
        dirs = sorted(self.out_dir.glob("losses-smoke-*"))
        assert len(dirs) == 1, dirs
        return dirs[0]


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory) -> SmokeSweep:
    root = tmp_path_factory.mktemp("smoke_sweep")
    proc = run_script(str(HERE / "flaky_ablate_losses.py"), sweep_args(root, "smoke-losses"))
    (root / "stdout.txt").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        pytest.fail(f"smoke sweep exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return SmokeSweep(
        root, f"sqlite:///{root / 'mlflow.db'}", "smoke-losses", root / "sweeps", proc.stdout, 0, proc.stderr
    )
