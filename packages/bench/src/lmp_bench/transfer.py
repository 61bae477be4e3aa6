"""Transfer tasks of the paper's section 4.3 on a clip store (formats: docs/bench.md, the demo's README).

Inputs under `labels_dir` (the demo writes them; bring real data in the same formats):
- `shot_attributes.parquet`: clip_id, shot_index, split and one integer column per attribute (AVE-style);
- `descriptions.npz`: clip_id [n], offsets [n+1], tokens [T, Dl] (+ optional split [n]).
The clip split comes from `shot_attributes.parquet`, else from the store manifest's `split` column.

- AVE attributes: each shot's contextual feature (eval windows over its clip) -> one linear layer per
  attribute; average per-class accuracy on test (Table 6), and the average over attributes.
- Shot sequence ordering: 3 consecutive shots shown in the order `PERMUTATIONS[label]` (label drawn
  uniformly, `samples_per_clip` per clip, seeded), encoded as one 3-shot window; the 3 contextual shot
  features are concatenated; 6-way linear layer; accuracy (Table 7).
- Next shot selection: a 9-shot run, shots 0-3 the context, shots 4-8 the candidates (true: shot 4);
  each candidate is encoded after the context as a 5-shot window, [mean context ; candidate] is scored
  by one linear layer with a softmax over the 5 candidates; accuracy (Table 7).
- Zero-shot retrieval over the test clips: scene = clip-mean v_ctx, soundtrack = clip-mean a_ctx
  (scene->soundtrack and back), description = mean l_ctx of its tokens encoded alone -> scene; cosine
  similarity; R@1/5/10, median and mean rank (Tables 8, 9).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from lmp_bench import metrics
from lmp_bench.api import _probe_cfg, open_store, random_model, resolve_model
from lmp_bench.features import FEATURES, parse_features
from lmp_bench.probe import ProbeConfig, fit_probe, torch_threads
from lmp_bench.results import write_parquet_atomic

log = logging.getLogger(__name__)

PERMUTATIONS = list(itertools.permutations(range(3)))  # label i: shown order PERMUTATIONS[i]
TRANSFER_TASKS = ("ave", "ordering", "next_shot", "retrieval")
SHOT_FEATURES = tuple(f for f in FEATURES if f != "l_ctx")
DEFAULT_SHOT_FEATURES = "v_ctx+a_ctx"


class TransferFormatError(ValueError):
    """A transfer label file that does not follow docs/bench.md; names the file and field."""


@dataclass
class TransferResult:
    """One row per (task, metric, seed); zero-shot retrieval has seed -1."""

    rows: pl.DataFrame
    skipped: dict[str, str] = field(default_factory=dict)

    def summary(self) -> pl.DataFrame:
        return self.rows.group_by("task", "metric", maintain_order=True).agg(
            mean=pl.col("value").mean(), std=pl.col("value").std(ddof=1).fill_null(0.0), n=pl.len()
        )

    def metrics(self) -> dict[str, float]:
        out = {}
        for r in self.summary().iter_rows(named=True):
            out[f"transfer/{r['task']}/{r['metric']}"] = r["mean"]
            out[f"transfer/{r['task']}/{r['metric']}.std"] = r["std"]
        return out

    def format(self) -> str:
        lines = [
            "Transfer tasks (accuracy / per-class accuracy in %, R@K in %, ranks; mean ± std over seeds)"
        ]
        for r in self.summary().iter_rows(named=True):
            pct = not r["metric"].endswith("rank")
            m, s = (100 * r["mean"], 100 * r["std"]) if pct else (r["mean"], r["std"])
            lines.append(f"  {r['task']:<28} {r['metric']:<24} {m:8.2f} ± {s:.2f}")
        for t, why in self.skipped.items():
            lines.append(f"  {t}: skipped ({why})")
        return "\n".join(lines)

    def write_parquet(self, path: str | Path) -> Path:
        return write_parquet_atomic(self.rows, path)


# -- reading labels ------------------------------------------------------------------------------------
SPLITS = ("train", "val", "test")


def read_shot_attributes(path: Path) -> tuple[pl.DataFrame, list[str]]:
    """(table, attribute columns) of `shot_attributes.parquet`; integer columns other than shot_index."""
    try:
        df = pl.read_parquet(path)
    except Exception as e:  # noqa: BLE001
        raise TransferFormatError(f"{path}: not a readable Parquet file ({e})") from e
    missing = [c for c in ("clip_id", "shot_index", "split") if c not in df.columns]
    if missing:
        raise TransferFormatError(f"{path}: missing column(s) {missing}; has {df.columns}")
    attrs = [c for c, t in df.schema.items() if c not in ("shot_index",) and t.is_integer()]
    if not attrs:
        raise TransferFormatError(f"{path}: no integer attribute columns besides shot_index")
    bad = sorted(set(df["split"].unique()) - set(SPLITS))
    if bad:
        raise TransferFormatError(f"{path}: column 'split' has {bad}, expected {SPLITS}")
    for c in attrs:
        if df[c].null_count() or (df[c] < 0).any():
            raise TransferFormatError(f"{path}: attribute {c!r} must be non-negative class ids without nulls")
    return df, attrs


def clip_splits(store, attributes: pl.DataFrame | None) -> dict[str, list[str]]:
    """split -> clip ids, from the attribute table or the store manifest's `split` column."""
    if attributes is not None:
        t = attributes.select("clip_id", "split").unique()
    else:
        m = store.movies()
        if "split" not in m.columns:
            raise TransferFormatError(f"store {store.path}: no shot_attributes.parquet and no 'split' column")
        t = m.select(pl.col("movie_id").alias("clip_id"), "split")
    return {sp: sorted(t.filter(pl.col("split") == sp)["clip_id"].to_list()) for sp in SPLITS}


# -- batches of arbitrary shot sequences ---------------------------------------------------------------
def shots_batch(mem, seqs: Sequence[tuple[str, Sequence[int]]]) -> dict:
    """A window batch (lmp_data.batch) whose window i shows the shots `seqs[i][1]` of clip `seqs[i][0]`
    in that order, with the language tokens overlapping them and their token->shot membership."""
    from lmp_data.windows import overlaps

    k = max(len(s) for _, s in seqs)
    n = len(seqs)
    d = mem.dims
    video, audio = torch.zeros(n, k, d["video"]), torch.zeros(n, k, d["audio"])
    mask = torch.zeros(n, k, dtype=torch.bool)
    toks, members = [], []
    for i, (clip, shots) in enumerate(seqs):
        mv = mem.movie(clip)
        idx = np.asarray(shots, dtype=np.int64)
        if (idx < 0).any() or (idx >= len(mv["shots"])).any():
            raise TransferFormatError(
                f"clip {clip!r}: shot index out of range [0, {len(mv['shots'])}): {list(idx)}"
            )
        video[i, : len(idx)] = torch.from_numpy(np.asarray(mv["video"][idx], np.float32))
        audio[i, : len(idx)] = torch.from_numpy(np.asarray(mv["audio"][idx], np.float32))
        mask[i, : len(idx)] = True
        sp, spans = mv["shots"][idx], mv["text_spans"]
        member = overlaps(spans[:, None, 0], spans[:, None, 1], sp[None, :, 0], sp[None, :, 1])  # [T, len]
        keep = member.any(1)
        toks.append(np.asarray(mv["text"][keep], np.float32))
        m = np.zeros((int(keep.sum()), k), bool)
        m[:, : len(idx)] = member[keep]
        members.append(m)
    t = max(1, max(len(x) for x in toks))
    text = torch.zeros(n, t, d["text"])
    text_mask = torch.zeros(n, t, dtype=torch.bool)
    token_shot = torch.zeros(n, t, k, dtype=torch.bool)
    for i, (x, m) in enumerate(zip(toks, members)):
        text[i, : len(x)] = torch.from_numpy(x)
        text_mask[i, : len(x)] = True
        token_shot[i, : len(x)] = torch.from_numpy(m)
    return {
        "video": video, "audio": audio, "shot_mask": mask, "text": text, "text_mask": text_mask,
        "token_shot": token_shot, "start": torch.zeros(n, dtype=torch.int64), "movie": [c for c, _ in seqs],
    }  # fmt: skip


@torch.no_grad()
def encode_sequences(model, mem, seqs, names: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """[len(seqs), k, D] per-shot features (concatenated `names`) of arbitrary shot sequences."""
    out = []
    for lo in range(0, len(seqs), batch_size):
        enc = model.encode(shots_batch(mem, seqs[lo : lo + batch_size]))
        out.append(torch.cat([enc[n].float() for n in names], dim=-1).cpu().numpy())
    return np.concatenate(out, axis=0)


def shot_features(model, mem, clip_ids, names, k: int, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Per-shot features [n_shots, D] of each clip from eval windows of k shots (overlaps averaged)."""
    from lmp_data import ShotWindows

    ds = ShotWindows(mem, k, mode="eval", movies=list(clip_ids))
    wm, ws = ds.locate(np.arange(len(ds)))
    so = mem.shot_offsets
    acc, cnt = None, np.zeros(int(so[-1]))
    for lo in range(0, len(ds), batch_size):
        idx = np.arange(lo, min(lo + batch_size, len(ds)))
        enc = model.encode(ds.__getitems__(list(idx)))
        f = torch.cat([enc[n].float() for n in names], -1).cpu().numpy()
        valid = enc["shot_mask"].cpu().numpy()
        if acc is None:
            acc = np.zeros((int(so[-1]), f.shape[-1]))
        g = so[wm[idx]][:, None] + ws[idx][:, None] + np.arange(ds.k)[None, :]
        np.add.at(acc, g[valid], f[valid])
        np.add.at(cnt, g[valid], 1)
    acc /= np.maximum(cnt, 1)[:, None]
    return {c: acc[so[mem.index[c]] : so[mem.index[c] + 1]] for c in clip_ids}


# -- the tasks -----------------------------------------------------------------------------------------
def _probe_rows(task, x, y, kind, n_out, probe, seeds, metric="accuracy") -> list[dict]:
    score = metrics.per_class_accuracy if metric == "per_class_accuracy" else metrics.accuracy
    rows = []
    for seed in seeds:
        p = fit_probe(x["train"], y["train"], x["val"], y["val"], kind, n_out, probe, seed, select=score)
        rows.append(dict(task=task, metric=metric, seed=seed, value=score(p.predict(x["test"]), y["test"])))
    return rows


def _ave(model, mem, attrs_df, attrs, splits, names, k, probe, seeds, batch_size) -> list[dict]:
    clips = [c for sp in SPLITS for c in splits[sp]]
    feats = shot_features(model, mem, clips, names, k, batch_size)
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


def _ordering(model, mem, splits, names, probe, seeds, batch_size, per_clip, rng) -> list[dict]:
    x, y = {}, {}
    for sp in SPLITS:
        seqs, labels = [], []
        for c in splits[sp]:
            n = len(mem.movie(c)["shots"])
            for _ in range(per_clip if n >= 3 else 0):
                st, lab = int(rng.integers(0, n - 2)), int(rng.integers(0, 6))
                seqs.append((c, [st + p for p in PERMUTATIONS[lab]]))
                labels.append(lab)
        if not seqs:
            raise TransferFormatError(f"shot ordering: no clip of split {sp!r} has 3 shots")
        f = encode_sequences(model, mem, seqs, names, batch_size)
        x[sp], y[sp] = f.reshape(len(f), -1), np.array(labels)
    return _probe_rows("ordering", x, y, "classification", 6, probe, seeds)


def _next_shot(model, mem, splits, names, probe, seeds, batch_size, per_clip, rng) -> list[dict]:
    x, y = {}, {}
    for sp in SPLITS:
        seqs, labels = [], []
        for c in splits[sp]:
            n = len(mem.movie(c)["shots"])
            for _ in range(per_clip if n >= 9 else 0):
                st = int(rng.integers(0, n - 8))
                order = rng.permutation(5)  # candidate j is shot st + 4 + order[j]
                seqs += [(c, [st, st + 1, st + 2, st + 3, st + 4 + int(o)]) for o in order]
                labels.append(int(np.flatnonzero(order == 0)[0]))
        if not labels:
            raise TransferFormatError(f"next shot selection: no clip of split {sp!r} has 9 shots")
        f = encode_sequences(model, mem, seqs, names, batch_size).reshape(len(labels), 5, 5, -1)
        x[sp], y[sp] = np.concatenate([f[:, :, :4].mean(2), f[:, :, 4]], -1), np.array(labels)
    return _probe_rows("next_shot", x, y, "choice", 5, probe, seeds)


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def _retrieval_rows(task: str, sim: np.ndarray, gt=None) -> list[dict]:
    return [
        dict(task=task, metric=m, seed=-1, value=v) for m, v in metrics.retrieval_metrics(sim, gt).items()
    ]


def _retrieval(model, mem, root: Path, pool: list[str], k, batch_size) -> tuple[list[dict], dict[str, str]]:
    d = model.cfg.d
    feats = shot_features(model, mem, pool, ("v_ctx", "a_ctx"), k, batch_size)
    v = np.stack([feats[c][:, :d].mean(0) for c in pool])
    a = np.stack([feats[c][:, d:].mean(0) for c in pool])
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
    desc = []
    for i in keep:
        t = torch.from_numpy(tok[off[i] : off[i + 1]])[None]
        batch = {"video": torch.zeros(1, 1, mem.dims["video"]), "audio": torch.zeros(1, 1, mem.dims["audio"]),
                 "shot_mask": torch.ones(1, 1, dtype=torch.bool), "text": t,
                 "text_mask": torch.ones(1, t.shape[1], dtype=torch.bool),
                 "token_shot": torch.ones(1, t.shape[1], 1, dtype=torch.bool)}  # fmt: skip
        desc.append(model.encode(batch)["l_ctx"][0].mean(0).float().numpy())
    if not desc:
        skipped["retrieval/description->scene"] = "no description of a test clip"
        return rows, skipped
    sim = _unit(np.stack(desc)) @ _unit(v).T
    rows += _retrieval_rows("retrieval/description->scene", sim, [row[ids[i]] for i in keep])
    return rows, skipped


def evaluate_transfer(
    model,
    eval_store,
    labels_dir: str | Path,
    tasks: str | Sequence[str] | None = None,
    seeds: int | Sequence[int] = 3,
    probe: str | ProbeConfig | None = "linear",
    features: str = DEFAULT_SHOT_FEATURES,
    *,
    k: int | None = None,
    batch_size: int = 64,
    threads: int = 1,
    model_config=None,
    samples_per_clip: int = 4,
    sample_seed: int = 0,
) -> TransferResult:
    """Run the transfer tasks (all, or `tasks`); see the module docstring.

    model: an LMP / export folder / MLflow run, or None (a frozen random-init LMP). features: per-shot
    features for AVE, ordering and next shot (not l_ctx); retrieval uses v_ctx, a_ctx and l_ctx.
    samples_per_clip / sample_seed: how many ordering / next-shot samples are drawn per clip, and their seed.
    """
    names = parse_features(features)
    if "l_ctx" in names:
        raise ValueError("transfer features are per shot; l_ctx (per token) is not one (use l_shot)")
    if tasks is None:
        wanted = list(TRANSFER_TASKS)
    else:
        wanted = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    bad = [t for t in wanted if t not in TRANSFER_TASKS]
    if bad:
        raise ValueError(f"unknown transfer task(s) {bad}; expected {TRANSFER_TASKS}")
    root = Path(labels_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"transfer labels folder not found: {root}")
    store = open_store(eval_store)
    lmp, info = (random_model(store, model_config), {}) if model is None else resolve_model(model)
    kk = int(k or min(info.get("k") or 30, lmp.cfg.max_shots))
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    pcfg = _probe_cfg(probe)
    attr_path = root / "shot_attributes.parquet"
    attrs_df, attrs = read_shot_attributes(attr_path) if attr_path.exists() else (None, [])
    splits = clip_splits(store, attrs_df)
    wanted_clips = [c for sp in SPLITS for c in splits[sp]]
    absent = sorted(set(wanted_clips) - set(store.movies()["movie_id"].to_list()))
    if absent:
        raise TransferFormatError(
            f"{attr_path}: {len(absent)} clips not in the store {store.path}: {absent[:5]}"
        )
    mem = store.load_all(wanted_clips)
    rng = np.random.default_rng(sample_seed)
    rows: list[dict] = []
    skipped: dict[str, str] = {}
    was_training = lmp.training
    lmp.eval()
    try:
        with torch_threads(threads), torch.no_grad():
            if "ave" in wanted:
                if attrs_df is None:
                    skipped["ave"] = f"no {attr_path}"
                else:
                    rows += _ave(lmp, mem, attrs_df, attrs, splits, names, kk, pcfg, seed_list, batch_size)
            if "ordering" in wanted:
                rows += _ordering(lmp, mem, splits, names, pcfg, seed_list, batch_size, samples_per_clip, rng)
            if "next_shot" in wanted:
                rows += _next_shot(
                    lmp, mem, splits, names, pcfg, seed_list, batch_size, samples_per_clip, rng
                )
            if "retrieval" in wanted:
                r, sk = _retrieval(lmp, mem, root, splits["test"], kk, batch_size)
                rows += r
                skipped.update(sk)
    finally:
        lmp.train(was_training)
    for t, why in skipped.items():
        log.warning("transfer %s skipped: %s", t, why)
    schema = {"task": pl.String, "metric": pl.String, "seed": pl.Int64, "value": pl.Float64}
    return TransferResult(pl.DataFrame(rows, schema=schema), skipped)
