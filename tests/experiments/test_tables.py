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
from _sweep.config import load_sweep_config  # noqa: E402
from _sweep.trial import TrialContext  # noqa: E402
from _sweep.work import probe_seed  # noqa: E402


def test_table1_has_three_labelled_no_pretraining_rows():
    cfg = load_sweep_config("default")
    stages, columns = ablate_losses.build(cfg, None)
    specs = stages[0].specs
    modes = {s["variant"]: s.get("no_pretrain") for s in specs if s["work"].endswith("probe_only")}
    assert modes == {
        "No pretraining: base features": "base",
        "No pretraining: frozen random init": "random_init",
        "No pretraining: scratch (supervised)": "scratch",
    }
    assert {s["seed"] for s in specs} == set(cfg.seeds)


def test_probe_seed_differs_from_pretraining_seed_and_is_shared_by_rows():
    cfg = load_sweep_config("default")
    sweep = {"probe": {"seed_offset": cfg.probe.seed_offset}}
    stages, _ = ablate_losses.build(cfg, None)
    by_seed: dict[int, set[int]] = {}
    for spec in stages[0].specs:
        p = probe_seed(TrialContext(spec=spec, sweep=sweep, attempt=1, dir=Path(".")))
        assert p != spec["seed"] and p == spec["seed"] + 1000
        by_seed.setdefault(spec["seed"], set()).add(p)
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
