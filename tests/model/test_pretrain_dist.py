"""`lmp-pretrain` as users launch it: subprocesses, 2 ranks under torchrun (gloo), SIGKILL and --resume.

Each case starts real processes (torch + DeepSpeed imports, a DeepSpeed engine per rank), so they take
tens of seconds each on 2 cores; the less central variants are marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from lmp_model.export import load_pretrained
from lmp_model.pretrain.dist import launch_command

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "experiments" / "configs" / "pretrain" / "tiny.yaml"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_store import make_store  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("store") / "store")


def _env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    # cache bytecode outside the repo: each subprocess then imports torch/DeepSpeed in seconds, not tens
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(Path.home() / ".cache" / "lmp-pycache"))
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def command(store: Path, tmp: Path, nproc: int, *overrides: str, resume: bool = False) -> list[str]:
    args = [
        str(TINY),
        f"data.store={store}",
        f"train.out_dir={tmp / 'runs'}",
        f"mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
        "train.threads=1",
        *overrides,
    ] + (["--resume"] if resume else [])
    return launch_command(args, nproc)


def launch(cmd: list[str], timeout: float = 300) -> dict:
    p = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    lines = [line for line in p.stdout.splitlines() if line.startswith('{"run_dir"')]
    assert len(lines) == 1, p.stdout[-3000:]  # rank 0 alone prints the summary
    return json.loads(lines[0])


def descendants(pid: int) -> list[int]:
    """Pids of every process below `pid`, so a test can SIGKILL exactly what it started."""
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def runs_in(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT run_uuid, status FROM runs").fetchall()


@pytest.mark.parametrize("stage", [pytest.param(0, marks=pytest.mark.slow), 2, 3])
def test_two_ranks_train_track_once_resume_export(store, tmp_path, stage):
    common = (f"name=z{stage}", f"train.zero_stage={stage}", "train.ckpt_every=3")
    out = launch(command(store, tmp_path, 2, *common, "train.steps=6"))
    run_dir = Path(out["run_dir"])
    hist = metrics(run_dir)
    totals = [h["loss/total"] for h in hist]
    assert [h["step"] for h in hist] == list(range(1, 7))
    assert np.mean(totals[-2:]) < np.mean(totals[:2]), totals
    assert runs_in(tmp_path / "mlflow.db") == [(out["mlflow_run_id"], "FINISHED")]  # one run, not two

    # the checkpoint reloads on 2 ranks: continue to step 8 in the same MLflow run
    out2 = launch(command(store, tmp_path, 2, *common, "train.steps=8", resume=True))
    assert out2["resumed_from"] == 6 and out2["mlflow_run_id"] == out["mlflow_run_id"]
    hist2 = metrics(run_dir)
    assert [h["step"] for h in hist2] == list(range(1, 9))
    assert [h["loss/total"] for h in hist2[:6]] == totals
    assert runs_in(tmp_path / "mlflow.db") == [(out["mlflow_run_id"], "FINISHED")]

    # consolidated fp32 export: every parameter present, trained (differs from the seeded init)
    from lmp_model.model import LMP
    from lmp_model.pretrain.checkpoint import seed_all

    model = load_pretrained(out2["export_dir"])
    seed_all(0)
    init = LMP(model.cfg, model.dims)
    assert model.state_dict().keys() == init.state_dict().keys()
    changed = [not torch.equal(a, b) for a, b in zip(model.parameters(), init.parameters())]
    assert sum(changed) >= 0.9 * len(changed)


@pytest.mark.parametrize(
    "nproc,stage",
    [(1, 0), pytest.param(2, 2, marks=pytest.mark.slow), pytest.param(1, 3, marks=pytest.mark.slow)],
)
def test_sigkill_then_resume_gives_the_same_losses(store, tmp_path, nproc, stage):
    steps, every = 30, 4
    common = (
        f"train.zero_stage={stage}",
        f"train.steps={steps}",
        f"train.ckpt_every={every}",
        "train.log_every=5",
    )
    ref = launch(command(store, tmp_path, nproc, "name=ref", *common))
    ref_hist = metrics(Path(ref["run_dir"]))

    run_dir = tmp_path / "runs" / "killed"
    proc = subprocess.Popen(
        command(store, tmp_path, nproc, "name=killed", *common),
        env=_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    seen = 0
    while time.time() < deadline and proc.poll() is None:
        f = run_dir / "metrics.jsonl"
        seen = len(f.read_text().splitlines()) if f.exists() else 0
        if seen >= 10:
            break
        time.sleep(0.01)
    victims = [proc.pid, *descendants(proc.pid)]  # torchrun starts its ranks in their own sessions
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    assert 10 <= seen < steps, f"run not killed mid-way (saw {seen} steps, exit {proc.returncode})"

    out = launch(command(store, tmp_path, nproc, "name=killed", *common, resume=True))
    assert out["resumed_from"] is not None and 0 < out["resumed_from"] <= seen
    assert out["resumed_from"] % every == 0
    hist = metrics(run_dir)
    assert [h["step"] for h in hist] == list(range(1, steps + 1))
    for a, b in zip(hist, ref_hist):
        for key in [k for k in a if k.startswith("loss/")]:
            assert abs(a[key] - b[key]) <= 1e-6, (a["step"], key, a[key], b[key])
    # the resumed process continued the killed run's MLflow run
    assert sorted(s for _, s in runs_in(tmp_path / "mlflow.db")) == ["FINISHED", "FINISHED"]
    final_a = load_pretrained(out["export_dir"]).state_dict()
    final_b = load_pretrained(ref["export_dir"]).state_dict()
    assert all(torch.allclose(final_a[k], final_b[k], atol=1e-6, rtol=0) for k in final_a)


def test_cli_invalid_config_and_help(tmp_path):
    env = _env()
    p = subprocess.run(
        [sys.executable, "-m", "lmp_model.pretrain.cli", str(TINY), "train.zero_stage=7"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 2 and "train.zero_stage: expected 0, 1, 2 or 3, got 7" in p.stderr
    p = subprocess.run(
        [str(Path(sys.executable).parent / "lmp-pretrain"), "--help"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0 and "--resume" in p.stdout and "key=value" in p.stdout
