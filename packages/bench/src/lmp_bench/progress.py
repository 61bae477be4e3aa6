"""`lmp-bench`'s progress over its probes: probes done / total, elapsed, ETA.

On a terminal (stderr) a live bar, the one `lmp-pretrain` and `lmp-data ingest` draw
(`lmp_data.console.live_bar`), with log records printed above it; elsewhere (a log file, CI) one plain line
per finished task, without control codes. A command opens it (`probe_progress`); the probing loops
(`probe_lvu`, `scratch_lvu`, `evaluate_lvu`, `probe_curve`) report to `current()`, which does nothing when
no command opened one (library use, the sweeps' trials).

The total is set by the outermost caller that knows it (`plan`): `probe_curve` (points x tasks x seeds)
before the `evaluate_lvu` of each point (rows x tasks x seeds).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import IO, Any

from lmp_data.console import LoggingBar, fmt_duration


class ProbeProgress(LoggingBar):
    """`plan(n)` once the total is known, `start_task` / `probes_done` / `task_done` as probes finish,
    `close()` once (also on error)."""

    def __init__(self, desc: str, stream: IO[str] | None = None):
        self.desc, self.stream = desc, sys.stderr if stream is None else stream
        self.total: int | None = None
        self.done = 0
        self.t0 = time.perf_counter()
        # log records (a task's missing clips) print above the bar
        super().__init__(
            self.stream, [logging.getLogger()], total=None, desc=desc, unit="probe", smoothing=0.1
        )

    def plan(self, total: int) -> None:
        """The number of probes to come; only the first call counts (the outermost caller knows best)."""
        if self.total is not None:
            return
        self.total = int(total)
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    def start_task(self, label: str) -> None:
        """The task being probed now, shown beside the bar."""
        if self.bar is not None:
            self.bar.set_postfix_str(label)

    def probes_done(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def eta(self) -> float | None:
        """Seconds left at the mean pace so far (None: no total or nothing done yet)."""
        if self.total is None or not self.done:
            return None
        return (time.perf_counter() - self.t0) / self.done * max(0, self.total - self.done)

    def task_done(self, label: str, what: str) -> None:
        """Without a bar, one line:
        `lvu [6/18 probes] genre (LMP): top1 41.20 over 3 seeds (4 s elapsed, ETA 9 s)`."""
        if self.bar is not None:
            return
        total = "?" if self.total is None else self.total
        took = fmt_duration(time.perf_counter() - self.t0)
        eta = fmt_duration(self.eta())
        line = f"{self.desc} [{self.done}/{total} probes] {label}: {what} ({took} elapsed, ETA {eta})"
        print(line, file=self.stream, flush=True)


class _NoProgress:
    """What `current()` gives when no command shows progress: every call does nothing."""

    live = False

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


_CURRENT: ContextVar[ProbeProgress | None] = ContextVar("lmp_bench_progress", default=None)


def current() -> ProbeProgress | _NoProgress:
    """The progress the running command opened, else a no-op."""
    return _CURRENT.get() or _NoProgress()


@contextlib.contextmanager
def probe_progress(desc: str, stream: IO[str] | None = None) -> Iterator[ProbeProgress]:
    """Show the probes' progress on `stream` (default stderr) while the block runs."""
    progress = ProbeProgress(desc, stream)
    token = _CURRENT.set(progress)
    try:
        yield progress
    finally:
        _CURRENT.reset(token)
        progress.close()


def seeds_of(seeds: int | Any) -> int:
    """How many probe seeds `seeds` (a count or a list of seeds) means."""
    return int(seeds) if isinstance(seeds, int) else len(list(seeds))
