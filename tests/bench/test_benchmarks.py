"""The benchmark entry points run: `benchmarks/run_all.py --tiny` writes every line of its report and
`benchmarks/gpu_check.sh --dry-run` runs every check of the GPU path on the CPU (figures not asserted:
this machine is shared, only that each line is produced and the correctness checks pass)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))


def _env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(Path.home() / ".cache" / "lmp-pycache"))
    return env


@pytest.mark.slow
def test_run_all_tiny_writes_every_line(tmp_path):
    from run_all import FIGURES

    out = tmp_path / "report.txt"
    p = subprocess.run(
        [sys.executable, "benchmarks/run_all.py", "--tiny", "--out", str(out)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    text = out.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("# lmp benchmark report") and "size tiny" in lines[0]
    assert re.search(r"load average \(1/5/15 min\) at start [\d.]+/[\d.]+/[\d.]+, at end", text)
    for name in FIGURES:
        line = next((x for x in lines if x.startswith(name + " ")), None)
        assert line is not None, f"no line for {name!r} in\n{text}"
        assert "| target " in line and re.search(r"\| (PASS|MISS|SKIP)\b", line), line
        if "| MISS" in line:
            assert "| bound: " in line or name in ("loader/zarr", "data wait", "memory demo", "memory MAD"), (
                line
            )
    assert "ERROR" not in text.split("# details")[0]
    for prof in ("profile_loader.txt", "profile_step.txt", "profile_probe.txt"):
        assert (tmp_path / prof).read_text().startswith("# profile of")


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_check(tmp_path):
    out = tmp_path / "gpu_check.txt"
    p = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run", "--out", str(out)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    text = out.read_text()
    assert text.startswith("# gpu_check --dry-run")
    for check in (
        "store",
        "batch device == host",
        "loader b=",
        "(fp32|bf16) matmul peak",
        "model",
        "pretraining",
        "MFU",
    ):
        assert re.search(rf"^(PASS|MISS|INFO)\s+{check}", text, re.M), f"{check}:\n{text}"
    assert re.search(r"^PASS\s+batch device == host", text, re.M)
    assert re.search(
        r"^PASS\s+resume after kill\s+SIGKILL at step \d+, resumed from checkpoint step \d+", text, re.M
    )
    assert "ERROR" not in text and text.rstrip().splitlines()[-1].startswith("# ok")
