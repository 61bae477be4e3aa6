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
from lmp_bench.results import RUN_SCHEMA, LVUResult

log = logging.getLogger(__name__)


class MissingClipsError(KeyError):
    """Raised under `strict=True` when labelled clips are absent from the features."""


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
    for task in parse_tasks(tasks):
        spec = task_spec(task)
        labels = load_task(labels_dir, task)
        have = labels["clip_id"].is_in(list(row_of))
        missing[task] = int((~have).sum())
        if missing[task]:
            absent = labels.filter(~have)["clip_id"].head(5).to_list()
            msg = f"LVU {task}: {missing[task]} of {labels.height} labelled clips not in the store (e.g. {absent})"
            if strict:
                raise MissingClipsError(msg)
            log.warning(msg)
        labels = labels.filter(have)
        split = {s: labels.filter(pl.col("split") == s) for s in ("train", "val", "test")}
        empty = [s for s, df in split.items() if df.height == 0]
        if empty:
            skipped[task] = f"no clips with features in split(s) {empty}"
            log.warning("LVU %s skipped: %s", task, skipped[task])
            continue
        xs = {s: x[[row_of[c] for c in df["clip_id"]]] for s, df in split.items()}
        ys = {s: df["label"].to_numpy() for s, df in split.items()}
        kind = spec.kind
        for seed in seed_list:
            p = fit_probe(xs["train"], ys["train"], xs["val"], ys["val"], kind, spec.n_classes, probe, seed)
            pred = p.predict(xs["test"])
            if kind == "classification":
                value = 100.0 * metrics.accuracy(pred, ys["test"])
                val = 100.0 * p.val_score
            else:
                value = metrics.mse(pred, ys["test"])
                val = -p.val_score
            rows.append(
                {
                    "method": method,
                    "features": features,
                    "task": task,
                    "group": spec.group,
                    "metric": spec.metric,
                    "seed": int(seed),
                    "value": float(value),
                    "val_score": float(val),
                    "best_epoch": int(p.best_epoch),
                    "n_train": split["train"].height,
                    "n_val": split["val"].height,
                    "n_test": split["test"].height,
                }
            )
    return LVUResult(pl.DataFrame(rows, schema=RUN_SCHEMA), missing, skipped)
