"""What `lmp-pretrain` prints: on a terminal a live bar (step, ETA, loss) instead of the per-step log
lines; elsewhere the log lines as before; never DeepSpeed's "no accelerator" / torch's CUDA_HOME noise
on a machine without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmp_data.console import has_gpu_device

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pty_run import run_on_a_terminal  # noqa: E402

pytestmark = pytest.mark.slow  # ~1 min: two 3-step runs, each importing DeepSpeed

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "experiments" / "configs" / "pretrain" / "tiny.yaml"


def _cmd(tmp: Path, name: str) -> list[str]:
    return [
        sys.executable, "-m", "lmp_model.pretrain.cli", str(TINY), f"name={name}", "train.steps=3",
        f"train.out_dir={tmp}", "train.threads=1", "mlflow.enabled=false",
    ]  # fmt: skip


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return env | {"TERM": "xterm", "COLUMNS": "120"}


def test_pretrain_bar_on_a_terminal_log_lines_elsewhere(tmp_path):
    rc, tty = run_on_a_terminal(_cmd(tmp_path, "tty"), cwd=REPO, env=_env(), timeout=300)
    assert rc == 0, tty[-3000:]
    bar = tty.replace("\r\n", "\n")
    assert "\r" in bar and "3/3" in bar and "loss " in bar and ("step/s" in bar or "s/step" in bar), tty[
        -3000:
    ]
    assert "step 1/3 loss" not in tty and '"run_dir"' in tty  # the bar replaces the step lines

    p = subprocess.run(
        _cmd(tmp_path, "pipe"), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "step 1/3 loss" in p.stderr and "step 3/3 loss" in p.stderr  # the log lines, unchanged
    assert "\r" not in p.stderr and "\x1b" not in p.stderr
    if not has_gpu_device():
        for out in (tty, p.stderr + p.stdout):
            assert "Setting accelerator to CPU" not in out and "No CUDA runtime is found" not in out
