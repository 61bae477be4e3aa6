"""Transfer tasks of the paper's section 4.3 on a clip store (label formats: docs/bench.md).

- AVE-style per-shot attributes (`ave/{split}.csv`: clip_id, shot, one integer column per attribute):
  each shot's contextual feature (from eval windows over its scene) -> one linear layer per attribute;
  average per-class accuracy on test (Table 6).
- Shot sequence ordering (`ordering/{split}.csv`: clip_id, start, label): shots start..start+2 shown in
  the order `PERMUTATIONS[label]`; the shown sequence is encoded as one 3-shot window, the three
  contextual shot features are concatenated, a 6-way linear layer predicts `label` (Table 7).
- Next shot selection (`next_shot/{split}.csv`: clip_id, context_start, cand0..cand4, label): each
  candidate is encoded after the 4 context shots as a 5-shot window; [mean context feature ; candidate
  feature] is scored by one linear layer, softmax over the 5 candidates; accuracy (Table 7).
- Zero-shot retrieval (`retrieval/scenes.csv`: clip_id, first_shot, last_shot; `retrieval/descriptions.npz`:
  clip_id [n], offsets [n+1], tokens [T, Dl]): scene = mean v_ctx over its shots, soundtrack = mean a_ctx,
  description = mean l_ctx of its tokens encoded alone; cosine similarity; R@1/5/10, median and mean
  rank for scene->soundtrack, soundtrack->scene and description->scene (Tables 8, 9).
A task whose files are absent is skipped (and reported), so a store can carry any subset.
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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}")
        self.rows.write_parquet(tmp)
        tmp.replace(path)
        return path


# -- reading labels ------------------------------------------------------------------------------------
def _read(path: Path, required: Sequence[str]) -> pl.DataFrame:
    try:
        df = pl.read_csv(path, infer_schema=False)
    except Exception as e:  # noqa: BLE001
        raise TransferFormatError(f"{path}: not a readable CSV ({e})") from e
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise TransferFormatError(f"{path}: missing column(s) {missing}; has {df.columns}")
    for c in df.columns:
        if c == "clip_id":
            continue
        cast = df[c].cast(pl.Int64, strict=False)
        if cast.is_null().any():
            i = int(cast.is_null().arg_max())
            raise TransferFormatError(f"{path}:{i + 2}: column {c!r} value {df[c][i]!r} is not an integer")
        df = df.with_columns(cast.alias(c))
    return df


def _splits(root: Path, task: str, required: Sequence[str]) -> dict[str, pl.DataFrame] | None:
    files = {s: root / task / f"{s}.csv" for s in ("train", "val", "test")}
    if not any(f.exists() for f in files.values()):
        return None
    absent = [str(f) for f in files.values() if not f.exists()]
    if absent:
        raise TransferFormatError(f"transfer task {task}: missing {absent}")
    return {s: _read(f, required) for s, f in files.items()}


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
def _ave(model, mem, splits, names, k, probe, seeds, batch_size) -> list[dict]:
    clips = sorted(set().union(*(set(df["clip_id"]) for df in splits.values())))
    feats = shot_features(model, mem, clips, names, k, batch_size)
    attrs = [c for c in splits["train"].columns if c not in ("clip_id", "shot")]
    if not attrs:
        raise TransferFormatError("ave/train.csv: no attribute columns besides clip_id, shot")
    x = {s: np.stack([feats[c][i] for c, i in zip(df["clip_id"], df["shot"])]) for s, df in splits.items()}
    rows = []
    for a in attrs:
        y = {s: df[a].to_numpy() for s, df in splits.items()}
        n_out = int(max(v.max() for v in y.values())) + 1
        for seed in seeds:
            p = fit_probe(x["train"], y["train"], x["val"], y["val"], "classification", n_out, probe, seed,
                          select=metrics.per_class_accuracy)  # fmt: skip
            value = metrics.per_class_accuracy(p.predict(x["test"]), y["test"])
            rows.append(dict(task=f"ave/{a}", metric="per_class_accuracy", seed=seed, value=value))
    per_seed = pl.DataFrame(rows).group_by("seed", maintain_order=True).agg(pl.col("value").mean())
    rows += [
        dict(task="ave/average", metric="per_class_accuracy", seed=s, value=v)
        for s, v in per_seed.iter_rows()
    ]
    return rows


def _ordering(model, mem, splits, names, probe, seeds, batch_size) -> list[dict]:
    x, y = {}, {}
    for s, df in splits.items():
        if ((df["label"] < 0) | (df["label"] >= 6)).any():
            raise TransferFormatError(f"ordering/{s}.csv: label must be in [0, 6)")
        seqs = [
            (c, [st + p for p in PERMUTATIONS[lab]])
            for c, st, lab in zip(df["clip_id"], df["start"], df["label"])
        ]
        f = encode_sequences(model, mem, seqs, names, batch_size)
        x[s], y[s] = f.reshape(len(f), -1), df["label"].to_numpy()
    return [
        dict(task="ordering", metric="accuracy", seed=seed,
             value=metrics.accuracy(fit_probe(x["train"], y["train"], x["val"], y["val"], "classification", 6,
                                              probe, seed).predict(x["test"]), y["test"]))
        for seed in seeds
    ]  # fmt: skip


def _next_shot(model, mem, splits, names, probe, seeds, batch_size) -> list[dict]:
    cands = [f"cand{i}" for i in range(5)]
    x, y = {}, {}
    for s, df in splits.items():
        seqs = []
        for r in df.iter_rows(named=True):
            ctx = [r["context_start"] + j for j in range(4)]
            seqs += [(r["clip_id"], [*ctx, r[c]]) for c in cands]
        f = encode_sequences(model, mem, seqs, names, batch_size).reshape(df.height, 5, 5, -1)
        context = f[:, :, :4].mean(2)  # [N, 5 candidates, D]
        x[s], y[s] = np.concatenate([context, f[:, :, 4]], -1), df["label"].to_numpy()
    return [
        dict(task="next_shot", metric="accuracy", seed=seed,
             value=metrics.accuracy(fit_probe(x["train"], y["train"], x["val"], y["val"], "choice", 5, probe,
                                              seed).predict(x["test"]), y["test"]))
        for seed in seeds
    ]  # fmt: skip


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


@torch.no_grad()
def _retrieval(model, mem, root: Path, k, batch_size) -> tuple[list[dict], dict[str, str]]:
    rows, skipped = [], {}
    scenes_csv = root / "retrieval" / "scenes.csv"
    if scenes_csv.exists():
        df = _read(scenes_csv, ["clip_id", "first_shot", "last_shot"])
        feats = shot_features(model, mem, sorted(set(df["clip_id"])), ("v_ctx", "a_ctx"), k, batch_size)
        d = model.cfg.d
        v = np.stack([feats[c][a : b + 1, :d].mean(0) for c, a, b in df.iter_rows()])
        a_ = np.stack([feats[c][a : b + 1, d:].mean(0) for c, a, b in df.iter_rows()])
        sim = _unit(v) @ _unit(a_).T
        for name, s in (("scene->soundtrack", sim), ("soundtrack->scene", sim.T)):
            rows += [dict(task=f"retrieval/{name}", metric=m, seed=-1, value=val)
                     for m, val in metrics.retrieval_metrics(s).items()]  # fmt: skip
    else:
        skipped["retrieval/scene<->soundtrack"] = f"no {scenes_csv}"
    desc_npz = root / "retrieval" / "descriptions.npz"
    if desc_npz.exists():
        with np.load(desc_npz, allow_pickle=False) as z:
            ids, off, tok = (
                z["clip_id"].astype(str),
                z["offsets"].astype(np.int64),
                z["tokens"].astype(np.float32),
            )
        if len(off) != len(ids) + 1 or off[-1] != len(tok):
            raise TransferFormatError(
                f"{desc_npz}: offsets must have len(clip_id)+1 entries ending at len(tokens)"
            )
        clip_v = shot_features(model, mem, sorted(set(ids)), ("v_ctx",), k, batch_size)
        scene = np.stack([clip_v[c].mean(0) for c in ids])
        desc = []
        for i in range(len(ids)):
            t = torch.from_numpy(tok[off[i] : off[i + 1]])[None]
            batch = {"video": torch.zeros(1, 1, mem.dims["video"]), "audio": torch.zeros(1, 1, mem.dims["audio"]),
                     "shot_mask": torch.ones(1, 1, dtype=torch.bool), "text": t,
                     "text_mask": torch.ones(1, t.shape[1], dtype=torch.bool),
                     "token_shot": torch.ones(1, t.shape[1], 1, dtype=torch.bool)}  # fmt: skip
            desc.append(model.encode(batch)["l_ctx"][0].mean(0).float().numpy())
        sim = _unit(np.stack(desc)) @ _unit(scene).T
        rows += [dict(task="retrieval/description->scene", metric=m, seed=-1, value=val)
                 for m, val in metrics.retrieval_metrics(sim).items()]  # fmt: skip
    else:
        skipped["retrieval/description->scene"] = f"no {desc_npz}"
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
) -> TransferResult:
    """Run the transfer tasks present under `labels_dir` (or those in `tasks`); see the module docstring.

    model: an LMP / export folder / MLflow run, or None (a frozen random-init LMP). features: per-shot
    features for AVE, ordering and next shot (not l_ctx); retrieval always uses v_ctx, a_ctx, l_ctx.
    """
    names = parse_features(features)
    if "l_ctx" in names:
        raise ValueError("transfer features are per shot; l_ctx (per token) is not one (use l_shot)")
    wanted = (
        list(TRANSFER_TASKS)
        if tasks is None
        else ([t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks))
    )
    bad = [t for t in wanted if t not in TRANSFER_TASKS]
    if bad:
        raise ValueError(f"unknown transfer task(s) {bad}; expected {TRANSFER_TASKS}")
    store = open_store(eval_store)
    if model is None:
        lmp, info = random_model(store, model_config), {}
    else:
        lmp, info = resolve_model(model)
    kk = int(k or min(info.get("k") or 30, lmp.cfg.max_shots))
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    pcfg = _probe_cfg(probe)
    root = Path(labels_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"transfer labels folder not found: {root}")
    mem = store.load_all()
    rows: list[dict] = []
    skipped: dict[str, str] = {}
    was_training = lmp.training
    lmp.eval()
    try:
        with torch_threads(threads), torch.no_grad():
            specs = {
                "ave": (["clip_id", "shot"], lambda s: _ave(lmp, mem, s, names, kk, pcfg, seed_list, batch_size)),
                "ordering": (["clip_id", "start", "label"],
                             lambda s: _ordering(lmp, mem, s, names, pcfg, seed_list, batch_size)),
                "next_shot": (["clip_id", "context_start", *[f"cand{i}" for i in range(5)], "label"],
                              lambda s: _next_shot(lmp, mem, s, names, pcfg, seed_list, batch_size)),
            }  # fmt: skip
            for task, (required, fn) in specs.items():
                if task not in wanted:
                    continue
                splits = _splits(root, task, required)
                if splits is None:
                    skipped[task] = f"no {root / task}/{{train,val,test}}.csv"
                    continue
                _check_clips(mem, splits, task)
                rows += fn(splits)
            if "retrieval" in wanted:
                r, s = _retrieval(lmp, mem, root, kk, batch_size)
                rows += r
                skipped.update(s)
    finally:
        lmp.train(was_training)
    for t, why in skipped.items():
        log.warning("transfer %s skipped: %s", t, why)
    schema = {"task": pl.String, "metric": pl.String, "seed": pl.Int64, "value": pl.Float64}
    return TransferResult(pl.DataFrame(rows, schema=schema), skipped)


def _check_clips(mem, splits, task) -> None:
    for s, df in splits.items():
        absent = sorted(set(df["clip_id"]) - set(mem.index))
        if absent:
            raise TransferFormatError(f"{task}/{s}.csv: clips not in the store: {absent[:5]}")
