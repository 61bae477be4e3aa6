"""LVU results: per-task per-seed scores, the paper's tables, Parquet output.

`LVUResult.runs` has one row per (method, task, seed). Classification scores are top-1 accuracy in
percent, regression scores MSE, as in the paper's Table 4. A group average (content, metadata: mean
top-1 over the group's tasks; user: mean MSE) is computed per seed, then mean and std over seeds;
std is the sample std (ddof=1), 0 with a single seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from lmp_bench.lvu import GROUPS, TASKS
from lmp_data.files import atomic_write

GROUP_TITLES = {"content": "Content ↑", "metadata": "Metadata ↑", "user": "User ↓"}
RUN_SCHEMA = {
    "method": pl.String,
    "features": pl.String,
    "task": pl.String,
    "group": pl.String,
    "metric": pl.String,
    "seed": pl.Int64,
    "value": pl.Float64,
    "val_score": pl.Float64,
    "best_epoch": pl.Int64,
    "n_train": pl.Int64,
    "n_val": pl.Int64,
    "n_test": pl.Int64,
}


def write_parquet_atomic(df: pl.DataFrame, path: str | Path) -> Path:
    """Write `df` to `path` (parent folders made) with `lmp_data.files.atomic_write`: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, df.write_parquet)


@dataclass
class LVUResult:
    """Scores of one or more methods (rows of a paper table) on LVU tasks."""

    runs: pl.DataFrame
    missing: dict[str, int] = field(default_factory=dict)  # task -> labelled clips absent from the store
    skipped: dict[str, str] = field(default_factory=dict)  # task -> why it was not scored
    failed: dict[str, str] = field(default_factory=dict)  # clip -> why it has no features (unreadable, NaN)
    history: pl.DataFrame | None = None  # per-epoch training curves of trained rows (lmp_bench.scratch)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(self.runs["method"].to_list()))

    def per_task(self) -> pl.DataFrame:
        """method, task, group, metric, mean, std, n_seeds."""
        order = {t: i for i, t in enumerate(TASKS)}
        return (
            self.runs.group_by("method", "task", "group", "metric", maintain_order=True)
            .agg(
                mean=pl.col("value").mean(),
                std=pl.col("value").std(ddof=1).fill_null(0.0),
                n_seeds=pl.len(),
            )
            .sort(pl.col("task").replace_strict(order, return_dtype=pl.Int64), maintain_order=True)
            .sort("method", maintain_order=True)
        )

    def group_per_seed(self) -> pl.DataFrame:
        """method, group, seed, value: the group average of each seed."""
        return self.runs.group_by("method", "group", "seed", maintain_order=True).agg(
            value=pl.col("value").mean()
        )

    def groups(self) -> pl.DataFrame:
        """method, group, mean, std over seeds of the group average."""
        return (
            self.group_per_seed()
            .group_by("method", "group", maintain_order=True)
            .agg(mean=pl.col("value").mean(), std=pl.col("value").std(ddof=1).fill_null(0.0))
        )

    def group_means(self, method: str | None = None) -> dict[str, float]:
        """{"content": .., "metadata": .., "user": ..} for one method (default: the first)."""
        method = method or self.methods[0]
        g = self.groups().filter(pl.col("method") == method)
        return dict(zip(g["group"].to_list(), g["mean"].to_list()))

    def partial_groups(self) -> dict[tuple[str, str], tuple[list[str], list[str]]]:
        """(method, group) -> (tasks averaged, tasks of the group that were not evaluated), for every
        group average computed over only some of its tasks (e.g. task folders missing)."""
        out = {}
        for method in self.methods:
            done = set(self.runs.filter(pl.col("method") == method)["task"].to_list())
            for group in GROUPS:
                tasks = [t for t, spec in TASKS.items() if spec.group == group]
                present = [t for t in tasks if t in done]
                if present and len(present) < len(tasks):
                    out[(method, group)] = (present, [t for t in tasks if t not in done])
        return out

    def table(self) -> pl.DataFrame:
        """The paper's Table 4 layout, one row per method: each task and group as "mean ± std"."""
        rows = []
        per_task, groups = self.per_task(), self.groups()
        for method in self.methods:
            row = {"method": method}
            for group in GROUPS:
                for name, spec in TASKS.items():
                    if spec.group != group:
                        continue
                    r = per_task.filter((pl.col("method") == method) & (pl.col("task") == name))
                    if r.height:
                        row[spec.title] = _fmt(r["mean"][0], r["std"][0], spec.kind == "regression")
                g = groups.filter((pl.col("method") == method) & (pl.col("group") == group))
                if g.height:
                    row[f"{group.capitalize()} avg"] = _fmt(g["mean"][0], g["std"][0], group == "user")
            rows.append(row)
        return pl.DataFrame(rows)

    def format(self) -> str:
        """Printable tables: the per-task layout (Table 4) and the group summary (Tables 1-3)."""
        lines = ["LVU (top-1 % for classification, MSE for regression; mean ± std over seeds)"]
        lines += _render(self.table())
        summary = []
        groups = self.groups()
        for method in self.methods:
            row = {"method": method}
            for group in GROUPS:
                g = groups.filter((pl.col("method") == method) & (pl.col("group") == group))
                if g.height:
                    row[GROUP_TITLES[group]] = _fmt(g["mean"][0], g["std"][0], group == "user")
            summary.append(row)
        lines += ["", "Summary (paper Tables 1-3)"] + _render(pl.DataFrame(summary))
        partial = self.partial_groups()
        if partial:
            lines.append("")
            for (method, group), (present, absent) in partial.items():
                who = f"{method}: " if len(self.methods) > 1 else ""
                lines.append(
                    f"note: {who}{group.capitalize()} avg ({GROUP_TITLES[group]}) averages {', '.join(present)} "
                    f"only; not evaluated: {', '.join(absent)} (not comparable to the paper's average)"
                )
        if self.missing:
            lines.append("")
            lines.append(
                "clips missing from the store (skipped): "
                + ", ".join(f"{t} {n}" for t, n in self.missing.items() if n)
                if any(self.missing.values())
                else "clips missing from the store: none"
            )
        if self.failed:
            lines.append(f"clips without features (unreadable or non-finite): {len(self.failed)}")
        for task, why in self.skipped.items():
            lines.append(f"task {task} not scored: {why}")
        return "\n".join(lines)

    def write_parquet(self, path: str | Path) -> Path:
        """Write the per-seed rows (with the per-task means and std joined on) atomically."""
        df = self.runs.join(
            self.per_task().select("method", "task", "mean", "std"), on=["method", "task"], how="left"
        )
        return write_parquet_atomic(df, path)

    @staticmethod
    def concat(results: list[LVUResult]) -> LVUResult:
        missing: dict[str, int] = {}
        skipped: dict[str, str] = {}
        failed: dict[str, str] = {}
        for r in results:
            failed.update(r.failed)
            for t, n in r.missing.items():
                missing[t] = max(missing.get(t, 0), n)
            skipped.update(r.skipped)
        hist = [r.history for r in results if r.history is not None]
        return LVUResult(
            pl.concat([r.runs for r in results], how="vertical"),
            missing,
            skipped,
            failed,
            pl.concat(hist, how="vertical") if hist else None,
        )


def _fmt(mean: float, std: float, regression: bool) -> str:
    if mean is None or math.isnan(mean):
        return "-"
    return f"{mean:.3f} ± {std:.3f}" if regression else f"{mean:.2f} ± {std:.2f}"


def _render(df: pl.DataFrame) -> list[str]:
    cols = df.columns
    cells = [[str(v) if v is not None else "-" for v in row] for row in df.rows()]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    out = [" | ".join(c.ljust(w) for c, w in zip(cols, widths))]
    out.append("-+-".join("-" * w for w in widths))
    out += [" | ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return out
