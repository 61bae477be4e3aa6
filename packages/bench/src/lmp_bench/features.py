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

Any pretraining recipe (`lmp_model.recipes`: LMP, HSSL, M2S) is encoded the same way: the recipe
declares its features and the mask each is averaged under (`model_features`); the names above are LMP's.

Missing modalities: only features that exist are offered. A model pretrained on a store without audio
(e.g. a MAD import) provides no a_base, a_ctx, v_cross_a, v_cross_l; a store without audio has no a_base.
Asking for one is a one-line ValueError naming the feature and the missing modality.

Feature names, what each model provides and the checks are in `lmp_bench.feature_names` (re-exported here).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lmp_bench.feature_names import (  # noqa: F401  (re-exported: the public names of this module)
    _MASK,
    BASE_FEATURES,
    DEFAULT_FEATURES,
    FEATURE_NEEDS,
    FEATURES,
    TEXT_FREE,
    _store_key,
    all_features,
    check_model_features,
    check_store_features,
    model_default_features,
    model_features,
    model_label,
    needs_text,
    parse_features,
    store_base_features,
    text_free,
)
from lmp_bench.probe import torch_threads
from lmp_data.batch import DEFAULT_K

log = logging.getLogger(__name__)


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
    """v_base and a_base straight from the store (no model): the mean base feature of each clip (a_base
    only when the store has audio)."""
    key = (_store_key(store), tuple(clip_ids) if clip_ids is not None else None)
    if key in _BASE_CACHE:
        return _BASE_CACHE[key]
    ids = list(clip_ids) if clip_ids is not None else store.movies()["movie_id"].to_list()
    mem, ids, failed = _load(store, ids)
    names = store_base_features(store)
    src = {"v_base": "video", "a_base": "audio"}
    out = {n: [] for n in names}
    for c in ids:
        mv = mem.movie(c)
        for n in names:
            out[n].append(np.asarray(mv[src[n]], np.float64).mean(0))
    dims = store.dims
    arrays = {n: np.asarray(out[n], np.float32).reshape(len(ids), dims[src[n]]) for n in names}
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


@dataclass
class ClipWindows:
    """The eval windows of a set of clips, with what time-averaging them needs.

    Built by `clip_windows`; shared by `encode_clips` (frozen features) and `lmp_bench.scratch`
    (end-to-end training on the same clip encoding). `cover[g]` counts the windows covering shot g (a
    global index into the in-memory store), so a shot covered c times is weighted 1/c; `win_row[i]` is
    the row (in `clip_ids`) of window i's clip.
    """

    ds: object  # lmp_data.ShotWindows in eval mode
    clip_ids: list[str]
    win_movie: np.ndarray
    win_start: np.ndarray
    cover: np.ndarray
    win_row: np.ndarray

    @property
    def k(self) -> int:
        return int(self.ds.k)

    def __len__(self) -> int:
        return len(self.win_movie)

    def windows_of(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Indices of the windows of the clips at `rows` (window order kept)."""
        return np.flatnonzero(np.isin(self.win_row, np.asarray(rows)))

    def batch(
        self, idx: Sequence[int] | np.ndarray, max_tokens: int | None = None, text: bool = True
    ) -> tuple[dict, torch.Tensor, np.ndarray, int]:
        """(window batch, shot weights [n, k], clip rows [n], windows truncated to `max_tokens`).

        `text=False` drops every language token (T = 0): for features that do not depend on language
        (`TEXT_FREE`) the model's output is the same and the language branch costs nothing.
        """
        idx = np.asarray(idx, dtype=np.int64)
        batch = self.ds.batch(idx.tolist())
        truncated = 0
        if not text:
            for f in ("text", "text_mask", "token_shot"):
                batch[f] = batch[f][:, :0]
        elif max_tokens is not None and batch["text"].shape[1] > max_tokens:
            truncated = int((batch["text_mask"].sum(1) > max_tokens).sum())
            for f in ("text", "text_mask", "token_shot"):
                batch[f] = batch[f][:, :max_tokens]
        so, k = self.ds.mem.shot_offsets, self.k
        m, s = self.win_movie[idx], self.win_start[idx]
        g = so[m][:, None] + s[:, None] + np.arange(k)[None, :]
        c = self.cover[np.minimum(g, len(self.cover) - 1)]
        # padding positions may point at shots outside these clips (uncovered): weight 0, not 1/0
        valid = np.arange(k)[None, :] < (so[m + 1] - so[m] - s)[:, None]
        shot_w = torch.from_numpy(np.where(valid & (c > 0), 1.0 / np.maximum(c, 1.0), 0.0)).float()
        return batch, shot_w, self.win_row[idx], truncated


def clip_windows(mem, clip_ids: Sequence[str], k: int, stride: int | None = None) -> ClipWindows:
    """Eval windows of k shots (stride default k) over `clip_ids` of an in-memory store."""
    from lmp_data import ShotWindows

    ids = list(clip_ids)
    ds = ShotWindows(mem, int(k), mode="eval", stride=stride or int(k), movies=ids)
    win_movie, win_start = ds.locate(np.arange(len(ds)))
    so = mem.shot_offsets
    cover = np.zeros(int(so[-1]), np.float64)
    for m, s in zip(win_movie, win_start):
        n = min(int(k), int(so[m + 1] - so[m] - s))
        cover[so[m] + s : so[m] + s + n] += 1
    row_of = {c: i for i, c in enumerate(ids)}
    movie_row = np.full(len(mem.movie_ids), -1, np.int64)
    for i, c in enumerate(mem.movie_ids):
        movie_row[i] = row_of.get(c, -1)
    return ClipWindows(ds, ids, win_movie, win_start, cover, movie_row[win_movie])


def pool_windows(
    out: dict,
    shot_w: torch.Tensor,
    rows,
    n_rows: int,
    names: Sequence[str],
    dtype=torch.float32,
    masks: dict[str, str] | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per clip row: (weighted sum [n_rows, D], summed weight [n_rows]) of each feature over windows.

    `out` is `model.encode`'s output for windows whose clip rows are `rows` (ints in [0, n_rows)).
    `masks`: {feature: its mask key} (`model_features`; default LMP's). Differentiable; the time average
    is sum / weight (see the module docstring for the weights).
    """
    rows = torch.as_tensor(np.asarray(rows), dtype=torch.long)
    res = {}
    for name in names:
        feat = out[name].float()
        key = (masks or _MASK).get(name, "shot_mask")
        mask = out[key].float()
        w = mask if key == "text_mask" else mask * shot_w.to(mask.device)  # per token: no shot weights
        win_sum = (feat * w.unsqueeze(-1)).sum(1).to(dtype)
        s = torch.zeros(n_rows, feat.shape[-1], dtype=dtype, device=feat.device).index_add(
            0, rows.to(feat.device), win_sum
        )
        ws = torch.zeros(n_rows, dtype=dtype, device=feat.device).index_add(
            0, rows.to(feat.device), w.sum(1).to(dtype)
        )
        res[name] = (s, ws)
    return res


def time_average(pooled: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """sum / weight per feature (a clip with no valid position for a feature gets zeros)."""
    return {n: s / w.clamp_min(1e-12).unsqueeze(-1) for n, (s, w) in pooled.items()}


@torch.no_grad()
def encode_clips(
    model: torch.nn.Module,
    store,
    clip_ids: Sequence[str] | None = None,
    k: int = DEFAULT_K,
    stride: int | None = None,
    batch_size: int = 64,
    cache: bool = True,
    threads: int = 1,
    features: str | Sequence[str] | None = None,
) -> ClipFeatures:
    """Every feature (`FEATURES`) of every clip, time-averaged; see the module docstring.

    `store` is an `lmp_data.FeatureStore`; `clip_ids` defaults to every movie in it. The model is put
    in eval mode and must not be trained further while its cached features are in use. `threads`: torch
    intra-op threads while encoding (<= 0: unchanged); 1 by default because on the shared 2-core machine
    one thread was measured 10-20x faster than two (1.3 s vs 13-26 s for 11 windows, d=512).
    `features`: compute only these (None: all). When none of them needs language (`TEXT_FREE`), the
    windows are encoded without their language tokens, which gives the same values ~2.5x faster
    (d=128, k=30: the language branch is most of the encoder's work).
    """
    stride = stride or k
    masks = model_features(model)
    every = tuple(masks)
    names = every if features is None else parse_features(features)
    check_model_features(model, names)
    text = needs_text(names, model)
    if not text:
        free = text_free(model)
        names = tuple(n for n in every if n in free)  # all text-free ones cost the same
    base_key = (_store_key(store), tuple(clip_ids) if clip_ids is not None else None, int(k), int(stride))
    key = base_key + (names,)
    per_model = _CACHE.setdefault(model, {}) if cache else {}
    for cand in (base_key + (every,), key):
        if cand in per_model:
            return per_model[cand]
    max_shots = getattr(getattr(model, "cfg", None), "max_shots", None)
    if max_shots is not None and k > max_shots:
        raise ValueError(f"eval window k={k} exceeds the model's max_shots={max_shots}")
    ids = list(clip_ids) if clip_ids is not None else store.movies()["movie_id"].to_list()
    mem, ids, failed = _load(store, ids)
    if not ids:
        raise ValueError(f"store {_store_key(store)}: no readable clips to encode ({len(failed)} failed)")
    cw = clip_windows(mem, ids, k, stride)
    was_training = model.training
    model.eval()
    try:
        with torch_threads(threads):
            arrays = _encode_windows(model, cw, batch_size, names, text, masks)
    finally:
        model.train(was_training)
    res = _drop_nonfinite(ClipFeatures(ids, arrays, failed))
    per_model[key] = res
    return res


def _encode_windows(model, cw: ClipWindows, batch_size: int, names, text: bool, masks=None) -> dict:
    """Weighted sums of each feature over the clip's windows, divided by the summed weights."""
    max_tokens = getattr(getattr(model, "cfg", None), "max_tokens", None)
    n_clips = len(cw.clip_ids)
    sums: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    truncated = 0
    for lo in range(0, len(cw), batch_size):
        idx = np.arange(lo, min(lo + batch_size, len(cw)))
        batch, shot_w, rows, trunc = cw.batch(idx, max_tokens, text=text)
        truncated += trunc
        out = {n: v.cpu() for n, v in model.encode(batch).items()}
        pooled = pool_windows(out, shot_w, rows, n_clips, names, torch.float64, masks)
        for name, (s, w) in pooled.items():
            if name in sums:
                sums[name][0].add_(s)
                sums[name][1].add_(w)
            else:
                sums[name] = (s, w)
    if truncated:
        log.warning(
            "%d windows had more than max_tokens=%s tokens; the rest were dropped", truncated, max_tokens
        )
    return {n: a.float().numpy() for n, a in time_average(sums).items()}
