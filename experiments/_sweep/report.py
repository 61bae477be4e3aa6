"""A sweep's results (`runner.run_sweep`): the table files, and the parent run's Description and UI link.

`_write_table` writes results/ (table.md, table.parquet, trials.parquet, table.png) and logs them to the
MLflow parent run; `description` is that run's Description (the paper's numbers beside ours, the verdict);
`ui_hint` the lines that tell how to open the MLflow UI on the sweep.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlflow.tracking import MlflowClient

from lmp_data.files import atomic_write
from lmp_model.tracking import artifact_url

from . import table as tbl

if TYPE_CHECKING:
    from .runner import SweepOutcome


def _write_table(
    outcome: SweepOutcome, client: MlflowClient, table: str, title: str, label_cols: list, columns: dict
) -> str:
    out = outcome.sweep_dir / "results"
    out.mkdir(parents=True, exist_ok=True)
    trials = tbl.trials_frame(outcome.rows)
    summary = tbl.summarize(trials, columns)
    md = tbl.to_markdown(summary, trials, title, label_cols)
    atomic_write(out / "table.md", md)
    for name, frame in (("table.parquet", summary), ("trials.parquet", trials)):
        atomic_write(out / name, frame.write_parquet)
    from . import paper

    base = paper.TABLES[table].base if table in paper.TABLES else None
    tbl.bar_chart(summary, title, out / "table.png", reference=base)
    for name in ("table.md", "table.parquet", "trials.parquet", "table.png"):
        client.log_artifact(outcome.parent_run_id, str(out / name), artifact_path="results")
    note, outcome.verdict = description(table, title, summary, md, outcome.parent_run_id)
    client.set_tag(outcome.parent_run_id, "mlflow.note.content", note)
    for g, _ in tbl.GROUPS:
        for r in summary.iter_rows(named=True):
            if r[f"{g}_mean"] is not None:
                slug = "".join(c if c.isalnum() or c in "._-" else "_" for c in r["variant"])
                client.log_metric(outcome.parent_run_id, f"{g}/{slug}", float(r[f"{g}_mean"]))
    return md


CHART = "results/table.png"
NOTE_LIMIT = 8000
"""MLflow keeps at most this many characters of a tag value (mlflow.utils.validation.MAX_TAG_VAL_LENGTH),
a Description included; longer ones are cut with a warning."""


def description(table: str, title: str, summary, md: str, run_id: str) -> tuple[str, str]:
    """The parent run's Description (mlflow.note.content, markdown) and the one-line verdict.

    MLflow's run page shows a Description's first lines above "Show more": the title and the verdict on
    the paper's ordering come first, then our rows beside the paper's numbers, the bar chart (the
    `results/table.png` artifact, shown inline), the ordering pair by pair, and the full table with every
    trial's child run and commit. A table without paper numbers (`paper.TABLES`) gets the table and chart."""
    from . import paper

    chart = artifact_url(run_id, CHART)
    rows = list(summary.iter_rows(named=True)) if summary.height else []
    comparison = paper.comparison_markdown(table, rows, chart=chart)
    body = md.split("\n", 1)[1].lstrip("\n") if md.startswith("## ") else md
    if comparison is None:
        note = f"{md}\n![bar chart: {title}]({chart})\n\nChart: artifact `{CHART}`.\n"
        return note, ""
    verdict = comparison.split("\n", 1)[0]
    head = f"## {title}\n\n{comparison}\nChart: artifact `{CHART}`; the full table: artifact `results/table.md`.\n\n"
    note = f"{head}### Every row and trial\n\n{body}"
    if len(note) > NOTE_LIMIT:  # many trials: the full table stays in the artifact
        note = f"{head}### Every row and trial\n\nIn the artifact `results/table.md` (too long for a Description).\n"
    if len(note) > NOTE_LIMIT:  # still too long: without the pair-by-pair list
        short = paper.comparison_markdown(table, rows, chart=chart, pairs=False)
        note = f"## {title}\n\n{short}\nChart: artifact `{CHART}`; the full table: artifact `results/table.md`.\n"
    return note[:NOTE_LIMIT], verdict


ML_VIEW = "workflowType=machine_learning"
"""MLflow 3.17's UI opens an experiment in the view stored in the browser (GenAI unless the user picked
"Model training" at the top once) and ignores the `mlflow.experimentKind` tag for that; a link with this
query opens the model-training view."""


def ui_hint(uri: str, experiment_id: str, parent: str) -> str:
    return (
        "[sweep] open the MLflow UI on these runs:\n"
        f"  bash scripts/mlflow_ui.sh --backend-store-uri {uri}\n"
        f"  then browse http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{parent}?{ML_VIEW}\n"
        f"  (this sweep's run: the table, the paper's numbers, the verdict, the chart; all runs: "
        f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs?{ML_VIEW})"
    )
