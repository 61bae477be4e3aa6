"""A cheap work function for testing the sweep machinery alone (no DeepSpeed, no data).

Not collected by pytest (no `test_` prefix); Ray workers import it through PYTHONPATH.
"""

from __future__ import annotations

import mlflow


def run(ctx) -> dict:
    with ctx.start_child_run() as run:
        mlflow.log_params({"variant": ctx.spec["variant"], "seed": ctx.spec["seed"]})
        for step in range(3):
            mlflow.log_metric("loss/total", 3.0 - step, step=step)
        ctx.maybe_fail("probe")
        base = float(ctx.spec["score"])
        metrics = {"content": base + ctx.spec["seed"], "metadata": base / 2, "user": 1.0 / (1 + base)}
        mlflow.log_metrics(metrics)
        return {**metrics, "child_run_id": run.info.run_id}
