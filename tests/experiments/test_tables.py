"""Table 1's rows and probe seeds (no Ray): the three no-pretraining rows, separate probe seeds, rendering."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

EXP = Path(__file__).resolve().parents[2] / "experiments"
sys.path.insert(0, str(EXP))

import ablate_losses  # noqa: E402
import make_results  # noqa: E402
from _sweep import table as tbl  # noqa: E402
from _sweep import work  # noqa: E402
from _sweep.config import load_sweep_config  # noqa: E402
from _sweep.spec import SweepContext  # noqa: E402
from _sweep.trial import TrialContext  # noqa: E402
from _sweep.work import probe_seed  # noqa: E402


def test_table1_has_three_labelled_no_pretraining_rows():
    cfg = load_sweep_config("default")
    stages, columns = ablate_losses.build(cfg, None)
    specs = stages[0].specs
    modes = {s.variant: s.no_pretrain for s in specs if s.work is work.probe_only}
    assert modes == {
        "No pretraining: base features": "base",
        "No pretraining: frozen random init": "random_init",
        "No pretraining: scratch (supervised)": "scratch",
    }
    assert {s.seed for s in specs} == set(cfg.seeds)


def test_probe_seed_differs_from_pretraining_seed_and_is_shared_by_rows():
    cfg = load_sweep_config("default")
    sweep = SweepContext(probe=cfg.probe)
    stages, _ = ablate_losses.build(cfg, None)
    by_seed: dict[int, set[int]] = {}
    for spec in stages[0].specs:
        p = probe_seed(TrialContext(spec=spec, sweep=sweep, attempt=1, dir=Path(".")))
        assert p != spec.seed and p == spec.seed + 1000
        by_seed.setdefault(spec.seed, set()).add(p)
    assert all(len(ps) == 1 for ps in by_seed.values())  # every row: the same probe seed per trial seed


def test_table1_renders_with_z_scores(tmp_path):
    rows = []
    for order, (slug, label, _) in enumerate(ablate_losses.ROWS):
        for seed in (0, 1, 2):
            base = 40.0 + 5 * order + seed
            rows.append({"order": order, "variant": label, "seed": seed, "key": f"{slug}-s{seed}",
                         "status": "ok", "child_run_id": f"r{order}{seed}", "git_commit": "abc", "attempts": 1,
                         "metrics": {"content": base, "metadata": base / 2, "user": 1.0 / base}})  # fmt: skip
    summary = tbl.summarize(tbl.trials_frame(rows))
    text = make_results.render_table("losses", summary, tmp_path)
    assert "| No pretraining: scratch (supervised) | 51.00 ± 1.00" in text
    assert (
        "| No pretraining: base features | 41.00 ± 1.00 | 20.50 ± 0.50 | 0.024 ± 0.001 | — | — | — | 3/3 |"
        in text
    )
    assert "44.87 | 32.47 | 3.19" in text  # the paper's row beside scratch
    assert "Ordering" in text and "z = " in text
    assert isinstance(summary, pl.DataFrame)


def _summary(seeds, spread=True):
    rows = []
    for order, (slug, label, _) in enumerate(ablate_losses.ROWS):
        for seed in seeds:
            base = 40.0 + 5 * order + (seed if spread else 0)
            rows.append({"order": order, "variant": label, "seed": seed, "key": f"{slug}-s{seed}",
                         "status": "ok", "child_run_id": f"r{order}{seed}", "git_commit": "abc", "attempts": 1,
                         "metrics": {"content": base, "metadata": 80 - base, "user": 1.0 / base}})  # fmt: skip
    trials = tbl.trials_frame(rows)
    return trials, tbl.summarize(trials)


def test_parent_description_has_verdict_paper_numbers_and_chart():
    """The parent run's Description: title, the one-line verdict first (MLflow folds the rest under "Show
    more"), ours beside the paper's per group, the chart inline, then the full table."""
    from _sweep.runner import description

    trials, summary = _summary((0, 1, 2))
    md = tbl.to_markdown(summary, trials, "Table 1: pretraining losses", [])
    note, verdict = description("losses", "Table 1: pretraining losses", summary, md, "RUN")
    first = note.splitlines()
    assert first[0] == "## Table 1: pretraining losses" and first[2] == verdict
    # content rises row by row (the paper's way), metadata falls (against it): 9 of 9 and 0 of 9 pairs
    assert verdict.startswith("**Verdict:** the paper's ordering holds in part, 18 of 27 pairs (Content 9/9, "
                              "Metadata 0/9, User 9/9); rows ahead of base features: Content 4/4 (best All "
                              "three, z = +36.7), Metadata 0/4 (closest w/o L_intra, z = -18.4)")  # fmt: skip
    assert "| All three | 71.00 ± 1.00 | 60.53 | 9.00 ± 1.00 | 57.67 | 0.014 ± 0.000 | 1.16 | 3/3 |" in note
    assert "| No pretraining: base features | 41.00 ± 1.00 | — |" in note
    assert (
        "![bar chart: Table 1. Pretraining losses](get-artifact?path=results%2Ftable.png&run_uuid=RUN)"
        in note
    )
    assert "- **Content ↑**: All three > w/o L_intra: ✓ z = +" in note
    assert "### Every row and trial" in note and "| full-s2 | 2 | ok |" in note  # the full table follows
    # one seed: no standard error, the margins are differences
    _, one = _summary((0,))
    _, v1 = description("losses", "T", one, "## T\n", "RUN")
    assert "Content 4/4 (best All three, Δ = +30.00, no seed spread)" in v1
    # a table without paper numbers: the table and the chart
    note, v = description("machinery", "Stand-in", summary, md, "RUN")
    assert v == "" and note.startswith("## Table 1") and "get-artifact?path=results%2Ftable.png" in note


def test_paper_numbers_live_in_one_place():
    from _sweep import paper

    assert make_results.TABLES["losses"]["paper"] is paper.TABLES["losses"].paper
    assert paper.paper_numbers("seq_len")["k = 60"] == (61.36, 58.12, 1.14)
    labels = {label for _, label, _ in ablate_losses.ROWS}
    assert set(paper.TABLES["losses"].paper) == labels
    import compare_recipes

    recipes = paper.TABLES["recipes"]  # rows matched by name ("M2S (...)" -> "M2S")
    assert set(recipes.paper) == {recipes.key_of(label) for _, label, _ in compare_recipes.ROWS}


def test_parent_description_fits_mlflow_tag_limit():
    """MLflow cuts a tag value after 8000 characters: with many trials the full table stays an artifact."""
    from _sweep.runner import NOTE_LIMIT, description

    rows = []
    for order, (slug, label, _) in enumerate(ablate_losses.ROWS):
        for seed in range(5):
            rows.append({"order": order, "variant": label, "seed": seed, "key": f"{slug}-s{seed}", "status": "ok",
                         "child_run_id": f"{order}{seed}".ljust(32, "f"), "git_commit": "a" * 40 + "-dirty",
                         "attempts": 1, "metrics": {"content": 40.0 + order + seed, "metadata": 30.0 - seed,
                                                    "user": 1.0 + 0.01 * seed}})  # fmt: skip
    trials = tbl.trials_frame(rows)
    summary = tbl.summarize(trials)
    md = tbl.to_markdown(summary, trials, "Table 1: pretraining losses", [])
    assert len(md) > NOTE_LIMIT // 2
    note, verdict = description("losses", "Table 1: pretraining losses", summary, md, "RUN")
    assert len(note) <= NOTE_LIMIT and verdict in note and "| All three | " in note
    assert "In the artifact `results/table.md`" in note and "get-artifact?path=results%2Ftable.png" in note
