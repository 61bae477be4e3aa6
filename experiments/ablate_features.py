"""Table 3 of the paper: which features of one pretrained model the linear probe gets.

Stage 1 pretrains one model (all three losses, the first seed); stage 2 probes it with each feature
combination (concatenated time-averaged features) over several probe seeds. Probes only: the feature
trials never train the model.

    .venv/bin/python experiments/ablate_features.py [--scale smoke|default|paper] [--resume]
"""

from __future__ import annotations

import dataclasses
import sys

from _sweep import work
from _sweep.cli import main, select
from _sweep.runner import Stage
from _sweep.spec import TrialSpec

# the paper's numbers for these rows, and its ordering: _sweep/paper.py (TABLES["features"])


def build(cfg, only):
    seed0 = cfg.seeds[0]
    pretrain = [
        TrialSpec(
            key=f"pretrain-s{seed0}", slug="pretrain", variant="pretrain", seed=seed0, work=work.pretrain_only
        )
    ]
    columns, probe_specs = {}, []
    for order, feats in enumerate(cfg.feature_sets):
        label = " + ".join(feats)
        slug = "+".join(feats)
        columns[label] = {"Features": label}
        for seed in cfg.seeds:
            probe_specs.append(
                TrialSpec(
                    key=f"{slug}-s{seed}",
                    slug=slug,
                    variant=label,
                    seed=seed,
                    order=order,
                    work=work.probe_only,
                    features=list(feats),
                )
            )
    probe_specs = select(probe_specs, only)

    def probes(rows):
        done = [r for r in rows["pretrain"] if r["status"] == "ok"]
        if not done:
            raise SystemExit(
                f"ablate_features: the pretraining trial failed ({rows['pretrain'][0]['error']})"
            )
        export = done[0]["outputs"]["export_dir"]
        return [dataclasses.replace(s, from_export=export) for s in probe_specs]

    return [Stage("pretrain", pretrain, in_table=False), Stage("probes", probes)], columns


if __name__ == "__main__":
    sys.exit(main("features", "Table 3: features", __doc__.splitlines()[0], build))
