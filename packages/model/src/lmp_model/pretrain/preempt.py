"""Preemption: turn SLURM's warning signal into "checkpoint at the next step boundary, then exit 75".

SLURM sends a signal some time before it kills a job (time limit: `--signal=B:USR1@120` in
`slurm/pretrain.sh`, USR2 from submitit; preemption or `scontrol requeue`: SIGTERM, then SIGKILL after
`KillWait`). A signal handler may run in the middle of a step, where saving a sharded (ZeRO) checkpoint is
impossible, so the handler only sets a flag. The training loop asks `requested(sync=True)` once per step:
the flag is all-reduced (MAX) over the process group so every rank stops at the same step, saves the
checkpoint collectively and raises `Preempted`; the entry point exits with `PREEMPTED_EXIT_CODE`, which
tells `slurm/pretrain.sh` (and `experiments/submit_pretrain.py`) to `scontrol requeue` the job. The
requeued job runs `lmp-pretrain ... --resume`, which continues from that checkpoint and the same MLflow run.

    from lmp_model.pretrain import preempt
    preempt.install_handler()                  # once, in the main thread, before training
    ...                                        # at the end of every optimizer step:
    if preempt.requested(sync=True):           # same answer on every rank
        save_checkpoint(step); raise preempt.Preempted(step, checkpoint_dir)
    ...
    except preempt.Preempted: sys.exit(preempt.PREEMPTED_EXIT_CODE)

Repeated signals are not escalated: under SLURM a task often gets SIGTERM twice (from slurmd and from
srun), and the second must not kill a save in progress. A run stuck before a step boundary is ended by
SLURM's SIGKILL after `KillWait` seconds (or by `kill -KILL`). SIGINT is left alone (Ctrl-C still works).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterable
from types import FrameType
from typing import Any

log = logging.getLogger("lmp_model.pretrain.preempt")

PREEMPTED_EXIT_CODE = 75
"""Exit status of a run that saved a checkpoint because it was asked to stop (sysexits' EX_TEMPFAIL:
"try again later"). `slurm/pretrain.sh` requeues the job on it; any other non-zero status is a failure."""

MARKER_ENV = "LMP_PREEMPT_MARKER"
"""If set, a file path created when a stop is requested on this task: `slurm/pretrain.sh` sets it so it
knows a task was asked to stop even when srun reports another task's code (`--kill-on-bad-exit`)."""

SIGNALS_ENV = "LMP_PREEMPT_SIGNALS"
DEFAULT_SIGNALS = ("USR1", "USR2", "TERM")
"""USR1: `slurm/pretrain.sh`'s time-limit warning (forwarded by the batch shell through srun);
USR2: submitit's; TERM: preemption / `scontrol requeue` / `scancel` (KillWait seconds before SIGKILL).
Override with LMP_PREEMPT_SIGNALS="USR1,TERM" (e.g. where NCCL or another library owns USR1)."""

_event = threading.Event()
_reason: str | None = None
_previous: dict[int, Any] = {}


class Preempted(Exception):  # noqa: N818  (a state, not an error)
    """Raised by the training loop after it saved a checkpoint because a stop was requested."""

    exit_code = PREEMPTED_EXIT_CODE

    def __init__(self, step: int, checkpoint: str | None, reason: str | None = None):
        self.step, self.checkpoint, self.reason = step, checkpoint, reason
        super().__init__(
            f"preempted ({reason or 'stop requested'}) after step {step}; checkpoint {checkpoint or 'none'}: "
            f"resume with --resume"
        )


def _parse(signals: Iterable[str | int | signal.Signals]) -> list[signal.Signals]:
    out = []
    for s in signals:
        if isinstance(s, str):
            name = s.strip().upper()
            name = name if name.startswith("SIG") else f"SIG{name}"
            if not hasattr(signal, name):
                raise ValueError(
                    f"{SIGNALS_ENV} / signals: unknown signal {s!r} (expected e.g. USR1, USR2, TERM)"
                )
            out.append(signal.Signals(getattr(signal, name)))
        else:
            out.append(signal.Signals(s))
    return out


def _handler(signum: int, frame: FrameType | None) -> None:
    request(signal.Signals(signum).name)


def install_handler(signals: Iterable[str | int | signal.Signals] | None = None) -> threading.Event:
    """Catch `signals` (default: LMP_PREEMPT_SIGNALS or USR1, USR2, TERM) and only set a flag.

    Main thread only (Python's rule for signal handlers). Returns the flag (a threading.Event). Calling it
    again adds signals; `uninstall()` restores the previous handlers.
    """
    if signals is None:
        env = os.environ.get(SIGNALS_ENV, "")
        signals = [s for s in env.split(",") if s.strip()] or DEFAULT_SIGNALS
    for sig in _parse(signals):
        prev = signal.signal(sig, _handler)
        if prev is not _handler:
            _previous[int(sig)] = prev
    return _event


def uninstall() -> None:
    """Restore the handlers `install_handler` replaced and clear the flag."""
    for signum, prev in list(_previous.items()):
        signal.signal(signum, prev if prev is not None else signal.SIG_DFL)
        del _previous[signum]
    reset()


def request(reason: str = "requested") -> None:
    """Ask the run to checkpoint and stop at the next step boundary (what the signal handler does)."""
    global _reason
    if not _event.is_set():
        _reason = reason
        _event.set()
        marker = os.environ.get(MARKER_ENV)
        if marker:
            try:
                os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, 0o644))
            except OSError:
                pass
        # Logging from a signal handler is not strictly safe; one line, once, is worth it for the job log.
        log.warning(
            "stop requested (%s): checkpoint at the next step boundary, then exit %d",
            reason,
            PREEMPTED_EXIT_CODE,
        )


def reset() -> None:
    global _reason
    _reason = None
    _event.clear()


def reason() -> str | None:
    """What asked for the stop (e.g. "SIGUSR1"), or None."""
    return _reason


def requested(sync: bool = False) -> bool:
    """Whether a stop was requested. `sync=True`: a collective over the default torch.distributed group
    (MAX of every rank's flag) so all ranks decide the same at the same step; every rank must call it."""
    local = _event.is_set()
    if not sync:
        return local
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([1.0 if local else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    agreed = bool(flag.item() > 0)
    if agreed and not local:
        request("another rank was signalled")
    return agreed


__all__ = [
    "DEFAULT_SIGNALS",
    "MARKER_ENV",
    "PREEMPTED_EXIT_CODE",
    "Preempted",
    "install_handler",
    "reason",
    "request",
    "requested",
    "reset",
    "uninstall",
]
