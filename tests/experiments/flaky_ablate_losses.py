"""`experiments/ablate_losses.py` whose "none-random" trial fails in its first attempt: the smoke sweep's
retried trial (conftest.py). The failure is this test's own work function (`standin_work.failing`);
the sweep code has no hook for it. Not collected by pytest (no `test_` prefix).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "experiments"))

import ablate_losses  # noqa: E402
import standin_work  # noqa: E402

FLAKY = "none-random"


def build(cfg, only):
    stages, columns = ablate_losses.build(cfg, only)
    for stage in stages:
        stage.specs = [
            dataclasses.replace(s, work=standin_work.failing(s.work, times=1)) if s.slug == FLAKY else s
            for s in stage.specs
        ]
    return stages, columns


if __name__ == "__main__":
    standin_work.ship_by_value()
    sys.exit(ablate_losses.cli(build_stages=build))
