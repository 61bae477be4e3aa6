"""The LVU protocol on precomputed clip features: one probe per task and seed, scored on test.

`probe_lvu(clip_ids, x, labels_dir, ...)` joins the clip features with each task's labels, drops
(and counts) labelled clips that have no features, trains a probe per seed with the best epoch chosen
on val, and returns an `LVUResult`. Classification is reported as top-1 accuracy in percent and
regression as MSE on LVU's normalised targets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from lmp_bench import metrics
from lmp_bench.lvu import load_task, parse_tasks, task_spec
from lmp_bench.probe import ProbeConfig, fit_probe
from lmp_bench.progress import current
from lmp_bench.results import RUN_SCHEMA, LVUResult

log = logging.getLogger(__name__)


class MissingClipsError(KeyError):
    """Raised under `strict=True` when labelled clips are absent from the features."""


def task_splits(
    labels_dir: str | Path, task: str, have_ids, strict: bool = False
) -> tuple[dict[str, pl.DataFrame], int, str | None]:
    """({train, val, test}: labels of clips in `have_ids`, labelled clips missing, why skipped or None).

    Labelled clips absent from `have_ids` are counted and logged (an error under `strict`); a task with
    an empty split is skipped with the reason.
    """
    labels = load_task(labels_dir, task)
    have = labels["clip_id"].is_in(list(have_ids))
    n_missing = int((~have).sum())
    if n_missing:
        absent = labels.filter(~have)["clip_id"].head(5).to_list()
        msg = f"LVU {task}: {n_missing} of {labels.height} labelled clips not in the store (e.g. {absent})"
        if strict:
            raise MissingClipsError(msg)
        log.warning(msg)
    labels = labels.filter(have)
    split = {s: labels.filter(pl.col("split") == s) for s in ("train", "val", "test")}
    empty = [s for s, df in split.items() if df.height == 0]
    if empty:
        why = f"no clips with features in split(s) {empty}"
        log.warning("LVU %s skipped: %s", task, why)
        return split, n_missing, why
    return split, n_missing, None


def result_row(task: str, seed: int, pred, y_test, val_score: float, best_epoch: int, split) -> dict:
    """One `RUN_SCHEMA` row (without method and features): test score, the selection score on val.

    `val_score` is the selection score (accuracy in [0, 1], or minus the MSE); reported as accuracy in %
    or as MSE, like the test value.
    """
    spec = task_spec(task)
    if spec.kind == "classification":
        value, val = 100.0 * metrics.accuracy(pred, y_test), 100.0 * val_score
    else:
        value, val = metrics.mse(pred, y_test), -val_score
    return {
        "task": task,
        "group": spec.group,
        "metric": spec.metric,
        "seed": int(seed),
        "value": float(value),
        "val_score": float(val),
        "best_epoch": int(best_epoch),
        "n_train": split["train"].height,
        "n_val": split["val"].height,
        "n_test": split["test"].height,
    }


def task_summary(rows: list[dict]) -> str:
    """One task's `result_row`s in a few words: "top1 41.67 over 3 seeds" (the mean test score)."""
    mean = sum(r["value"] for r in rows) / len(rows)
    return f"{rows[0]['metric']} {mean:.2f} over {len(rows)} seed{'s' if len(rows) != 1 else ''}"


def probe_lvu(
    clip_ids: Sequence[str],
    x: np.ndarray,
    labels_dir: str | Path,
    tasks: str | Sequence[str] | None = None,
    seeds: int | Sequence[int] = 3,
    probe: ProbeConfig | None = None,
    method: str = "features",
    features: str = "",
    strict: bool = False,
) -> LVUResult:
    """Train and score probes for each task on features `x` [n_clips, D] of `clip_ids`."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != len(clip_ids):
        raise ValueError(f"features must be [n_clips={len(clip_ids)}, D], got shape {x.shape}")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ValueError("at least one seed is needed")
    probe = probe or ProbeConfig()
    row_of = {c: i for i, c in enumerate(clip_ids)}
    rows, missing, skipped = [], {}, {}
    progress = current()
    for task in parse_tasks(tasks):
        spec = task_spec(task)
        label = f"{task} ({method})"
        progress.start_task(label)
        split, missing[task], why = task_splits(labels_dir, task, row_of, strict)
        if why:
            skipped[task] = why
            progress.probes_done(len(seed_list))
            progress.task_done(label, f"skipped: {why}")
            continue
        xs = {s: x[[row_of[c] for c in df["clip_id"]]] for s, df in split.items()}
        ys = {s: df["label"].to_numpy() for s, df in split.items()}
        for seed in seed_list:
            p = fit_probe(
                xs["train"], ys["train"], xs["val"], ys["val"], spec.kind, spec.n_classes, probe, seed
            )
            rows.append(
                result_row(task, seed, p.predict(xs["test"]), ys["test"], p.val_score, p.best_epoch, split)
                | {"method": method, "features": features}
            )
            progress.probes_done()
        progress.task_done(label, task_summary(rows[-len(seed_list) :]))
    return LVUResult(pl.DataFrame(rows, schema=RUN_SCHEMA), missing, skipped)
