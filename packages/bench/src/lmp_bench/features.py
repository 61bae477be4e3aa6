"""Clip features from a frozen LMP model: eval windows over each clip, time-averaged (paper Sec. 4, Table 3).

Every clip of a clip store is cut into eval windows of `k` shots (`ShotWindows(mode="eval")`: starts
0, stride, ... plus a last window ending at the clip's last shot, so every shot is covered; clips
shorter than k give one padded window). Windows are encoded in batches under `torch.no_grad()`.
Each feature is averaged over its valid positions in the clip:

- shot features (v_base, a_base, v_ctx, a_ctx, v_cross_a) over the clip's shots, each shot counted
  once: a shot covered by c overlapping windows contributes each window's output with weight 1/c;
- v_cross_l over the shots of windows that have language (its mask `v_cross_l_mask`), l_shot over shots
  with tokens, l_ctx over language tokens (a token overlapping two windows counts twice);
- a clip with no valid position for a feature gets zeros.

`encode_clips` returns every feature at once, so any combination (`v_ctx+a_ctx+v_cross_a`) is a
concatenation of cached arrays. Results are cached in memory per (model, store, k, stride).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmp_bench.probe import torch_threads

log = logging.getLogger(__name__)

FEATURES = ("v_base", "a_base", "v_ctx", "a_ctx", "l_ctx", "v_cross_a", "v_cross_l", "l_shot")
BASE_FEATURES = ("v_base", "a_base")
_MASK = {"v_cross_l": "v_cross_l_mask", "l_shot": "l_shot_mask", "l_ctx": "text_mask"}
DEFAULT_FEATURES = "v_ctx+a_ctx+v_cross_a"  # the paper's best combination (Table 3)


def parse_features(spec: str | Sequence[str]) -> tuple[str, ...]:
    """ "v_ctx+a_ctx" or ["v_ctx", "a_ctx"] -> ("v_ctx", "a_ctx"), validated, order kept."""
    names = [s.strip() for s in spec.split("+")] if isinstance(spec, str) else [str(s) for s in spec]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"no features given; expected names from {FEATURES} joined by '+'")
    bad = [n for n in names if n not in FEATURES]
    if bad:
        raise ValueError(f"unknown feature(s) {bad}; expected names from {FEATURES} joined by '+'")
    if len(set(names)) != len(names):
        raise ValueError(f"feature listed twice in {'+'.join(names)}")
    return tuple(names)


@dataclass
class ClipFeatures:
    """Time-averaged features of clips: `arrays[name]` is [len(clip_ids), D_name] float32."""

    clip_ids: list[str]
    arrays: dict[str, np.ndarray]
    failed: dict[str, str]  # clip id -> why it has no features (unreadable, non-finite output)

    def combine(self, features: str | Sequence[str]) -> np.ndarray:
        """Concatenate the chosen features (Table 3's "+")."""
        names = parse_features(features)
        missing = [n for n in names if n not in self.arrays]
        if missing:
            raise KeyError(f"features {missing} were not computed (have {sorted(self.arrays)})")
        return np.concatenate([self.arrays[n] for n in names], axis=1)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_BASE_CACHE: dict[tuple, ClipFeatures] = {}


def _store_key(store) -> str:
    path = getattr(store, "path", None)
    return str(Path(path).resolve()) if path is not None else f"id:{id(store)}"


def clear_cache() -> None:
    _CACHE.clear()
    _BASE_CACHE.clear()


def _load(store, clip_ids: list[str]) -> tuple[object, list[str], dict[str, str]]:
    """Load clips into memory; if the store refuses some, load the readable ones and report the rest."""
    from lmp_data import StoreError

    try:
        return store.load_all(clip_ids), clip_ids, {}
    except (StoreError, OSError, ValueError, KeyError) as e:
        log.warning(
            "store %s: loading all clips failed (%s); checking clips one by one", _store_key(store), e
        )
    good, failed = [], {}
    for c in clip_ids:
        try:
            store.load_all([c])
            good.append(c)
        except Exception as e:  # noqa: BLE001 - one bad clip must not take down the evaluation
            failed[c] = f"{type(e).__name__}: {e}"
    return (store.load_all(good) if good else None), good, failed


def base_features(store, clip_ids: Sequence[str] | None = None) -> ClipFeatures:
    """v_base and a_base straight from the store (no model): the mean base feature of each clip."""
    key = (_store_key(store), tuple(clip_ids) if clip_ids is not None else None)
    if key in _BASE_CACHE:
        return _BASE_CACHE[key]
    ids = list(clip_ids) if clip_ids is not None else store.movies()["movie_id"].to_list()
    mem, ids, failed = _load(store, ids)
    out = {n: [] for n in BASE_FEATURES}
    for c in ids:
        mv = mem.movie(c)
        out["v_base"].append(np.asarray(mv["video"], np.float64).mean(0))
        out["a_base"].append(np.asarray(mv["audio"], np.float64).mean(0))
    dims = store.dims
    arrays = {
        "v_base": np.asarray(out["v_base"], np.float32).reshape(len(ids), dims["video"]),
        "a_base": np.asarray(out["a_base"], np.float32).reshape(len(ids), dims["audio"]),
    }
    res = _drop_nonfinite(ClipFeatures(ids, arrays, failed))
    _BASE_CACHE[key] = res
    return res


def _drop_nonfinite(f: ClipFeatures) -> ClipFeatures:
    ok = np.ones(len(f.clip_ids), bool)
    for name, a in f.arrays.items():
        bad = ~np.isfinite(a).all(axis=1)
        for i in np.flatnonzero(bad & ok):
            f.failed[f.clip_ids[i]] = f"non-finite {name} feature"
        ok &= ~bad
    if ok.all():
        return f
    log.warning("%d clips dropped for non-finite features", int((~ok).sum()))
    return ClipFeatures(
        [c for c, k in zip(f.clip_ids, ok) if k], {n: a[ok] for n, a in f.arrays.items()}, f.failed
    )


@torch.no_grad()
def encode_clips(
    model: torch.nn.Module,
    store,
    clip_ids: Sequence[str] | None = None,
    k: int = 30,
    stride: int | None = None,
    batch_size: int = 64,
    cache: bool = True,
    threads: int = 1,
) -> ClipFeatures:
    """All features (`FEATURES`) of every clip, time-averaged; see the module docstring.

    `store` is an `lmp_data.FeatureStore`; `clip_ids` defaults to every movie in it. The model is put
    in eval mode and must not be trained further while its cached features are in use. `threads`: torch
    intra-op threads while encoding (<= 0: unchanged); 1 by default because on the shared 2-core machine
    one thread was measured 10-20x faster than two (1.3 s vs 13-26 s for 11 windows, d=512).
    """
    from lmp_data import ShotWindows

    stride = stride or k
    key = (_store_key(store), tuple(clip_ids) if clip_ids is not None else None, int(k), int(stride))
    per_model = _CACHE.setdefault(model, {}) if cache else {}
    if key in per_model:
        return per_model[key]
    max_shots = getattr(getattr(model, "cfg", None), "max_shots", None)
    if max_shots is not None and k > max_shots:
        raise ValueError(f"eval window k={k} exceeds the model's max_shots={max_shots}")
    ids = list(clip_ids) if clip_ids is not None else store.movies()["movie_id"].to_list()
    mem, ids, failed = _load(store, ids)
    if not ids:
        raise ValueError(f"store {_store_key(store)}: no readable clips to encode ({len(failed)} failed)")
    ds = ShotWindows(mem, k, mode="eval", stride=stride, movies=ids)
    n_win = len(ds)
    win_movie, win_start = ds.locate(np.arange(n_win))
    # coverage of every shot (global index into the in-memory store) by eval windows
    so = mem.shot_offsets
    cover = np.zeros(int(so[-1]), np.float64)
    for m, s in zip(win_movie, win_start):
        n = min(k, int(so[m + 1] - so[m] - s))
        cover[so[m] + s : so[m] + s + n] += 1
    row_of = {c: i for i, c in enumerate(ids)}
    clip_row = np.array([row_of[c] for c in ds.mem.movie_ids])
    was_training = model.training
    model.eval()
    try:
        with torch_threads(threads):
            arrays = _encode_windows(model, ds, win_movie, win_start, cover, clip_row, len(ids), batch_size)
    finally:
        model.train(was_training)
    res = _drop_nonfinite(ClipFeatures(ids, arrays, failed))
    per_model[key] = res
    return res


def _encode_windows(model, ds, win_movie, win_start, cover, clip_row, n_clips, batch_size) -> dict:
    """Weighted sums of every feature over the clip's windows, divided by the summed weights."""
    k, so = ds.k, ds.mem.shot_offsets
    max_tokens = getattr(getattr(model, "cfg", None), "max_tokens", None)
    sums: dict[str, torch.Tensor] = {}
    wsum: dict[str, torch.Tensor] = {}
    truncated = 0
    for lo in range(0, len(win_movie), batch_size):
        idx = list(range(lo, min(lo + batch_size, len(win_movie))))
        batch = ds.__getitems__(idx)
        if max_tokens is not None and batch["text"].shape[1] > max_tokens:
            truncated += int((batch["text_mask"].sum(1) > max_tokens).sum())
            for f in ("text", "text_mask", "token_shot"):
                batch[f] = batch[f][:, :max_tokens]
        out = model.encode(batch)
        m, s = win_movie[idx], win_start[idx]
        g = so[m][:, None] + s[:, None] + np.arange(k)[None, :]
        shot_w = torch.from_numpy(1.0 / cover[np.minimum(g, len(cover) - 1)]).float()
        rows = torch.from_numpy(clip_row[m])
        for name in FEATURES:
            feat = out[name].float().cpu()
            mask = out[_MASK.get(name, "shot_mask")].cpu().float()
            w = mask if name == "l_ctx" else mask * shot_w
            if name not in sums:
                sums[name] = torch.zeros(n_clips, feat.shape[-1], dtype=torch.float64)
                wsum[name] = torch.zeros(n_clips, dtype=torch.float64)
            sums[name].index_add_(0, rows, (feat * w.unsqueeze(-1)).sum(1).double())
            wsum[name].index_add_(0, rows, w.sum(1).double())
    if truncated:
        log.warning(
            "%d windows had more than max_tokens=%s tokens; the rest were dropped", truncated, max_tokens
        )
    return {n: (sums[n] / wsum[n].clamp_min(1e-12).unsqueeze(-1)).float().numpy() for n in FEATURES}
