"""What do a model's clip features carry? Probes on ALL demo clips against the generator's truth.

The LVU probe sees 300/60/100 labelled clips per task, so 2-5 point effects drown in its noise (about
+-5 points on 100 test clips). The demo's `truth/clips.parquet` has every label of every clip (639) and
`truth/clip_latents.npz` the clip-averaged true content latent. This script fits, on the chosen
time-averaged features of every clip, with 5 folds grouped by source movie (no movie in two folds):
  - an L2 logistic regression per label (standardised features, C = 1 / (n_features)), accuracy;
  - ridge regression to the 32-d content latent, R^2 (the share of content the features keep linearly).
Mean over folds +- standard error. Models: 'base' (base features), 'random' (frozen random init of
`--model-file`), or export / snapshot folders.

    .venv/bin/python experiments/diagnostics/truth_probe.py base random runs/pretrain/NAME/export
    .venv/bin/python experiments/diagnostics/truth_probe.py runs/pretrain/NAME/snapshots/step_80 --features v_ctx+a_ctx
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GroupKFold
from sklearn.preprocessing import StandardScaler

from lmp_bench.api import features_matrix, random_model
from lmp_model.config import load_model_config

REPO = Path(__file__).resolve().parents[2]
LABELS = ("relationship", "way_speaking", "scene", "director", "writer", "year", "genre")


def scores(
    x: np.ndarray, truth: pl.DataFrame, latent: np.ndarray, whiten: bool = False
) -> dict[str, tuple[float, float]]:
    """{label: (mean, se)} of grouped 5-fold accuracy per label, plus 'latent_r2'."""
    groups = (
        truth["source_movie"].to_numpy() if "source_movie" in truth.columns else truth["imdb_id"].to_numpy()
    )
    folds = list(GroupKFold(n_splits=5).split(x, groups=groups))
    out: dict[str, list[float]] = {}
    for tr, te in folds:
        sc = PCA(whiten=True, n_components=0.999).fit(x[tr]) if whiten else StandardScaler().fit(x[tr])
        xtr, xte = sc.transform(x[tr]), sc.transform(x[te])
        for name in LABELS:
            y = truth[name].to_numpy()
            clf = LogisticRegression(C=1.0 / x.shape[1], max_iter=2000).fit(xtr, y[tr])
            out.setdefault(name, []).append(float((clf.predict(xte) == y[te]).mean() * 100))
        ridge = Ridge(alpha=float(x.shape[1])).fit(xtr, latent[tr])
        res = ((ridge.predict(xte) - latent[te]) ** 2).sum()
        tot = ((latent[te] - latent[tr].mean(0)) ** 2).sum()
        out.setdefault("latent_r2", []).append(float(1 - res / tot))
    return {k: (float(np.mean(v)), float(np.std(v, ddof=1) / np.sqrt(len(v)))) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="'base', 'random', or export / snapshot folders")
    ap.add_argument("--demo", default=str(REPO / ".lmp/demo/default-seed0"), help="demo folder")
    ap.add_argument("--model-file", default=str(REPO / "experiments/configs/model/demo.yaml"))
    ap.add_argument("--set", nargs="*", default=[], help="ModelConfig overrides (random only)")
    ap.add_argument("--features", default="v_ctx+a_ctx", help="'+'-joined model features")
    ap.add_argument(
        "--whiten",
        action="store_true",
        help="PCA-whiten instead of standardising (is the content there but low-variance?)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    store = f"{args.demo}/eval.zarr"
    truth = pl.read_parquet(f"{args.demo}/truth/clips.parquet")
    lat = np.load(f"{args.demo}/truth/clip_latents.npz")
    latent_of = dict(zip(lat["clip_id"].tolist(), lat["latent"]))
    print(f"{'model':44s} " + " ".join(f"{n[:6]:>11s}" for n in (*LABELS, "latent_r2")), flush=True)
    for spec in args.models:
        t0 = time.perf_counter()
        if spec == "base":
            ids, x = features_matrix(None, store, "v_base+a_base")
        else:
            model = spec
            if spec == "random":
                model = random_model(store, load_model_config(args.model_file, args.set), seed=0)
            ids, x = features_matrix(model, store, args.features)
        t = truth.filter(pl.col("clip_id").is_in(ids))
        order = {c: i for i, c in enumerate(ids)}
        t = t.with_columns(pl.col("clip_id").replace_strict(order).alias("_row")).sort("_row")
        x = x[t["_row"].to_numpy()]
        s = scores(x, t, np.stack([latent_of[c] for c in t["clip_id"]]), args.whiten)
        cells = " ".join(
            f"{m:6.1f}±{e:4.1f}" if k != "latent_r2" else f"{m:6.3f}±{e:.3f}" for k, (m, e) in s.items()
        )
        label = spec if len(spec) <= 44 else "..." + spec[-41:]
        print(f"{label:44s} {cells}   ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
