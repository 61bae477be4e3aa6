"""Probe-over-training curve: the LVU probe on the snapshots of one pretraining run, against the step.

A run pretrained with `train.snapshot_every=N` holds weights-only exports in
`<run dir>/snapshots/step_<N>/` (step 0 = the random initialisation) beside its final `export/`.
`probe_curve` runs `evaluate_lvu` on each of them (same features, tasks and probe seeds for every
step, so the points compare), and logs to the pretraining run's own MLflow run, against the step:
`probe/content`, `probe/metadata`, `probe/user` (group means over seeds, as `lvu/<group>`), their
`.std`, and `probe/lvu/<task>` per task. It writes `probe_curve.parquet` and `probe_curve.png` into the
run folder (also logged as MLflow artifacts under `probe_curve/`) and returns the table as a polars
DataFrame: one row per step, with `source` (snapshot or export), the group means and stds and one
column per task (mean over seeds; classification top-1 %, regression MSE).

Metrics are logged with `MlflowClient.log_metric(run_id, ..., step=...)`, which works on a finished
run without reopening it; each point is logged as soon as it is scored. Tracking failures are
warnings, never errors (the Parquet file holds the curve anyway).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from lmp_bench.features import DEFAULT_FEATURES
from lmp_bench.lvu import GROUPS, TASKS
from lmp_bench.probe import ProbeConfig
from lmp_bench.progress import current, seeds_of
from lmp_bench.results import write_parquet_atomic

log = logging.getLogger(__name__)

SNAPSHOTS = "snapshots"  # lmp_model.pretrain.export.SNAPSHOTS (not imported: it pulls in the trainer)
EXPORT = "export"
CURVE_PARQUET = "probe_curve.parquet"
CURVE_PNG = "probe_curve.png"
ARTIFACT_DIR = "probe_curve"


@dataclass(frozen=True)
class CurvePoint:
    """One pretrained folder of a run and the optimizer step its weights are from."""

    step: int
    path: Path
    source: str  # "snapshot" or "export"
    meta: dict[str, Any]


def _read_meta(folder: Path) -> dict[str, Any] | None:
    from lmp_model.export import INFO_FILE

    p = folder / INFO_FILE
    if not p.is_file():
        return None
    try:
        return dict(json.loads(p.read_text()).get("meta") or {})
    except (OSError, ValueError) as e:
        log.warning("%s: unreadable (%s); skipped", p, e)
        return None


def find_points(run: str | os.PathLike, include_export: bool = True) -> list[CurvePoint]:
    """The snapshots of a run (sorted by step) plus its final export, one point per step.

    `run`: a run folder (`<out_dir>/<name>`, holding `snapshots/` and `export/`) or a snapshots folder.
    A snapshot's step is its meta `step` (else the `step_<N>` folder name); the export's is its meta
    `steps`. When the export and a snapshot share a step, the export is kept (same weights; for ZeRO
    runs it is the fp32 master copy).
    """
    root = Path(run)
    if not root.is_dir():
        raise FileNotFoundError(f"probe curve: {root}: no such folder")
    run_dir = _run_dir(root)
    snap_dir = run_dir / SNAPSHOTS
    points: dict[int, CurvePoint] = {}
    for d in sorted(snap_dir.glob("step_*")):
        meta = _read_meta(d) if d.is_dir() else None
        if meta is None:
            continue
        step = meta.get("step")
        if step is None:
            try:
                step = int(d.name.removeprefix("step_"))
            except ValueError:
                continue
        points[int(step)] = CurvePoint(int(step), d, "snapshot", meta)
    exp = run_dir / EXPORT
    if include_export and exp.is_dir():
        meta = _read_meta(exp)
        if meta is not None and meta.get("steps") is not None:
            points[int(meta["steps"])] = CurvePoint(int(meta["steps"]), exp, "export", meta)
    if not points:
        raise FileNotFoundError(
            f"probe curve: no snapshots under {snap_dir} (pretrain with train.snapshot_every=N) "
            f"and no export in {exp}"
        )
    return [points[s] for s in sorted(points)]


def _run_dir(run: str | os.PathLike) -> Path:
    """The run folder of `run` (a run folder or its snapshots folder)."""
    root = Path(run)
    return root.parent if root.name == SNAPSHOTS and not (root / SNAPSHOTS).is_dir() else root


def pretrain_run_id(run: str | os.PathLike) -> str | None:
    """The MLflow run id recorded by the run's snapshots / export (None if none records one)."""
    return _run_id(find_points(run), "auto")


def _tracking_uri(points: Sequence[CurvePoint], given: str | None) -> str:
    """`given`, else the pretraining config's `mlflow.tracking_uri`, else the default URI."""
    if given:
        return given
    from omegaconf import OmegaConf

    from lmp_model.export import PRETRAIN_FILE
    from lmp_model.tracking import default_tracking_uri

    for p in points:
        y = p.path / PRETRAIN_FILE
        if y.is_file():
            uri = OmegaConf.select(OmegaConf.load(y), "mlflow.tracking_uri", default="")
            if uri:
                return str(uri)
            break
    return default_tracking_uri()


def _run_id(points: Sequence[CurvePoint], given: str | None) -> str | None:
    if given != "auto":
        return given or None
    for p in reversed(points):
        rid = p.meta.get("mlflow_run_id")
        if rid:
            return str(rid)
    return None


class _Logger:
    """Logs to an existing (possibly finished) MLflow run; disables itself after the first failure."""

    def __init__(self, run_id: str | None, uri: str):
        self.run_id, self.client = run_id, None
        if run_id is None:
            return
        try:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=uri)
            self.client.get_run(run_id)
        except Exception as e:  # noqa: BLE001
            log.warning("probe curve: MLflow run %s not available in %s (%s); not logging", run_id, uri, e)
            self.client = None

    @property
    def active(self) -> bool:
        return self.client is not None

    def _guard(self, fn, *args) -> None:
        if self.client is None:
            return
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001
            log.warning("probe curve: MLflow logging failed (%s); not logging further", e)
            self.client = None

    def metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, int(step)) for k, v in values.items() if math.isfinite(v)]
        self._guard(lambda: self.client.log_batch(self.run_id, metrics=batch))

    def tags(self, tags: dict[str, str]) -> None:
        self._guard(lambda: [self.client.set_tag(self.run_id, k, v) for k, v in tags.items()])

    def artifact(self, path: Path) -> None:
        self._guard(lambda: self.client.log_artifact(self.run_id, str(path), ARTIFACT_DIR))


def _point_row(point: CurvePoint, res) -> tuple[dict[str, Any], dict[str, float]]:
    """(table row, MLflow metrics) of one scored point."""
    row: dict[str, Any] = {"step": point.step, "source": point.source}
    metrics: dict[str, float] = {}
    groups = {r["group"]: r for r in res.groups().iter_rows(named=True)}
    for g in GROUPS:
        r = groups.get(g)
        row[g] = r["mean"] if r else None
        row[f"{g}_std"] = r["std"] if r else None
        if r:
            metrics[f"probe/{g}"] = r["mean"]
            metrics[f"probe/{g}.std"] = r["std"]
    for r in res.per_task().iter_rows(named=True):
        row[r["task"]] = r["mean"]
        metrics[f"probe/lvu/{r['task']}"] = r["mean"]
    return row, metrics


def _plot(df: pl.DataFrame, out: Path, title: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        log.warning("matplotlib not installed: no %s", out.name)
        return None
    groups = [g for g in GROUPS if g in df.columns and df[g].null_count() < len(df)]
    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), dpi=100, squeeze=False)
    steps = df["step"].to_list()
    for ax, g in zip(axes[0], groups):
        mean = df[g].to_list()
        std = df[f"{g}_std"].fill_null(0.0).to_list()
        ax.errorbar(steps, mean, yerr=std, marker="o", capsize=3)
        ax.set_title(f"{g} ({'MSE ↓' if g == 'user' else 'top-1 % ↑'})")
        ax.set_xlabel("pretraining step")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def probe_curve(
    run: str | os.PathLike,
    eval_store,
    labels_dir: str | os.PathLike,
    tasks: str | Sequence[str] | None = None,
    seeds: int | Sequence[int] = 3,
    features: str | Sequence[str] = DEFAULT_FEATURES,
    probe: str | ProbeConfig | None = "linear",
    *,
    mlflow_run_id: str | None = "auto",
    tracking_uri: str | None = None,
    out_dir: str | os.PathLike | None = None,
    include_export: bool = True,
    k: int | None = None,
    batch_size: int = 64,
    threads: int = 1,
) -> pl.DataFrame:
    """LVU probe scores of every snapshot of one pretraining run (plus its export), by step.

    run: the run folder or its `snapshots/` folder (see `find_points`). eval_store / labels_dir /
    tasks / seeds / features / probe / k: as `evaluate_lvu` (k default: each point's pretraining k).
    mlflow_run_id: "auto" (the run recorded in the snapshots' meta), an explicit run id, or None (no
    MLflow logging). tracking_uri: default the pretraining config's `mlflow.tracking_uri`, else
    `$MLFLOW_TRACKING_URI`, else `sqlite:///<repo>/mlflow.db`. out_dir: where `probe_curve.parquet` and
    `probe_curve.png` go (default: the run folder).

    Returns one row per step: step, source, content, content_std, metadata, metadata_std, user,
    user_std (nulls for groups without a task) and one column per scored task.
    """
    from lmp_bench.api import lvu_tasks

    points = find_points(run, include_export=include_export)
    run_dir = _run_dir(run)
    out = Path(out_dir) if out_dir is not None else run_dir
    out.mkdir(parents=True, exist_ok=True)
    uri = _tracking_uri(points, tracking_uri)
    logger = _Logger(_run_id(points, mlflow_run_id), uri)
    feat_name = features if isinstance(features, str) else "+".join(features)
    logger.tags({"lmp.probe_curve.features": feat_name, "lmp.probe_curve.store": str(Path(eval_store))})
    current().plan(len(points) * len(lvu_tasks(labels_dir, tasks)) * seeds_of(seeds))
    rows = _score_points(
        points, logger, eval_store, labels_dir, features, tasks, seeds, probe,
        k=k, batch_size=batch_size, threads=threads,
    )  # fmt: skip
    df = _curve_frame(rows)
    pq = write_parquet_atomic(df, out / CURVE_PARQUET)
    png = _plot(df, out / CURVE_PNG, f"LVU probe over pretraining: {run_dir.name} ({feat_name})")
    logger.artifact(pq)
    if png is not None:
        logger.artifact(png)
    return df


def _score_points(
    points, logger: _Logger, eval_store, labels_dir, features, tasks, seeds, probe, *, k, batch_size, threads
) -> list[dict[str, Any]]:
    """The table rows: `evaluate_lvu` on each point in step order, its metrics logged as soon as scored."""
    from lmp_bench.api import evaluate_lvu

    rows: list[dict[str, Any]] = []
    for p in points:
        t0 = time.perf_counter()
        res = evaluate_lvu(
            str(p.path),
            eval_store,
            labels_dir,
            features=features,
            tasks=tasks,
            seeds=seeds,
            probe=probe,
            k=k,
            batch_size=batch_size,
            threads=threads,
        )
        row, metrics = _point_row(p, res)
        rows.append(row)
        logger.metrics(metrics, p.step)
        log.info(
            "probe curve: step %d (%s) %s in %.1fs",
            p.step,
            p.source,
            " ".join(f"{g}={row[g]:.2f}" for g in GROUPS if row.get(g) is not None),
            time.perf_counter() - t0,
        )
    return rows


def _curve_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """The curve table: step, source, each group's mean and std, then the scored tasks in `TASKS` order."""
    task_cols = [t for t in TASKS if any(t in r for r in rows)]
    cols = ["step", "source", *[c for g in GROUPS for c in (g, f"{g}_std")], *task_cols]
    df = pl.DataFrame(
        [{c: r.get(c) for c in cols} for r in rows],
        schema={c: (pl.Int64 if c == "step" else pl.String if c == "source" else pl.Float64) for c in cols},
    )
    return df


def format_curve(df: pl.DataFrame) -> str:
    """The curve as a text table: one line per step, groups as mean ± std, then the tasks."""
    groups = [g for g in GROUPS if g in df.columns and df[g].null_count() < len(df)]
    tasks = [c for c in df.columns if c in TASKS]
    head = ["step", "source", *groups, *tasks]
    lines = []
    for r in df.iter_rows(named=True):
        cells = [str(r["step"]), r["source"]]
        cells += [f"{r[g]:.2f} ± {r[f'{g}_std']:.2f}" for g in groups]
        cells += ["" if r[t] is None else f"{r[t]:.2f}" for t in tasks]
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), *(fmt.format(*c) for c in lines)])


__all__ = ["CurvePoint", "find_points", "format_curve", "pretrain_run_id", "probe_curve"]
