"""What a sweep prints: one progress display, one line per finished trial, then the table.

`SweepConsole` (quiet, the default): the process's stdout and stderr, as file descriptors 1 and 2, go to
`<sweep>/sweep.log`: Ray's and Tune's output, the trials' output forwarded by Ray, DeepSpeed's, any C
library's. The console gets only the sweep's own lines (also written to the log). `-v` (verbose):
nothing is redirected, the full stream is on the console as before, the sweep's lines with it.

`SweepProgress` (fed by `ProgressCallback`, a Tune callback run in the driver): trials done / running /
failed of the total, elapsed time, an ETA from the durations of finished trials (per kind of work, so a
probe-only trial does not predict a pretraining one; unknown until a trial has finished), the best row
so far (highest mean Content). On a terminal a live bar (tqdm) with the trial lines above it; elsewhere
plain lines: one per finished, retried or failed trial and one status line after each, plus a status
line every `HEARTBEAT_S` while nothing finishes.
"""

from __future__ import annotations

import io
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from lmp_data.console import bar_width, fmt_duration, is_tty

from .table import GROUPS

LOG_NAME = "sweep.log"
HEARTBEAT_S = 300.0
"""Without a terminal: a status line at least this often while trials run (CI kills silent jobs)."""


class SweepConsole:
    """Where a sweep's output goes; see the module docstring. `start(sweep_dir)` begins the redirection,
    `stop()` ends it (idempotent)."""

    def __init__(self, verbose: bool = False):
        self.verbose = verbose
        self.log_path: Path | None = None
        self.out: io.TextIOBase | Any = sys.stdout
        self.tty = is_tty(sys.stdout)
        self.bar = None  # the live bar, when SweepProgress shows one
        self._saved: tuple[int, int] | None = None

    @property
    def redirected(self) -> bool:
        return self._saved is not None

    def start(self, sweep_dir: Path) -> None:
        if not self.tty:
            os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # Ray's worker prefixes without colour codes
        if self.verbose or self.redirected:
            return
        try:
            fds = (sys.stdout.fileno(), sys.stderr.fileno())
        except (AttributeError, ValueError, io.UnsupportedOperation):
            return  # stdout is not a file descriptor (a notebook): leave it alone
        if fds != (1, 2):
            return
        self.log_path = Path(sweep_dir) / LOG_NAME
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        saved = (os.dup(1), os.dup(2))
        self.out = open(saved[0], "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        self.tty = os.isatty(saved[0])
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        self._saved = saved
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # the log gets plain text

    def stop(self) -> None:
        self.close_bar()
        if self._saved is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        self.out.flush()
        self.out.close()  # closefd=False: the saved descriptor stays open until restored
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        os.close(self._saved[0])
        os.close(self._saved[1])
        self._saved = None
        self.out = sys.stdout
        self.tty = is_tty(sys.stdout)

    def line(self, text: str, console: bool = True) -> None:
        """A line of the sweep's own: on the console (above the live bar) and in the log."""
        if self.redirected:
            print(text, file=sys.stdout, flush=True)  # the log
            if not console:
                return
        elif not console:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.out)
        else:
            print(text, file=self.out, flush=True)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _fmt_scores(metrics: dict) -> str:
    parts = []
    for g, _ in GROUPS:
        v = metrics.get(g)
        if isinstance(v, int | float):
            parts.append(f"{g} {v:.3f}" if g == "user" else f"{g} {v:.2f}")
    return "  ".join(parts)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _root_error(err: Any) -> str:
    """The root cause in one line, without control codes (Ray colours its task errors)."""
    if err is None:
        return "error (see the log)"
    if isinstance(err, str):  # the error file's text: its last non-empty line names the exception
        lines = [ln.strip() for ln in _ANSI.sub("", err).splitlines() if ln.strip()]
        return lines[-1][:300] if lines else "error (see the log)"
    cause = err
    while getattr(cause, "cause", None) is not None and cause.cause is not cause:
        cause = cause.cause
    text = _ANSI.sub("", f"{type(cause).__name__}: {cause}").splitlines()[0]
    return text if len(text) <= 300 else text[:297] + "..."


class SweepProgress:
    """The state behind the display; Tune calls it through `ProgressCallback` (driver side)."""

    def __init__(self, console: SweepConsole, title: str = "sweep"):
        self.console = console
        self.title = title
        self.t0 = time.monotonic()
        self.total = 0
        self.stage = ""
        self.n_stages = 1
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.running: dict[str, float] = {}  # key -> start (monotonic) of its running attempt
        self.pending = 0
        self.kind: dict[str, str] = {}  # key -> its work function ("module:qualname")
        self.durations: dict[str, list[float]] = {}  # work -> durations of its finished trials
        self.max_running = 1
        self.scores: dict[str, list[float]] = {}  # variant -> Content of its finished trials
        self.last_status = time.monotonic()
        self._seen_stage = False
        self._last_refresh = 0.0

    # ------------------------------------------------------------------ stages (runner side)
    def begin_stage(self, name: str, specs: list, index: int, n_stages: int) -> None:
        """A stage of `specs` (`TrialSpec`s) starts."""
        self.stage, self.n_stages = name, n_stages
        self.total += len(specs)
        for s in specs:
            self.kind[s.key] = s.work_name
        self._seen_stage = False
        if self.console.tty and not self.console.verbose and self.console.bar is None:
            from tqdm import tqdm

            self.console.bar = tqdm(
                total=self.total,
                file=self.console.out,
                bar_format="{desc} {percentage:3.0f}%|{bar:16}| {postfix}",
                ncols=_columns(self.console.out),
            )
        self.refresh(force=True)

    def end(self) -> None:
        self.refresh(force=True)
        self.console.close_bar()

    # ------------------------------------------------------------------ Tune events
    def sync(self, trials: list) -> None:
        """Trials restored already finished (a resumed sweep) count as done / failed."""
        if self._seen_stage:
            return
        self._seen_stage = True
        for t in trials:
            key = t.config["trial"]["key"]
            if t.status == "TERMINATED":
                self.done.add(key)
            elif t.status == "ERROR":
                self.failed.add(key)

    def step(self, trials: list) -> None:
        self.sync(trials)
        now = time.monotonic()
        live = {t.config["trial"]["key"] for t in trials if t.status == "RUNNING"}
        for key in list(self.running):
            if key not in live:
                self.running.pop(key)
        for key in live - set(self.running) - self.done - self.failed:
            self.running[key] = now
        self.pending = sum(1 for t in trials if t.status in ("PENDING", "PAUSED"))
        self.max_running = max(self.max_running, len(self.running))
        if not self.console.tty and now - self.last_status >= HEARTBEAT_S:
            self.status_line()
        self.refresh()

    def started(self, trial) -> None:
        self.running[trial.config["trial"]["key"]] = time.monotonic()
        self.max_running = max(self.max_running, len(self.running))
        self.refresh(force=True)

    def completed(self, trial) -> None:
        spec = trial.config["trial"]
        key = spec["key"]
        start = self.running.pop(key, None)
        dt = time.monotonic() - start if start is not None else None
        if dt is not None:
            self.durations.setdefault(self.kind.get(key, ""), []).append(dt)
        metrics = dict(trial.last_result or {})
        self.done.add(key)
        content = metrics.get(GROUPS[0][0])
        if isinstance(content, int | float):
            self.scores.setdefault(spec.get("variant", key), []).append(float(content))
        took = f"  ({fmt_duration(dt)})" if dt is not None else ""
        self.console.line(f"{self._count()} ✓ {key}  {_fmt_scores(metrics)}{took}".rstrip())
        self._after_event()

    def recovering(self, trial) -> None:
        key = trial.config["trial"]["key"]
        self.running.pop(key, None)
        err = _root_error(_trial_error(trial))
        self.console.line(f"{self._count()} ↻ {key}  attempt failed, retrying: {err}")
        self._after_event()

    def errored(self, trial) -> None:
        key = trial.config["trial"]["key"]
        self.running.pop(key, None)
        self.failed.add(key)
        err = _root_error(_trial_error(trial))
        self.console.line(f"{self._count()} ✗ {key}  failed: {err}")
        self._after_event()

    # ------------------------------------------------------------------ display
    def _count(self) -> str:
        n = len(self.done) + len(self.failed)
        w = len(str(self.total))
        return f"[{n:>{w}}/{self.total}]"

    def eta(self) -> float | None:
        """Seconds left in this stage, from finished trials' durations; None until one has finished."""
        if not self.durations:
            return None
        every = [d for ds in self.durations.values() for d in ds]
        overall = sum(every) / len(every)

        def est(key: str) -> float:
            ds = self.durations.get(self.kind.get(key, ""))
            return sum(ds) / len(ds) if ds else overall

        now = time.monotonic()
        left = sum(max(est(k) - (now - t), 0.1 * est(k)) for k, t in self.running.items())
        finished = self.done | self.failed | set(self.running)
        waiting = [k for k in self.kind if k not in finished]
        # trials of later stages are not known yet; trials of this stage not started are `waiting`
        left += sum(est(k) for k in waiting)
        return left / max(self.max_running, 1)

    def best(self) -> str:
        if not self.scores:
            return ""
        variant, vals = max(self.scores.items(), key=lambda kv: sum(kv[1]) / len(kv[1]))
        return f"best so far: {variant} (content {sum(vals) / len(vals):.2f})"

    def summary(self) -> str:
        n = len(self.done) + len(self.failed)
        stage = f"stage {self.stage} · " if self.n_stages > 1 else ""
        parts = [
            f"{stage}{n}/{self.total} done",
            f"{len(self.running)} running",
            f"{len(self.failed)} failed",
            f"{fmt_duration(time.monotonic() - self.t0)} elapsed",
            f"ETA {fmt_duration(self.eta())}",
        ]
        best = self.best()
        return ", ".join(parts[:3]) + " · " + " · ".join(parts[3:]) + (f" · {best}" if best else "")

    def status_line(self) -> None:
        self.last_status = time.monotonic()
        if not self.console.tty:
            self.console.line(f"[sweep] {self.summary()}")

    def _after_event(self) -> None:
        if self.console.tty:
            self.refresh(force=True)
        else:
            self.status_line()

    def refresh(self, force: bool = False) -> None:
        bar = self.console.bar
        if bar is None:
            return
        now = time.monotonic()
        if not force and now - self._last_refresh < 1.0:
            return
        self._last_refresh = now
        bar.total = self.total
        bar.n = len(self.done) + len(self.failed)
        bar.set_description_str("sweep", refresh=False)
        room = _columns(self.console.out) - 32  # "sweep 100%|<16>| " and a margin: one line, never wrapped
        text = self.summary()
        bar.set_postfix_str(text if len(text) <= room else text[: max(room - 1, 10)] + "…", refresh=False)
        bar.refresh()


def _columns(stream) -> int:
    """The terminal's width (100 when it reports none, as an unsized pseudo-terminal does)."""
    return 100 if "ncols" in bar_width(stream) else os.get_terminal_size(stream.fileno()).columns


def _trial_error(trial) -> Any:
    """The trial's latest error: the pickled exception Tune wrote next to the trial (driver side), else
    the text of its error file."""
    try:
        path = trial.pickled_error_file
        if path and os.path.isfile(path):
            import ray.cloudpickle as pickle

            with open(path, "rb") as f:
                return pickle.load(f)  # noqa: S301 - Tune's own file for this trial, written by this driver
        path = trial.error_file
        if path and os.path.isfile(path):
            return Path(path).read_text(errors="replace")
        return trial.get_pickled_error() or trial.get_error()
    except Exception:  # noqa: BLE001 - the display must never break the sweep
        return None


_ACTIVE: SweepProgress | None = None


def activate(progress: SweepProgress | None) -> None:
    """The progress `ProgressCallback` reports to (None: nothing). A module global rather than a
    callback attribute: Tune pickles its run config, callbacks included, for `Tuner.restore`."""
    global _ACTIVE
    _ACTIVE = progress


class ProgressCallback(Callback):
    """Feeds the active `SweepProgress` (see `activate`); holds no state, so Tune can pickle it."""

    def _call(self, name: str, *args) -> None:
        if _ACTIVE is None:
            return
        try:
            getattr(_ACTIVE, name)(*args)
        except Exception as e:  # noqa: BLE001 - the display must never break the sweep
            print(f"[sweep] progress display: {type(e).__name__}: {e}", file=sys.stderr)

    def on_step_end(self, iteration, trials, **info):
        self._call("step", trials)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._call("sync", trials)
        self._call("started", trial)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._call("completed", trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._call("recovering", trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._call("errored", trial)
