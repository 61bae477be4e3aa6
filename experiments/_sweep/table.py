"""The results table of a sweep, in the paper's layout: Content ↑, Metadata ↑, User ↓, mean ± std.

Input: one row per trial (variant, seed, status, child run id, git commit, group metrics).
Output: the aggregated table (one row per variant, in sweep order) as Polars, markdown and Parquet,
and a bar chart PNG. A variant whose trials all failed stays in the table, marked failed.
"""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

GROUPS = (("content", "Content ↑"), ("metadata", "Metadata ↑"), ("user", "User ↓"))


def trials_frame(rows: list[dict]) -> pl.DataFrame:
    """Per-trial rows -> a frame with fixed columns (metrics null for failed trials)."""
    base = ["order", "variant", "seed", "key", "status", "child_run_id", "git_commit", "attempts", "error"]
    metric_cols = sorted({k for r in rows for k in r.get("metrics", {})})
    data = []
    for r in rows:
        row = {c: r.get(c) for c in base}
        row["error"] = (row["error"] or "")[:500]
        for m in metric_cols:
            v = r.get("metrics", {}).get(m)
            row[m] = float(v) if isinstance(v, int | float) else None
        data.append(row)
    schema = {
        "order": pl.Int64,
        "variant": pl.String,
        "seed": pl.Int64,
        "key": pl.String,
        "status": pl.String,
        "child_run_id": pl.String,
        "git_commit": pl.String,
        "attempts": pl.Int64,
        "error": pl.String,
        **{m: pl.Float64 for m in metric_cols},
    }
    return pl.DataFrame(data, schema=schema, orient="row") if data else pl.DataFrame(schema=schema)


def summarize(trials: pl.DataFrame, columns: dict[str, dict[str, str]] | None = None) -> pl.DataFrame:
    """One row per variant: mean and sample std (ddof=1) over its finished seeds, child runs, commits."""
    out = []
    for (variant,), group in trials.sort("order").group_by("variant", maintain_order=True):
        ok = group.filter(pl.col("status") == "ok")
        n_ok, n = ok.height, group.height
        row: dict = {"variant": variant, **(columns or {}).get(variant, {})}
        for g, _ in GROUPS:
            vals = ok[g].drop_nulls().to_list() if g in ok.columns else []
            row[f"{g}_mean"] = sum(vals) / len(vals) if vals else None
            row[f"{g}_std"] = _std(vals) if vals else None
        row["seeds_ok"] = n_ok
        row["seeds"] = n
        row["status"] = "ok" if n_ok == n else ("failed" if n_ok == 0 else f"partial ({n - n_ok}/{n} failed)")
        row["child_run_ids"] = ",".join(r for r in group["child_run_id"].to_list() if r)
        row["git_commits"] = ",".join(sorted({c for c in group["git_commit"].to_list() if c}))
        out.append(row)
    return pl.DataFrame(out)


def _std(vals: list[float]) -> float:
    if len(vals) < 2:
        return 0.0
    mean = sum(vals) / len(vals)
    return math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def fmt(mean: float | None, std: float | None, digits: int = 2) -> str:
    """ "mean ± std"; accuracies (%) with 2 decimals, MSE (user) with 3."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "failed"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def to_markdown(summary: pl.DataFrame, trials: pl.DataFrame, title: str, label_columns: list[str]) -> str:
    """The aggregated table, then every trial with its child run id and git commit."""
    head = ["Variant", *label_columns, *(h for _, h in GROUPS), "Seeds ok", "Status", "Child runs", "Commit"]
    lines = [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary.iter_rows(named=True):
        cells = [r["variant"], *(str(r.get(c, "")) for c in label_columns)]
        cells += [fmt(r[f"{g}_mean"], r[f"{g}_std"], 3 if g == "user" else 2) for g, _ in GROUPS]
        cells += [f"{r['seeds_ok']}/{r['seeds']}", r["status"], r["child_run_ids"], r["git_commits"]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "### Trials",
        "",
        "| Trial | Seed | Status | Attempts | Content | Metadata | User | Child run | Commit |",
    ]
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for r in trials.sort("order").iter_rows(named=True):
        vals = [f"{r[g]:.{3 if g == 'user' else 2}f}" if r.get(g) is not None else "—" for g, _ in GROUPS]
        status = (
            r["status"] if r["status"] == "ok" else f"{r['status']}: {(r['error'] or '').splitlines()[:1]}"
        )
        lines.append(
            f"| {r['key']} | {r['seed']} | {status} | {r['attempts']} | "
            + " | ".join(vals)
            + f" | {r['child_run_id'] or '—'} | {r['git_commit']} |"
        )
    return "\n".join(lines) + "\n"


def bar_chart(summary: pl.DataFrame, title: str, path: Path, reference: str | None = None) -> Path:
    """Three panels (Content ↑, Metadata ↑, User ↓), one horizontal bar per variant (the row labels read
    across, in table order, top to bottom) with a ±std error bar; `reference` (e.g. the base-features
    row) is drawn as a dashed line through every panel, the value the other rows should beat. At most
    ~1000 px wide: it is shown inline in the parent run's MLflow Description."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = summary["variant"].to_list()
    ref_row = names.index(reference) if reference in names else None
    height = 1.3 + 0.32 * len(names)
    fig, axes = plt.subplots(1, 3, figsize=(11, height), sharey=True)
    ys = list(range(len(names)))
    for ax, (g, header) in zip(axes, GROUPS):
        raw = summary[f"{g}_mean"].to_list()
        means = [m if m is not None else 0.0 for m in raw]
        stds = [s if s is not None else 0.0 for s in summary[f"{g}_std"].to_list()]
        colors = ["#999999" if i == ref_row else "#4C72B0" for i in ys]
        ax.barh(ys, means, xerr=stds, capsize=3, color=colors, height=0.7)
        for y, m in zip(ys, raw):
            if m is None:
                ax.text(0, y, " failed", ha="left", va="center", color="red", fontsize=8)
        if ref_row is not None and raw[ref_row] is not None:
            ax.axvline(raw[ref_row], color="#555555", ls="--", lw=1)
        ax.set_title(header, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    axes[0].set_yticks(ys, names, fontsize=8)
    axes[0].invert_yaxis()
    note = f" (dashed: {reference})" if ref_row is not None else ""
    fig.suptitle(f"{title}: mean ± std over seeds{note}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
