"""What `lmp-bench` prints while its probes train: a plain line per finished task when stderr is not a
terminal (no control codes), a live bar (probes done / total, ETA) on a terminal."""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path

from omegaconf import OmegaConf

from lmp_bench.cli import main
from lmp_bench.progress import current, probe_progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pty_run import run_on_a_terminal  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _lvu_args(tiny_bench, tiny_cfg, tmp_path) -> list[str]:
    """`lmp-bench lvu --model none`: 2 rows (base features, random init) x 2 tasks x 2 seeds = 8 probes."""
    store, labels, _, _ = tiny_bench
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(OmegaConf.to_yaml(OmegaConf.structured(tiny_cfg)))
    return [
        "lvu", "--model", "none", "--model-config", str(cfg), "--store", str(store), "--labels", str(labels),
        "--tasks", "genre,view_count", "--seeds", "2", "--k", "5", "--no-mlflow", "--out", str(tmp_path / "x.parquet"),
    ]  # fmt: skip


def test_lvu_prints_a_line_per_task_without_a_terminal(tiny_bench, tiny_cfg, tmp_path, capsys):
    assert main(_lvu_args(tiny_bench, tiny_cfg, tmp_path)) == 0
    out, err = capsys.readouterr()
    assert "\r" not in err and "\x1b" not in err
    lines = [line for line in err.splitlines() if line.startswith("lvu [")]
    pattern = re.compile(
        r"lvu \[(\d)/8 probes\] (\w+) \((.+)\): (?:top1|mse) -?[\d.]+ over 2 seeds \(.+ elapsed, ETA .+\)"
    )
    got = [pattern.fullmatch(line) for line in lines]
    assert all(got), lines
    assert [(m[1], m[2], m[3]) for m in got] == [
        ("2", "genre", "no pretraining: base features"),
        ("4", "view_count", "no pretraining: base features"),
        ("6", "genre", "no pretraining: frozen random init"),
        ("8", "view_count", "no pretraining: frozen random init"),
    ]
    assert lines[-1].endswith("ETA 0 s)")
    assert "no pretraining: base features" in out  # the table still goes to stdout, without the lines
    assert "probes]" not in out


def test_progress_counts_skipped_tasks_and_is_silent_outside_a_command():
    stream = io.StringIO()
    with probe_progress("lvu", stream) as p:
        assert current() is p and not p.live
        p.plan(6)
        p.plan(99)  # an inner caller's plan: the outermost one counts
        p.probes_done(3)
        p.task_done("genre (LMP)", "skipped: no clips with features in split(s) ['val']")
    assert p.total == 6 and p.done == 3
    assert stream.getvalue().startswith("lvu [3/6 probes] genre (LMP): skipped: no clips")
    assert not current().live  # outside: a no-op
    current().probes_done()
    current().task_done("x", "y")


def test_lvu_bar_on_a_terminal(tiny_bench, tiny_cfg, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"TERM": "xterm", "COLUMNS": "120", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lmp_bench.cli", *_lvu_args(tiny_bench, tiny_cfg, tmp_path)]
    rc, tty = run_on_a_terminal(cmd, cwd=REPO, env=env, size=(24, 120), timeout=300)
    assert rc == 0, tty[-3000:]
    bar = tty.replace("\r\n", "\n")
    assert "\r" in bar and "8/8" in bar and "probe" in bar and "<00:00" in bar, tty[-3000:]  # redrawn, ETA
    assert "probes]" not in tty  # the bar replaces the per-task lines
    assert "no pretraining: frozen random init" in tty  # the table
