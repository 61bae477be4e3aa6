"""Helpers shared by the sweep tests (not collected: no `test_` prefix)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY = REPO / ".venv" / "bin" / "python"


def run_script(script: str, args: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """Run `experiments/<script>` (or the script at an absolute path) with the repo's Python."""
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
