"""The transfer tasks themselves (`lmp_bench.transfer`): probed AVE attributes, shot ordering and next
shot selection, and zero-shot retrieval, each from the per-shot features of `lmp_bench.transfer_shots`.

Each returns its result rows (task, metric, seed, value); `evaluate_transfer` runs them and joins the rows.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import polars as pl
import torch

from lmp_bench import metrics
from lmp_bench.lvu_probe import task_summary
from lmp_bench.probe import fit_probe
from lmp_bench.progress import current
from lmp_bench.transfer_shots import SPLITS, TransferFormatError, encode_sequences

PERMUTATIONS = list(itertools.permutations(range(3)))  # label i: shown order PERMUTATIONS[i]


# -- the tasks -----------------------------------------------------------------------------------------
def _probe_rows(task, x, y, kind, n_out, probe, seeds, metric="accuracy") -> list[dict]:
    score = metrics.per_class_accuracy if metric == "per_class_accuracy" else metrics.accuracy
    rows, progress = [], current()
    progress.start_task(task)
    for seed in seeds:
        p = fit_probe(x["train"], y["train"], x["val"], y["val"], kind, n_out, probe, seed, select=score)
        rows.append(dict(task=task, metric=metric, seed=seed, value=score(p.predict(x["test"]), y["test"])))
        progress.probes_done()
    progress.task_done(task, task_summary(rows))
    return rows


def _ave(feats, attrs_df, attrs, probe, seeds) -> list[dict]:
    x, df = {}, {}
    for sp in SPLITS:
        df[sp] = attrs_df.filter(pl.col("split") == sp)
        x[sp] = np.stack([feats[c][i] for c, i in zip(df[sp]["clip_id"], df[sp]["shot_index"])])
    rows = []
    for a in attrs:
        n_out = int(attrs_df[a].max()) + 1
        y = {sp: df[sp][a].to_numpy() for sp in SPLITS}
        rows += _probe_rows(f"ave/{a}", x, y, "classification", n_out, probe, seeds, "per_class_accuracy")
    per_seed = pl.DataFrame(rows).group_by("seed", maintain_order=True).agg(pl.col("value").mean())
    rows += [
        dict(task="ave/average", metric="per_class_accuracy", seed=s_, value=v)
        for s_, v in per_seed.iter_rows()
    ]
    return rows


def _sampled(model, mem, splits, names, batch_size, per_clip, min_shots, what, draw) -> tuple[dict, dict]:
    """Per split, `per_clip` draws `draw(clip, n_shots) -> (shot sequences, label)` from every clip of at
    least `min_shots` shots: (the sequences' encoded features [n, k, D], the labels) by split."""
    f, y = {}, {}
    for sp in SPLITS:
        seqs, labels = [], []
        for c in splits[sp]:
            n = len(mem.movie(c)["shots"])
            for _ in range(per_clip if n >= min_shots else 0):
                s, lab = draw(c, n)
                seqs += s
                labels.append(lab)
        if not labels:
            raise TransferFormatError(f"{what}: no clip of split {sp!r} has {min_shots} shots")
        f[sp], y[sp] = encode_sequences(model, mem, seqs, names, batch_size), np.array(labels)
    return f, y


def _ordering(model, mem, splits, names, probe, seeds, batch_size, per_clip, rng) -> list[dict]:
    def draw(c, n):
        st, lab = int(rng.integers(0, n - 2)), int(rng.integers(0, 6))
        return [(c, [st + p for p in PERMUTATIONS[lab]])], lab

    f, y = _sampled(model, mem, splits, names, batch_size, per_clip, 3, "shot ordering", draw)
    x = {sp: f[sp].reshape(len(f[sp]), -1) for sp in SPLITS}
    return _probe_rows("ordering", x, y, "classification", 6, probe, seeds)


def _next_shot(model, mem, splits, names, probe, seeds, batch_size, per_clip, rng) -> list[dict]:
    def draw(c, n):
        st = int(rng.integers(0, n - 8))
        order = rng.permutation(5)  # candidate j is shot st + 4 + order[j]
        seqs = [(c, [st, st + 1, st + 2, st + 3, st + 4 + int(o)]) for o in order]
        return seqs, int(np.flatnonzero(order == 0)[0])

    f, y = _sampled(model, mem, splits, names, batch_size, per_clip, 9, "next shot selection", draw)
    x = {}
    for sp in SPLITS:
        g = f[sp].reshape(len(y[sp]), 5, 5, -1)
        x[sp] = np.concatenate([g[:, :, :4].mean(2), g[:, :, 4]], -1)
    return _probe_rows("next_shot", x, y, "choice", 5, probe, seeds)


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def _retrieval_rows(task: str, sim: np.ndarray, gt=None) -> list[dict]:
    return [
        dict(task=task, metric=m, seed=-1, value=v) for m, v in metrics.retrieval_metrics(sim, gt).items()
    ]


def _describe(model, mem, desc: list[np.ndarray], batch_size: int) -> np.ndarray:
    """Mean l_ctx of each description's tokens, encoded alone (batched, padded, one empty shot each)."""
    from lmp_data import collate_windows

    dv, da = mem.dims["video"], mem.dims.get("audio", 0)
    out = []
    for lo in range(0, len(desc), batch_size):
        batch = collate_windows(
            [
                {
                    "video": torch.zeros(1, dv),
                    "audio": torch.zeros(1, da),
                    "shot_mask": torch.ones(1, dtype=torch.bool),
                    "text": torch.from_numpy(x),
                    "token_shot": torch.ones(len(x), 1, dtype=torch.bool),
                    "start": 0,
                    "movie": "",
                }
                for x in desc[lo : lo + batch_size]
            ]
        )
        l_ctx = model.encode(batch)["l_ctx"].float()
        w = batch["text_mask"].unsqueeze(-1).float()
        out.append(((l_ctx * w).sum(1) / w.sum(1).clamp_min(1.0)).numpy())
    return np.concatenate(out, axis=0)


def _retrieval(model, mem, root: Path, pool: list[str], scene, sound) -> tuple[list[dict], dict[str, str]]:
    """`scene` / `sound`: {clip: [n_shots, D]} per-shot scene (v_ctx) and soundtrack (a_ctx) features of
    the test clips `pool`; clip-means are compared."""
    v = np.stack([scene[c].mean(0) for c in pool])
    a = np.stack([sound[c].mean(0) for c in pool])
    sim = _unit(v) @ _unit(a).T
    rows = _retrieval_rows("retrieval/scene->soundtrack", sim) + _retrieval_rows(
        "retrieval/soundtrack->scene", sim.T
    )
    skipped = {}
    desc_npz = root / "descriptions.npz"
    if not desc_npz.exists():
        skipped["retrieval/description->scene"] = f"no {desc_npz}"
        return rows, skipped
    with np.load(desc_npz, allow_pickle=False) as z:
        ids, off, tok = (
            z["clip_id"].astype(str),
            z["offsets"].astype(np.int64),
            z["tokens"].astype(np.float32),
        )
    if len(off) != len(ids) + 1 or off[-1] != len(tok) or tok.ndim != 2 or tok.shape[1] != mem.dims["text"]:
        raise TransferFormatError(
            f"{desc_npz}: expected offsets [len(clip_id)+1] ending at len(tokens) and tokens [T, {mem.dims['text']}]"
        )
    row = {c: i for i, c in enumerate(pool)}
    keep = [i for i, c in enumerate(ids) if c in row and off[i + 1] > off[i]]
    if not keep:
        skipped["retrieval/description->scene"] = "no description of a test clip"
        return rows, skipped
    desc = _describe(model, mem, [tok[off[i] : off[i + 1]] for i in keep], 64)
    sim = _unit(desc) @ _unit(v).T
    rows += _retrieval_rows("retrieval/description->scene", sim, [row[ids[i]] for i in keep])
    return rows, skipped
