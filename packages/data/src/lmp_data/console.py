"""What the lmp command lines print: known noise silenced at its source, a live bar on a terminal, plain
lines elsewhere (a log file, CI: no control codes).

`quiet_known_warnings()` drops, by logger and message prefix, the warnings that say nothing to the user
on a machine without a GPU (no accelerator found, a CUDA toolkit folder without a CUDA runtime); on a
machine with a GPU device they stay, since there they mean something is wrong. Every other warning stays.
Call it before the library that warns is imported (the filters sit on the named loggers, which exist
before their library does), in every process: the CLIs do it in `main`, the sweep in each trial.

`live_bar(...)` is a tqdm bar when the stream is a terminal, else None (the caller prints plain lines).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import sys
from typing import IO, Any

KNOWN_NOISE: tuple[tuple[str, str], ...] = (
    # deepspeed.accelerator.real_accelerator: no CUDA device, so DeepSpeed uses its CPU accelerator
    ("DeepSpeed", "Setting accelerator to CPU"),
    # torch.utils.cpp_extension at import: a CUDA toolkit folder exists but torch sees no CUDA device
    ("torch.utils.cpp_extension", "No CUDA runtime is found"),
)
"""(logger name, message prefix) of the warnings `quiet_known_warnings` drops on a machine without a GPU."""


def has_gpu_device() -> bool:
    """A GPU device node exists (NVIDIA, AMD ROCm, WSL): then "no accelerator found" is a real warning."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/kfd") or os.path.exists("/dev/dxg")


class _DropPrefixes(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else str(record.msg)
        return not msg.startswith(self.prefixes)


def quiet_known_warnings(force: bool = False) -> bool:
    """Silence `KNOWN_NOISE` in this process unless a GPU device exists (`force`: even then). Idempotent.
    True if the filters are (now) installed."""
    if not force and has_gpu_device():
        return False
    by_logger: dict[str, list[str]] = {}
    for name, prefix in KNOWN_NOISE:
        by_logger.setdefault(name, []).append(prefix)
    for name, prefixes in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropPrefixes) for f in logger.filters):
            logger.addFilter(_DropPrefixes(tuple(prefixes)))
    return True


def no_library_bars() -> None:
    """Third-party progress bars off (transformers' "Loading weights", huggingface_hub's downloads): for
    output that is not a terminal, where they are only control codes, or when the user asked for none."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers is imported
    if "transformers" in sys.modules:  # imported already: switch its bars off directly
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except Exception:  # noqa: BLE001 - a cosmetic switch must never stop the work
            pass


def is_tty(stream: IO[Any] | None) -> bool:
    """The stream is an interactive terminal (a live bar is welcome); False for files, pipes, CI."""
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def bar_width(stream: IO[Any]) -> dict[str, Any]:
    """tqdm's width arguments for a terminal: follow its width, or 100 columns when it reports none (a
    pseudo-terminal nobody sized: tqdm would draw an empty bar)."""
    try:
        if os.get_terminal_size(stream.fileno()).columns > 0:
            return {"dynamic_ncols": True}
    except (AttributeError, ValueError, OSError):
        pass
    return {"ncols": 100, "nrows": 24}


def live_bar(stream: IO[Any] | None = None, **kw: Any):
    """A tqdm bar on `stream` (default stderr) when it is a terminal, else None. `kw` go to tqdm."""
    stream = sys.stderr if stream is None else stream
    if not is_tty(stream):
        return None
    from tqdm import tqdm

    return tqdm(file=stream, **{**bar_width(stream), **kw})


class LoggingBar:
    """`live_bar` whose log records (of `loggers`) print above it, via tqdm's logging redirect.

    `bar` is the tqdm bar, or None without a terminal or with `enabled=False` (then nothing is redirected);
    `live` says whether there is one; `close()` ends both. lmp-pretrain's `StepProgress` and lmp-bench's
    `ProbeProgress` are such bars with what each shows.
    """

    def __init__(
        self, stream: IO[Any] | None, loggers: list[logging.Logger], *, enabled: bool = True, **kw: Any
    ):
        self.bar = live_bar(stream, **kw) if enabled else None
        self._redirect: contextlib.ExitStack | None = None
        if self.bar is not None:
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._redirect = contextlib.ExitStack()
            self._redirect.enter_context(logging_redirect_tqdm(loggers=loggers))

    @property
    def live(self) -> bool:
        return self.bar is not None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._redirect is not None:
            self._redirect.close()
            self._redirect = None


def fmt_duration(seconds: float | None) -> str:
    """12 s, 3:05, 1:02:03 ("?" for None)."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
