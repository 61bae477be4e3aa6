"""What the transfer tasks (`lmp_bench.transfer`) share: their label files, the model side and per-shot features.

- Labels: `shot_attributes.parquet` and the clip split (`read_shot_attributes`, `clip_splits`), and the
  error a malformed label file raises (`TransferFormatError`).
- The model side: `BaseFeatures` (no model, the store's base features), which per-shot features a model
  provides and which the tasks read (`transfer_features`), whether it can do zero-shot retrieval.
- Per-shot features of arbitrary shot sequences (`shots_batch`, `encode_sequences`) and of whole clips
  from eval windows (`shot_features`), the input of every task.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import torch

from lmp_bench.features import (
    BASE_FEATURES,
    model_default_features,
    model_features,
    model_label,
    needs_text,
    parse_features,
)
from lmp_data.batch import DEFAULT_K

DEFAULT_SHOT_FEATURES = "v_ctx+a_ctx"
"""LMP's per-shot features for the transfer tasks; another recipe's default is its own (as for LVU)."""
RETRIEVAL_FEATURES = {"scene": "v_ctx", "soundtrack": "a_ctx", "description": "l_ctx"}
"""The joint-space features zero-shot retrieval compares (LMP's inter-modal outputs)."""


class TransferFormatError(ValueError):
    """A transfer label file that does not follow docs/bench.md; names the file and field."""


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
        batch = ds.batch(list(idx))
        f, valid = _encode(model, batch if text else _no_text(batch), names)
        if acc is None:
            acc = np.zeros((int(so[-1]), f.shape[-1]))
        g = so[wm[idx]][:, None] + ws[idx][:, None] + np.arange(ds.k)[None, :]
        np.add.at(acc, g[valid], f[valid])
        np.add.at(cnt, g[valid], 1)
    acc /= np.maximum(cnt, 1)[:, None]
    return {c: acc[so[mem.index[c]] : so[mem.index[c] + 1]] for c in clip_ids}


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
