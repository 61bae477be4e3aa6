"""The sweep's console without Ray: the redirection of the process's output into sweep.log, the progress
lines (counts, ETA, best row), the live bar on a terminal. The real sweep's output: test_smoke_sweep.py."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

HERE = Path(__file__).resolve().parent
EXPERIMENTS = HERE.parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

from _sweep import progress as prog  # noqa: E402
from _sweep.spec import TrialSpec  # noqa: E402

SCRIPT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    sys.path.insert(0, {experiments!r})
    from _sweep.progress import SweepConsole
    console = SweepConsole(verbose={verbose})
    console.start(Path({folder!r}))
    print("noise on stdout")
    print("noise on stderr", file=sys.stderr)
    os.system("echo noise of a child process")
    console.line("[sweep] a line of the sweep")
    console.stop()
    print("after stop")
    """
)


def _run(tmp_path: Path, verbose: bool) -> subprocess.CompletedProcess:
    code = SCRIPT.format(experiments=str(EXPERIMENTS), verbose=verbose, folder=str(tmp_path))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_console_sends_everything_else_to_the_log(tmp_path):
    p = _run(tmp_path, verbose=False)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "[sweep] a line of the sweep\nafter stop\n" and p.stderr == ""
    log = (tmp_path / "sweep.log").read_text()
    for text in (
        "noise on stdout",
        "noise on stderr",
        "noise of a child process",
        "[sweep] a line of the sweep",
    ):
        assert text in log, log
    assert "after stop" not in log


def test_console_verbose_keeps_the_stream(tmp_path):
    p = _run(tmp_path, verbose=True)
    assert p.returncode == 0, p.stderr
    assert "noise on stdout" in p.stdout and "noise of a child process" in p.stdout
    assert "noise on stderr" in p.stderr and "[sweep] a line of the sweep" in p.stdout
    assert not (tmp_path / "sweep.log").exists()


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def probe_only(ctx):  # stand-ins: the progress display tells trials' work functions apart (ETA)
    return {}


def pretrain_and_probe(ctx):
    return {}


def _trial(key, variant, status="PENDING", result=None, error_file=None):
    spec = TrialSpec(key=key, variant=variant, seed=0, work=probe_only).to_dict()  # Tune's trial.config
    return SimpleNamespace(
        config={"trial": spec}, status=status, last_result=result or {}, pickled_error_file=None,
        error_file=error_file,
    )  # fmt: skip


def _specs():
    return [
        TrialSpec(key="base-s0", variant="Base", seed=0, work=probe_only),
        TrialSpec(key="base-s1", variant="Base", seed=1, work=probe_only),
        TrialSpec(key="full-s0", variant="Full", seed=0, work=pretrain_and_probe),
        TrialSpec(key="full-s1", variant="Full", seed=1, work=pretrain_and_probe),
    ]


def test_progress_lines_eta_and_best_row(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(prog.time, "monotonic", clock)
    console = prog.SweepConsole()
    console.out, console.tty = io.StringIO(), False
    p = prog.SweepProgress(console, "Table 1")
    p.begin_stage("trials", _specs(), 0, 1)
    trials = [_trial(s.key, s.variant) for s in _specs()]
    trials[0].status = trials[2].status = "RUNNING"
    p.step(trials)
    assert p.eta() is None and "ETA ?" in p.summary()  # nothing finished: no estimate yet
    assert "0/4 done, 2 running, 0 failed" in p.summary()

    clock.t += 10
    trials[0].last_result = {"content": 40.0, "metadata": 20.0, "user": 1.5, "child_run_id": "x"}
    p.completed(trials[0])
    trials[0].status, trials[1].status = "TERMINATED", "RUNNING"
    p.step(trials)
    # one probe trial took 10 s; nothing is known of pretraining trials yet: the overall mean stands in.
    # full-s0 ran 10 s of an expected 10 (counts 10 %), base-s1 just started, full-s1 waits; 2 at once
    assert p.eta() == pytest.approx((1 + 10 + 10) / 2)
    clock.t += 30
    trials[2].last_result = {"content": 50.0, "metadata": 30.0, "user": 1.0}
    p.completed(trials[2])
    trials[2].status = "TERMINATED"
    p.step(trials)
    # base-s1 running for 30 s of an expected 10 (counts 10 %), full-s1 waiting (40 s), 2 at once
    assert p.eta() == pytest.approx((1 + 40) / 2)
    err = tmp_path / "error.txt"
    err.write_text("Failure # 1\nTraceback ...\nstandin_work.InjectedFailure: injected failure in full-s1\n")
    p.recovering(_trial("full-s1", "Full", error_file=str(err)))
    p.errored(_trial("base-s1", "Base", error_file=str(err)))
    p.end()

    out = console.out.getvalue()
    lines = out.splitlines()
    assert lines[0] == "[1/4] ✓ base-s0  content 40.00  metadata 20.00  user 1.500  (10 s)"
    assert lines[1].startswith("[sweep] 1/4 done, 1 running, 0 failed · 10 s elapsed · ETA ")
    assert lines[1].endswith("best so far: Base (content 40.00)")
    assert lines[2].startswith("[2/4] ✓ full-s0  content 50.00") and lines[2].endswith("(40 s)")
    assert lines[3].endswith("best so far: Full (content 50.00)")
    assert (
        lines[4]
        == "[2/4] ↻ full-s1  attempt failed, retrying: standin_work.InjectedFailure: injected failure in full-s1"
    )
    assert lines[6].startswith("[3/4] ✗ base-s1  failed: standin_work.InjectedFailure")
    assert "2/4 done" not in lines[7] and "3/4 done, " in lines[7] and "1 failed" in lines[7]
    assert "\x1b" not in out and "\r" not in out  # plain lines: no control codes


def test_progress_on_a_terminal_is_a_live_bar(monkeypatch):
    console = prog.SweepConsole()
    console.out, console.tty = io.StringIO(), True
    p = prog.SweepProgress(console, "Table 1")
    p.begin_stage("trials", _specs(), 0, 1)
    assert console.bar is not None
    t = _trial("base-s0", "Base", result={"content": 40.0, "metadata": 20.0, "user": 1.5})
    p.started(t)
    p.completed(t)
    p.end()
    out = console.out.getvalue()
    assert "\r" in out and "sweep  25%|" in out and "1/4 done" in out  # the bar, redrawn in place
    assert "[1/4] ✓ base-s0  content 40.00" in out  # the trial's line, above the bar
    assert "[sweep] 1/4 done" not in out  # no status lines: the bar is the status
    assert console.bar is None
