"""Where does a model lose what base features carry? LVU probes on its features at three stages.

For a pretrained export, or the frozen random initialisation of a model config, the LVU protocol
(`lmp_bench.api.evaluate_lvu`, linear probe, N seeds) on the chosen features of
  - `full`: the model as it is (the features every table reads);
  - `embed`: the contextual transformers' layers removed, so v_ctx / a_ctx are the projected, LayerNorm'd
    input tokens (what the projection alone keeps);
and the base features v_base+a_base for reference. Measured in docs/results.md ("Session 4").

    .venv/bin/python experiments/diagnostics/probe_stages.py random --set projection.init=default
    .venv/bin/python experiments/diagnostics/probe_stages.py runs/pretrain/demo/export --features v_ctx+a_ctx
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from lmp_bench.api import evaluate_lvu, random_model, resolve_model
from lmp_model.config import load_model_config

REPO = Path(__file__).resolve().parents[2]


def line(result, label: str) -> str:
    """One row: group averages and every task's mean over seeds."""
    method = result.methods[-1]
    g = result.group_means(method)
    pt = result.per_task().filter(result.per_task()["method"] == method)
    tasks = " ".join(f"{t[:5]}={v:.1f}" for t, v in zip(pt["task"], pt["mean"]))
    return f"{label:40s} C={g['content']:.1f} M={g['metadata']:.1f} U={g['user']:.3f} | {tasks}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="an export folder / MLflow run, or 'random' (frozen random init)")
    ap.add_argument("--demo", default=str(REPO / ".lmp/demo/default-seed0"), help="demo folder")
    ap.add_argument("--model-file", default=str(REPO / "experiments/configs/model/demo.yaml"))
    ap.add_argument("--set", nargs="*", default=[], help="ModelConfig overrides (random only)")
    ap.add_argument("--features", default="v_ctx+a_ctx,v_ctx+a_ctx+v_cross_a", help="comma-separated sets")
    ap.add_argument("--stages", default="full,embed")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    store, labels = f"{args.demo}/eval.zarr", f"{args.demo}/lvu"

    def build():
        if args.model == "random":
            return random_model(store, load_model_config(args.model_file, args.set), seed=0)
        return resolve_model(args.model)[0]

    t0 = time.perf_counter()
    base = evaluate_lvu(None, store, labels, "v_base+a_base", seeds=args.seeds, no_pretrain="base")
    print(line(base, "base v_base+a_base"), flush=True)
    for stage in args.stages.split(","):
        model = build()
        if stage == "embed":
            for enc in model.context.values():
                enc.encoder.layers = nn.ModuleList()
        for features in args.features.split(","):
            res = evaluate_lvu(model, store, labels, features, seeds=args.seeds)
            print(line(res, f"{stage} {features}"), flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
