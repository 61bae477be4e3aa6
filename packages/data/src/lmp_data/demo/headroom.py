"""How much room the demo benchmark leaves for pretraining: reference probes on the LVU tasks.

For every task, on the same labelled clips and splits as the LVU files, the test score of
- `chance`: the most frequent train class (classification) / the train mean (regression, MSE);
- `base_linear`: the LVU protocol without pretraining -- clip-time-averaged base features (video, audio,
  language concatenated), standardised, one linear layer (sklearn LogisticRegression / Ridge, the
  regularisation chosen on val);
- `cross_modal`: the same probe on the clip-average of the outer product of PCA-reduced video and audio
  features of each shot (PCA fitted on the pretraining store, no labels): a hand-made, label-free
  cross-modal statistic;
- `cross_shot`: the same on the clip-average of the outer product of PCA-reduced video features of
  consecutive shots: a hand-made, label-free cross-shot statistic;
- `oracle`: the context-aware oracle -- the same probe on features made from the TRUE generative state:
  the clip's setup transition histogram (Z x Z, consecutive shots within a scene), its video-audio setup
  pairing histogram (Z x Z) and the clip-averaged true content latent. An upper reference, not a bound any
  probe on base features must reach.
Classification scores are top-1 accuracy (higher is better), regression MSE of LVU's normalised targets.
scikit-learn is imported lazily (it comes with lmp-bench); this module is analysis, not data plumbing.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from .generate import Demo, Movie, World, make_world
from .labels import CLASSIFICATION_TASKS, TASKS, select_clips

PROBES = ("chance", "base_linear", "cross_modal", "cross_shot", "oracle")
LIKE_MEAN, VIEW_MEAN = 9.138220535629456, 11.76425435683139  # LVU's normalisation constants


def target(task: str, row: dict[str, Any]) -> float:
    """The label of `row` as LVU's code uses it (class id, or the normalised engagement score)."""
    if task == "like_ratio":
        return 10 * row["like_count"] / (row["like_count"] + row["dislike_count"]) - LIKE_MEAN
    if task == "view_count":
        return float(np.log(row["view_count"]) - VIEW_MEAN)
    return row[task]


def clip_features(demo: Demo, n_pca: int = 16, probes: tuple[str, ...] = PROBES) -> dict[str, dict]:
    """Per probe, per clip id, the feature vector that probe uses."""
    out: dict[str, dict[str, np.ndarray]] = {p: {} for p in probes if p != "chance"}
    pv = pa = None
    if {"cross_modal", "cross_shot"} & set(probes):
        from sklearn.decomposition import PCA

        pv = PCA(n_pca, random_state=0).fit(np.concatenate([m.video for m in demo.pretrain]))
        pa = PCA(n_pca, random_state=0).fit(np.concatenate([m.audio for m in demo.pretrain]))
    world = demo.world if demo.world is not None else make_world(demo.config)
    for c in demo.clips:
        if "base_linear" in out:
            out["base_linear"][c.movie_id] = _base_mean(c)
        if "oracle" in out:
            out["oracle"][c.movie_id] = oracle_features(c, world)
        if pv is not None and pa is not None:
            zv, za = pv.transform(c.video), pa.transform(c.audio)
            if "cross_modal" in out:
                out["cross_modal"][c.movie_id] = np.einsum("si,sj->ij", zv, za).ravel() / len(zv)
            if "cross_shot" in out:
                n = max(len(zv) - 1, 1)
                out["cross_shot"][c.movie_id] = np.einsum("si,sj->ij", zv[:-1], zv[1:]).ravel() / n
    return out


def oracle_features(c: Movie, world: World) -> np.ndarray:
    """The context-aware oracle's features of clip `c`, from its TRUE setups and content latent:
    the within-scene transition histogram H (Z x Z) and the video-audio pairing histogram P (Z x Z),
    linearly projected onto the world's carriers -- <H, G_d> for every director's grammar G_d (the mean of
    its permutation matrices), trace(H) (the genre's rhythm), <P, Sigma_c> for every way of speaking's
    permutation matrix -- and the clip-averaged true content latent. (The raw 2 Z^2 histogram bins would
    drown the latent in a linear probe trained on a few hundred clips.)"""
    Z = world.cfg.n_setups
    z, za, sc = c.setup, c.audio_setup, c.scene_of_shot
    same = sc[1:] == sc[:-1]  # transitions within a scene (a new scene starts from the uniform)
    H = np.bincount(z[:-1][same] * Z + z[1:][same], minlength=Z * Z).reshape(Z, Z) / max(int(same.sum()), 1)
    P = np.bincount(z * Z + za, minlength=Z * Z).reshape(Z, Z) / len(z)
    rows = np.arange(Z)
    grammar = H[rows, world.director_perm].sum(-1).mean(-1)  # [people]: <H, mean_r Perm_{d,r}>
    pairing = P[rows, world.way_perm].sum(-1)  # [ways]: <P, Sigma_c>
    return np.concatenate([grammar, [np.trace(H)], pairing, c.truth_latent.mean(0)]).astype(np.float32)


def _base_mean(c: Movie) -> np.ndarray:
    text = c.text.mean(0) if len(c.text) else np.zeros(c.text.shape[1], np.float32)
    return np.concatenate([c.video.mean(0), c.audio.mean(0), text])


def measure(demo: Demo, tasks: tuple[str, ...] = TASKS, probes: tuple[str, ...] = PROBES) -> dict[str, dict]:
    """`{task: {probe: test score}}` on the LVU selection of `demo` (see the module docstring)."""
    feats = clip_features(demo, probes=probes) if set(probes) - {"chance"} else {}
    sel = select_clips(demo)
    res: dict[str, dict[str, float]] = {}
    for task in tasks:
        ys = {s: np.array([target(task, r) for r in rows]) for s, rows in sel[task].items()}
        ids = {s: [r["clip_id"] for r in rows] for s, rows in sel[task].items()}
        cls = task in CLASSIFICATION_TASKS
        res[task] = {}
        for probe in probes:
            if probe == "chance":
                if cls:
                    vals, counts = np.unique(ys["train"], return_counts=True)
                    res[task][probe] = float(np.mean(ys["test"] == vals[np.argmax(counts)]))
                else:
                    res[task][probe] = float(np.mean((ys["test"] - ys["train"].mean()) ** 2))
                continue
            X = {s: np.stack([feats[probe][i] for i in ids[s]]) for s in ids}
            res[task][probe] = _probe(X, ys, cls)
    return res


def _probe(X: dict[str, np.ndarray], y: dict[str, np.ndarray], cls: bool) -> float:
    """Fit on train for each regularisation strength, keep the best on val, score on test."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best = None
    for reg in (1e-3, 1e-2, 1e-1, 1.0, 10.0):
        est = LogisticRegression(C=reg, max_iter=2000) if cls else Ridge(alpha=1.0 / reg)
        model = make_pipeline(StandardScaler(), est).fit(X["train"], y["train"])
        val = _score(model, X["val"], y["val"], cls)
        if best is None or (val > best[0] if cls else val < best[0]):
            best = (val, model)
    assert best is not None
    return _score(best[1], X["test"], y["test"], cls)


def _score(model: Any, X: np.ndarray, y: np.ndarray, cls: bool) -> float:
    pred = model.predict(X)
    return float(np.mean(pred == y)) if cls else float(np.mean((pred - y) ** 2))


def format_table(res: dict[str, dict[str, float]]) -> str:
    probes = list(next(iter(res.values())))
    lines = [
        "| task | metric | " + " | ".join(probes) + " |",
        "|---|---|" + "---|" * len(probes),
    ]
    for task, r in res.items():
        metric = "top-1 acc" if task in CLASSIFICATION_TASKS else "MSE"
        lines.append(f"| {task} | {metric} | " + " | ".join(f"{r[p]:.3f}" for p in probes) + " |")
    cls = [t for t in res if t in CLASSIFICATION_TASKS]
    if len(cls) > 1:
        means = " | ".join(f"{np.mean([res[t][p] for t in cls]):.3f}" for p in probes)
        lines.append(f"| mean of {len(cls)} classification tasks | top-1 acc | {means} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m lmp_data.demo.headroom --size default --seed 0`: print the headroom table."""
    from .config import DemoConfig
    from .generate import generate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", nargs="*", default=list(TASKS))
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="DemoConfig overrides")
    a = ap.parse_args(argv)
    from .command import parse_overrides

    cfg = DemoConfig.preset(a.size, seed=a.seed, **parse_overrides(a.set))
    res = measure(generate(cfg), tuple(a.tasks))
    print(f"size={a.size} seed={a.seed} overrides={a.set}")
    print(format_table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
