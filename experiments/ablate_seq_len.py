"""Table 2 of the paper: the pretraining sequence length k (shots per window), k = 10, 30, 60.

One trial = pretraining with `data.k = k` (all three losses) + the LVU probe, over several seeds.

    .venv/bin/python experiments/ablate_seq_len.py [--scale smoke|default|paper] [--resume]
"""

from __future__ import annotations

import sys
from functools import partial

from _sweep import work
from _sweep.cli import main, select
from _sweep.runner import Stage
from _sweep.spec import TrialSpec

# the paper's numbers for these rows, and its ordering: _sweep/paper.py (TABLES["seq_len"])


def seq_len(k: int, cfg):
    """Row recipe: windows of `k` shots; the shot and token position embeddings must cover the window
    (the default demo has at most 106 / 223 / 390 tokens in a window of k = 10 / 30 / 60 shots)."""
    cfg.data.k = k
    cfg.model.max_shots = max(64, k)
    cfg.model.max_tokens = max(256, 8 * k)
    return cfg


def build(cfg, only):
    specs, columns = [], {}
    for order, k in enumerate(cfg.seq_lens):
        label = f"k = {k}"
        columns[label] = {"k": str(k)}
        for seed in cfg.seeds:
            specs.append(
                TrialSpec(
                    key=f"k{k}-s{seed}",
                    slug=f"k{k}",
                    variant=label,
                    seed=seed,
                    order=order,
                    work=work.pretrain_and_probe,
                    pretrain=partial(seq_len, k),
                )
            )
    return [Stage("trials", select(specs, only))], columns


if __name__ == "__main__":
    sys.exit(
        main("seq_len", "Table 2: sequence length k", __doc__.splitlines()[0], build, label_columns=["k"])
    )
