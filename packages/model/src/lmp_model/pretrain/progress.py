"""`lmp-pretrain`'s progress: a live bar (step, ETA, loss) when stderr is a terminal, on rank 0.

Without a terminal (a log file, CI, a Ray trial, SLURM) there is no bar and the loop logs its usual
line every `train.log_every` steps. With the bar, those step lines are left out (the bar says it;
metrics.jsonl and MLflow hold every step) and other log records print above the bar.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from lmp_data.console import LoggingBar


class StepProgress(LoggingBar):
    """`update(step, rec)` after each optimizer step; `close()` once (also on error)."""

    def __init__(self, total: int, start: int, enabled: bool = True, name: str = "pretrain"):
        super().__init__(
            sys.stderr,
            [logging.getLogger(), logging.getLogger("DeepSpeed")],
            enabled=enabled,
            total=total,
            initial=start,
            desc=name,
            unit="step",
            smoothing=0.1,
        )

    def update(self, step: int, rec: dict[str, Any]) -> None:
        if self.bar is None:
            return
        self.bar.set_postfix_str(f"loss {rec['loss/total']:.4f}  lr {rec['lr']:.2g}", refresh=False)
        self.bar.update(step - self.bar.n)
