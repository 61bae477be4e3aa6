"""Table 1 of the paper: which pretraining losses matter.

Rows: three without pretraining (base features; the architecture frozen at its random init; the
architecture trained from scratch on each task, the paper's row), then without L_intra, without
L_inter, without L_cross, all three; each over several seeds. One trial = pretraining through
`lmp_model.pretrain.run` (DeepSpeed engine) with the row's loss weights + the LVU linear probe on the
exported model, tracked as one MLflow child run; a no-pretraining trial is the probe (or the scratch
training) alone. Trial seed s pretrains (or initialises) with seed s and probes with seed
s + probe.seed_offset (1000), the same probe seeds in every row. Every pretrained row keeps lmp's window
term (`model.loss.window`, not in the paper; column L_window). The paper's Eq. 7 exactly:
`ablate_losses.py 'pretrain_overrides=[train.epochs=1,train.ckpt_every=0,model.loss.window=0]'`.

    .venv/bin/python experiments/ablate_losses.py                 # default scale, demo data, ~25 min (target 15)
    .venv/bin/python experiments/ablate_losses.py --scale smoke   # < 2 min
    .venv/bin/python experiments/ablate_losses.py --scale paper --store S --eval-store E --labels L
    .venv/bin/python experiments/ablate_losses.py --resume        # continue the newest interrupted sweep
"""

from __future__ import annotations

import sys
from functools import partial

from _sweep import work
from _sweep.cli import main, select
from _sweep.runner import Stage
from _sweep.spec import TrialSpec

# the paper's numbers for these rows, and its ordering: _sweep/paper.py (TABLES["losses"])

TABLE = "losses"
TITLE = "Table 1: pretraining losses"
LABEL_COLUMNS = ["Pretrain", "L_intra", "L_inter", "L_cross", "L_window"]
YES, NO = "✓", "✗"
# slug, row label, loss weights switched off (or the no-pretraining baseline, lmp_bench.api.NO_PRETRAIN)
NO_PRETRAIN_ROWS = {"none-base": "base", "none-random": "random_init", "none-scratch": "scratch"}
ROWS = [
    ("none-base", "No pretraining: base features", None),
    ("none-random", "No pretraining: frozen random init", None),
    ("none-scratch", "No pretraining: scratch (supervised)", None),
    ("no-intra", "w/o L_intra", "intra"),
    ("no-inter", "w/o L_inter", "inter"),
    ("no-cross", "w/o L_cross", "cross"),
    ("full", "All three", ""),
]


def without(term: str, cfg):
    """Row recipe: the sweep's pretraining config with the paper's loss term `term` switched off."""
    setattr(cfg.model.loss, term, 0.0)
    return cfg


def build(cfg, only):
    specs, columns = [], {}
    for order, (slug, label, off) in enumerate(ROWS):
        cols = {"Pretrain": NO if off is None else YES}
        for term in ("intra", "inter", "cross"):
            cols[f"L_{term}"] = NO if off is None or off == term else YES
        cols["L_window"] = (
            NO if off is None else YES
        )  # lmp's default term (model.loss.window), every pretrained row
        columns[label] = cols
        for seed in cfg.seeds:
            row = dict(key=f"{slug}-s{seed}", slug=slug, variant=label, seed=seed, order=order)
            if off is None:
                specs.append(TrialSpec(**row, work=work.probe_only, no_pretrain=NO_PRETRAIN_ROWS[slug]))
            else:
                recipe = partial(without, off) if off else None
                specs.append(TrialSpec(**row, work=work.pretrain_and_probe, pretrain=recipe))
    return [Stage("trials", select(specs, only))], columns


def cli(argv: list[str] | None = None, build_stages=build) -> int:
    """The command line (`build_stages`: this table's rows; a test may wrap their work functions)."""
    return main(TABLE, TITLE, __doc__.splitlines()[0], build_stages, argv, label_columns=LABEL_COLUMNS)


if __name__ == "__main__":
    sys.exit(cli())
