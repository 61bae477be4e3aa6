"""A cheap work function for testing the sweep machinery alone (no DeepSpeed, no data), and a wrapper
that makes any work function fail: the tests inject failures through their own work, the sweep code
has no hook for it.

Not collected by pytest (no `test_` prefix). Ray workers get these functions pickled by value
(`ship_by_value`), so they need not import this module.
"""

from __future__ import annotations

import functools
import sys

import mlflow


class InjectedFailure(RuntimeError):
    """What `failing` raises."""


def ship_by_value() -> None:
    """Pickle this module's functions by value for the Ray workers (they do not have tests/ on their path)."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def failing(work, times: int):
    """`work` whose trial fails in its first `times` attempts (its child run FAILED), then runs."""
    return functools.partial(_fail_then_run, work, times)


def _fail_then_run(work, times: int, ctx) -> dict:
    if ctx.attempt <= times:
        with ctx.start_child_run():
            raise InjectedFailure(f"injected failure in trial {ctx.key} attempt {ctx.attempt}")
    return work(ctx)


def run(ctx) -> dict:
    """Logs a short loss curve and scores from the spec's `params["score"]` and seed."""
    with ctx.start_child_run() as run:
        mlflow.log_params({"variant": ctx.spec.variant, "seed": ctx.spec.seed})
        for step in range(3):
            mlflow.log_metric("loss/total", 3.0 - step, step=step)
        if ctx.spec.params.get("fail_times", 0) >= ctx.attempt:  # fails inside its child run: FAILED
            raise InjectedFailure(f"injected failure in trial {ctx.key} attempt {ctx.attempt}")
        base = float(ctx.spec.params["score"])
        metrics = {"content": base + ctx.spec.seed, "metadata": base / 2, "user": 1.0 / (1 + base)}
        mlflow.log_metrics(metrics)
        return {**metrics, "child_run_id": run.info.run_id}
