"""Transfer tasks of the paper's section 4.3 on a clip store (formats: docs/bench.md, the demo's README).

Inputs under `labels_dir` (the demo writes them; bring real data in the same formats):
- `shot_attributes.parquet`: clip_id, shot_index, split and one integer column per attribute (AVE-style);
- `descriptions.npz`: clip_id [n], offsets [n+1], tokens [T, Dl] (+ optional split [n]).
The clip split comes from `shot_attributes.parquet`, else from the store manifest's `split` column.

Any pretraining recipe (`lmp_model.recipes`: LMP, HSSL, M2S) is read through the feature interface
`lmp-bench lvu` uses (`lmp_bench.features.model_features`: the recipe declares which named features its
`encode` returns); `model="base"` reads the base features straight from the store (no model), `None` is
the frozen random-init LMP. Per-shot features (`features`, default: the model's own, as for LVU; LMP
`v_ctx+a_ctx`):
- AVE attributes: each shot's feature (eval windows over its clip) -> one linear layer per attribute;
  average per-class accuracy on test (Table 6), and the average over attributes.
- Shot sequence ordering: 3 consecutive shots shown in the order `PERMUTATIONS[label]` (label drawn
  uniformly, `samples_per_clip` per clip, seeded), encoded as one 3-shot window; the 3 shot features
  are concatenated; 6-way linear layer; accuracy (Table 7).
- Next shot selection: a 9-shot run, shots 0-3 the context, shots 4-8 the candidates (true: shot 4);
  each candidate is encoded after the context as a 5-shot window, [mean context ; candidate] is scored
  by one linear layer with a softmax over the 5 candidates; accuracy (Table 7).
- Zero-shot retrieval over the test clips needs features in one joint space (`RETRIEVAL_FEATURES`):
  scene = clip-mean v_ctx, soundtrack = clip-mean a_ctx (scene->soundtrack and back), description =
  mean l_ctx of its tokens encoded alone -> scene; cosine similarity; R@1/5/10, median and mean rank
  (Tables 8, 9). A model without them (HSSL, M2S, base features) gets the task in `skipped` with the
  reason ("n/a"), not an error.
Features that do not read language (`lmp_bench.features.needs_text`) are encoded without the language
tokens (same values, the language branch costs nothing).
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
from lmp_bench.api import _probe_cfg, _window_k, open_store, random_model, resolve_model
from lmp_bench.features import (
    BASE_FEATURES,
    FEATURES,
    model_default_features,
    model_features,
    model_label,
    needs_text,
    parse_features,
)
from lmp_bench.lvu_probe import task_summary
from lmp_bench.probe import ProbeConfig, fit_probe, torch_threads
from lmp_bench.progress import current
from lmp_bench.results import write_parquet_atomic
from lmp_data.batch import DEFAULT_K

log = logging.getLogger(__name__)

PERMUTATIONS = list(itertools.permutations(range(3)))  # label i: shown order PERMUTATIONS[i]
TRANSFER_TASKS = ("ave", "ordering", "next_shot", "retrieval")
SHOT_FEATURES = tuple(f for f in FEATURES if f != "l_ctx")
DEFAULT_SHOT_FEATURES = "v_ctx+a_ctx"
"""LMP's per-shot features for the transfer tasks; another recipe's default is its own (as for LVU)."""
RETRIEVAL_FEATURES = {"scene": "v_ctx", "soundtrack": "a_ctx", "description": "l_ctx"}
"""The joint-space features zero-shot retrieval compares (LMP's inter-modal outputs)."""
RETRIEVAL_TASKS = (
    "retrieval/scene->soundtrack",
    "retrieval/soundtrack->scene",
    "retrieval/description->scene",
)


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


# -- the model side -----------------------------------------------------------------------------------
class BaseFeatures(torch.nn.Module):
    """No model: the store's base features per shot (`model="base"`), the no-pretraining row's input."""

    def __init__(self, k: int = DEFAULT_K, audio: bool = True):
        super().__init__()
        self.features = {"v_base": "shot_mask", **({"a_base": "shot_mask"} if audio else {})}
        self.pretrained_meta = {"k": int(k), "pretrained": False}

    def encode(self, batch: dict) -> dict[str, torch.Tensor]:
        s = batch["shot_mask"].unsqueeze(-1).float()
        out = {"v_base": batch["video"].float() * s, "shot_mask": batch["shot_mask"]}
        if "a_base" in self.features:
            out["a_base"] = batch["audio"].float() * s
        return out


def provided_features(model) -> dict[str, str]:
    """{feature: mask key} the model's `encode` returns (the recipe's declaration; base: v_base, a_base)."""
    return dict(model.features) if isinstance(model, BaseFeatures) else model_features(model)


def _label(model) -> str:
    return "base features" if isinstance(model, BaseFeatures) else model_label(model)


def transfer_features(model, features: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """The per-shot features the tasks read: `features`, or the model's own default (LMP: v_ctx+a_ctx,
    another recipe: its `default_features`, base: v_base+a_base); checked against what it provides."""
    have = provided_features(model)
    if features is None:
        if isinstance(model, BaseFeatures):
            features = "+".join(n for n in BASE_FEATURES if n in have)
        elif all(n in have for n in parse_features(DEFAULT_SHOT_FEATURES)) and "l_ctx" in have:
            features = DEFAULT_SHOT_FEATURES  # LMP
        else:
            features = model_default_features(model)
    names = parse_features(features)
    if "l_ctx" in names:
        raise ValueError("transfer features are per shot; l_ctx (per token) is not one (use l_shot)")
    missing = [n for n in names if n not in have]
    if missing:
        raise ValueError(
            f"features {missing} are not provided by the {_label(model)} model (it provides {'+'.join(have)})"
        )
    return names


def retrieval_unavailable(model) -> str | None:
    """Why zero-shot retrieval cannot run on this model (None: it can): it needs scene, soundtrack and
    description features in one space (`RETRIEVAL_FEATURES`)."""
    have = provided_features(model)
    missing = [f for f in RETRIEVAL_FEATURES.values() if f not in have]
    if not missing:
        return None
    if isinstance(model, BaseFeatures):
        return "n/a: base features of video, audio and language live in different encoder spaces"
    return (
        f"n/a: the {_label(model)} model provides no {'/'.join(missing)} (zero-shot retrieval needs "
        f"{'+'.join(RETRIEVAL_FEATURES.values())} in one space)"
    )


# -- batches of arbitrary shot sequences ---------------------------------------------------------------
def shots_batch(mem, seqs: Sequence[tuple[str, Sequence[int]]], text: bool = True) -> dict:
    """A window batch (lmp_data.batch) whose window i shows the shots `seqs[i][1]` of clip `seqs[i][0]`
    in that order (padded to the longest sequence), with the language tokens overlapping them and their
    token->shot membership (`text=False`: no tokens, T = 0, for features that do not read language).
    Tokens are padded by `lmp_data.collate_windows`, the padding of every window batch."""
    from lmp_data import collate_windows

    k = max(len(s) for _, s in seqs)
    batch = collate_windows([_shots_item(mem, clip, shots, k, text) for clip, shots in seqs])
    return batch if text else _no_text(batch)


def _shots_item(mem, clip: str, shots: Sequence[int], k: int, text: bool) -> dict:
    """One window item (lmp_data.batch) showing `shots` of `clip` in that order, zero-padded to k shots."""
    from lmp_data.windows import overlaps

    mv, d = mem.movie(clip), mem.dims
    idx = np.asarray(shots, dtype=np.int64)
    if (idx < 0).any() or (idx >= len(mv["shots"])).any():
        raise TransferFormatError(
            f"clip {clip!r}: shot index out of range [0, {len(mv['shots'])}): {list(idx)}"
        )
    n = len(idx)
    video, audio = torch.zeros(k, d["video"]), torch.zeros(k, d.get("audio", 0))
    mask = torch.zeros(k, dtype=torch.bool)
    video[:n] = torch.from_numpy(np.asarray(mv["video"][idx], np.float32))
    audio[:n] = torch.from_numpy(np.asarray(mv["audio"][idx], np.float32))
    mask[:n] = True
    tokens, token_shot = torch.zeros(0, d.get("text", 0)), torch.zeros(0, k, dtype=torch.bool)
    if text:
        sp, spans = mv["shots"][idx], mv["text_spans"]
        member = overlaps(spans[:, None, 0], spans[:, None, 1], sp[None, :, 0], sp[None, :, 1])  # [T, n]
        keep = member.any(1)
        tokens = torch.from_numpy(np.asarray(mv["text"][keep], np.float32))
        token_shot = torch.zeros(int(keep.sum()), k, dtype=torch.bool)
        token_shot[:, :n] = torch.from_numpy(member[keep])
    return {"video": video, "audio": audio, "shot_mask": mask, "text": tokens, "token_shot": token_shot,
            "start": 0, "movie": clip}  # fmt: skip


def _no_text(batch: dict) -> dict:
    """The batch without its language tokens (T = 0), as `lmp_bench.features` encodes text-free features."""
    return batch | {f: batch[f][:, :0] for f in ("text", "text_mask", "token_shot")}


def _encode(model, batch: dict, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """([N, k, sum of widths] the concatenated `names`, [N, k] shot mask) of one batch."""
    enc = model.encode(batch)
    f = torch.cat([enc[n].float() for n in names], dim=-1).cpu().numpy()
    return f, enc["shot_mask"].cpu().numpy()


@torch.no_grad()
def encode_sequences(model, mem, seqs, names: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """[len(seqs), k, D] per-shot features (concatenated `names`) of arbitrary shot sequences."""
    text = needs_text(names, None if isinstance(model, BaseFeatures) else model)
    out = []
    for lo in range(0, len(seqs), batch_size):
        out.append(_encode(model, shots_batch(mem, seqs[lo : lo + batch_size], text=text), names)[0])
    return np.concatenate(out, axis=0)


def shot_features(model, mem, clip_ids, names, k: int, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Per-shot features [n_shots, D] of each clip from eval windows of k shots (overlaps averaged)."""
    from lmp_data import ShotWindows

    text = needs_text(names, None if isinstance(model, BaseFeatures) else model)
    ds = ShotWindows(mem, k, mode="eval", movies=list(clip_ids))
    wm, ws = ds.locate(np.arange(len(ds)))
    so = mem.shot_offsets
    acc, cnt = None, np.zeros(int(so[-1]))
    for lo in range(0, len(ds), batch_size):
        idx = np.arange(lo, min(lo + batch_size, len(ds)))
        batch = ds.__getitems__(list(idx))
        f, valid = _encode(model, batch if text else _no_text(batch), names)
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


def evaluate_transfer(
    model,
    eval_store,
    labels_dir: str | Path,
    tasks: str | Sequence[str] | None = None,
    seeds: int | Sequence[int] = 3,
    probe: str | ProbeConfig | None = "linear",
    features: str | Sequence[str] | None = None,
    *,
    k: int | None = None,
    batch_size: int = 64,
    threads: int = 1,
    model_config=None,
    init_seed: int = 0,
    samples_per_clip: int = 4,
    sample_seed: int = 0,
) -> TransferResult:
    """Run the transfer tasks (all, or `tasks`); see the module docstring.

    model: a model of any recipe / export folder / MLflow run, None (a frozen random-init LMP of
    `model_config`, seeded `init_seed`) or "base" (the store's base features, no model). features: the
    per-shot features of AVE, ordering and next shot (not l_ctx); None: the model's own (LMP v_ctx+a_ctx,
    HSSL v_ctx, M2S v_scene, base v_base+a_base). Retrieval reads v_ctx, a_ctx and l_ctx; a model without
    them has the retrieval tasks in `skipped` ("n/a: ..."). k: eval window length (default the model's
    pretraining k, else lmp_data's DEFAULT_K = 30). samples_per_clip / sample_seed: how many ordering / next-shot samples are
    drawn per clip, and their seed.
    """
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
    if isinstance(model, str) and model == "base" and not Path(model).exists():
        lmp, info = BaseFeatures(k or DEFAULT_K, audio="audio" in store.dims), {}
    elif model is None:
        lmp, info = random_model(store, model_config, seed=init_seed, k=k), {}
    else:
        lmp, info = resolve_model(model)
        from lmp_model.export import check_store_encoders

        check_store_encoders(lmp, store.encoders)
    names = transfer_features(lmp, features)
    kk = _window_k(lmp, k, info.get("k"))
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
    if "ave" in wanted and attrs_df is None:
        skipped["ave"] = f"no {attr_path}"
    no_retrieval = retrieval_unavailable(lmp) if "retrieval" in wanted else None
    if no_retrieval:
        skipped.update(dict.fromkeys(RETRIEVAL_TASKS, no_retrieval))
    do_ave = "ave" in wanted and attrs_df is not None
    do_retrieval = "retrieval" in wanted and not no_retrieval
    n_probed = (len(attrs) if do_ave else 0) + ("ordering" in wanted) + ("next_shot" in wanted)
    current().plan(n_probed * len(seed_list))  # retrieval is zero-shot: no probes
    was_training = lmp.training
    lmp.eval()
    try:
        with torch_threads(threads), torch.no_grad():
            if do_ave or do_retrieval:  # one pass over the clips' eval windows serves both
                ret = (RETRIEVAL_FEATURES["scene"], RETRIEVAL_FEATURES["soundtrack"]) if do_retrieval else ()
                both = tuple(names) + tuple(n for n in ret if n not in names)
                clips = wanted_clips if do_ave else splits["test"]
                per_shot = shot_features(lmp, mem, clips, both, kk, batch_size)
                widths = _widths(lmp, mem, both)
                if do_ave:
                    cols = _columns(both, widths, names)
                    feats = {c: f[:, cols] for c, f in per_shot.items()}
                    rows += _ave(feats, attrs_df, attrs, pcfg, seed_list)
            if "ordering" in wanted:
                rows += _ordering(lmp, mem, splits, names, pcfg, seed_list, batch_size, samples_per_clip, rng)
            if "next_shot" in wanted:
                rows += _next_shot(
                    lmp, mem, splits, names, pcfg, seed_list, batch_size, samples_per_clip, rng
                )
            if do_retrieval:
                test = splits["test"]
                cv, ca = (_columns(both, widths, [n]) for n in ret)
                scene = {c: per_shot[c][:, cv] for c in test}
                r, sk = _retrieval(lmp, mem, root, test, scene, {c: per_shot[c][:, ca] for c in test})
                rows += r
                skipped.update(sk)
    finally:
        lmp.train(was_training)
    for t, why in skipped.items():
        log.warning("transfer %s skipped: %s", t, why)
    schema = {"task": pl.String, "metric": pl.String, "seed": pl.Int64, "value": pl.Float64}
    return TransferResult(pl.DataFrame(rows, schema=schema), skipped)


def _widths(model, mem, names: Sequence[str]) -> dict[str, int]:
    """Width of each feature, from one 1-shot window of the first clip."""
    first = mem.movie_ids[0]
    text = needs_text(names, None if isinstance(model, BaseFeatures) else model)
    enc = model.encode(shots_batch(mem, [(first, [0])], text=text))
    return {n: int(enc[n].shape[-1]) for n in names}


def _columns(order: Sequence[str], widths: dict[str, int], pick: Sequence[str]) -> np.ndarray:
    """Column indices of the features `pick` in a concatenation of `order`."""
    start, cols = 0, {}
    for n in order:
        cols[n] = np.arange(start, start + widths[n])
        start += widths[n]
    return np.concatenate([cols[n] for n in pick])
