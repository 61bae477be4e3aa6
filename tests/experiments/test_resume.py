"""An interrupted sweep resumes: Ctrl-C (SIGINT) while the second trial runs, then `--resume`
finishes only what was unfinished; the finished trial is not run again."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from mlflow.tracking import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_helpers import PY, REPO, sweep_args  # noqa: E402

pytestmark = pytest.mark.slow


def _wait_for(path, proc, timeout=400):
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, f"sweep exited early ({proc.returncode}):\n{proc.stdout.read()[-3000:]}"
        assert time.monotonic() - t0 < timeout, f"{path} did not appear in {timeout} s"
        time.sleep(0.5)


def test_interrupted_sweep_resumes(tmp_path):
    args = [
        *sweep_args(tmp_path, "resume-test"),
        "--only",
        "none-random,full",
        "ray.max_concurrent_trials=1",
        "pretrain_overrides=[train.steps=600]",  # long enough to be interrupted mid-pretraining
        "probe.curve_every=0",  # the smoke preset's curve would probe every 12 of the 600 steps
    ]
    cmd = [str(PY), str(REPO / "experiments" / "ablate_losses.py"), *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        sweeps = tmp_path / "sweeps"
        _wait_for(sweeps, proc)
        _wait_for(next(iter(sweeps.glob("losses-smoke-*")), sweeps / "missing") / "sweep.json", proc)
        sweep_dir = next(sweeps.glob("losses-smoke-*"))
        _wait_for(sweep_dir / "trials" / "none-random-s0" / "attempt-1" / "metrics.json", proc)
        # inside the second trial's pretraining: its step log exists
        _wait_for(sweep_dir / "trials" / "full-s0" / "attempt-1" / "full-s0" / "metrics.jsonl", proc)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out[-3000:]
    assert f"--resume {sweep_dir}" in out
    assert not (sweep_dir / "trials" / "full-s0" / "attempt-1" / "metrics.json").exists()

    res = subprocess.run(
        [*cmd, "--resume", str(sweep_dir)], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    trials = pl.read_parquet(sweep_dir / "results" / "trials.parquet")
    assert trials["key"].to_list() == ["none-random-s0", "full-s0"]
    assert trials["status"].to_list() == ["ok", "ok"]
    # the finished trial was not run again; the interrupted one got a second attempt
    assert not (sweep_dir / "trials" / "none-random-s0" / "attempt-2").exists()
    assert (sweep_dir / "trials" / "full-s0" / "attempt-2" / "metrics.json").exists()

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("resume-test")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`lmp.table` = 'losses'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the same parent, reopened
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'"
    )
    status = sorted((r.data.tags["lmp.trial"], r.info.status) for r in children)
    assert [s for s in status if s[0] == "none-random-s0"] == [("none-random-s0", "FINISHED")]
    full = [s for k, s in status if k == "full-s0"]
    # one finished run; the interrupted attempt's run (if it got as far as opening one) is not left RUNNING
    assert full.count("FINISHED") == 1 and set(full) <= {"FINISHED", "KILLED", "FAILED"}, status
    assert set(trials["child_run_id"]) == {r.info.run_id for r in children if r.info.status == "FINISHED"}
