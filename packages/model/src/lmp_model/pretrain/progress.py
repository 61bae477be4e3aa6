"""`lmp-pretrain`'s progress: a live bar (step, ETA, loss) when stderr is a terminal, on rank 0.

Without a terminal (a log file, CI, a Ray trial, SLURM) there is no bar and the loop logs its usual
line every `train.log_every` steps. With the bar, those step lines are left out (the bar says it;
metrics.jsonl and MLflow hold every step) and other log records print above the bar.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any

from lmp_data.console import live_bar


class StepProgress:
    """`update(step, rec)` after each optimizer step; `close()` once (also on error)."""

    def __init__(self, total: int, start: int, enabled: bool = True, name: str = "pretrain"):
        self.bar = (
            live_bar(sys.stderr, total=total, initial=start, desc=name, unit="step", smoothing=0.1)
            if enabled
            else None
        )
        self._redirect: contextlib.ExitStack | None = None
        if self.bar is not None:
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._redirect = contextlib.ExitStack()
            loggers = [logging.getLogger(), logging.getLogger("DeepSpeed")]
            self._redirect.enter_context(logging_redirect_tqdm(loggers=loggers))

    @property
    def live(self) -> bool:
        return self.bar is not None

    def update(self, step: int, rec: dict[str, Any]) -> None:
        if self.bar is None:
            return
        self.bar.set_postfix_str(f"loss {rec['loss/total']:.4f}  lr {rec['lr']:.2g}", refresh=False)
        self.bar.update(step - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._redirect is not None:
            self._redirect.close()
            self._redirect = None
