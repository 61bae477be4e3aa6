"""Validation of what goes into a `FeatureStore`: movie ids, encoder specs and one movie's arrays.

Every rejection is a `StoreError` (a `ValueError`) whose message names the movie and the field and
says what was expected, so that one bad movie in a large ingest is easy to find and skip.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from lmp_data.batch import MODALITIES

MOVIE_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
RESERVED_PREFIX = ".tmp-"
"""The store names files and groups being written `.tmp-*` (never read, removed by cleanup): no movie id
may start with it."""
SPAN_EPS = 1e-3
"""Seconds a token span may reach past the first shot's start / last shot's end (rounding of cue times)."""

RESERVED_COLUMNS = ("movie_id", "n_shots", "n_tokens", "duration", "group", "written_at")
"""Manifest columns the store fills itself; `meta` may not use these keys."""


class StoreError(ValueError):
    """Bad input to, or a bad state of, a feature store; the message names the movie and field."""


def check_movie_id(movie_id: Any) -> str:
    """Return `movie_id` if it is a safe path component `[A-Za-z0-9._-]{1,128}` (not "." or "..", not
    starting with the store's reserved temporary prefix `.tmp-`)."""
    if (
        not isinstance(movie_id, str)
        or not MOVIE_ID_RE.fullmatch(movie_id)
        or movie_id in (".", "..")
        or movie_id.startswith(RESERVED_PREFIX)
    ):
        raise StoreError(
            f"movie id {movie_id!r}: expected 1-128 characters from [A-Za-z0-9._-], not '.' or '..', "
            f"not starting with {RESERVED_PREFIX!r} (reserved for the store's temporary files)"
        )
    return movie_id


REQUIRED_MODALITIES = ("video",)
"""Every store has video: shots are cut on it, and it is the anchor of every inter- and cross-modal term.
Audio and language are optional (e.g. MAD, released as frame features + sentences, has no audio)."""


def check_encoders(encoders: Any) -> dict[str, dict[str, Any]]:
    """Normalise `{"video": {"name": str, "dim": int, ...}, "audio": ..., "text": ...}`.

    A store may hold a subset of the modalities that includes video (`REQUIRED_MODALITIES`): a modality
    without an encoder is missing from the store (no arrays on disk, zero width in memory and batches)."""
    if not isinstance(encoders, Mapping):
        raise StoreError(
            f"encoders: expected a dict with keys from {list(MODALITIES)}, got {type(encoders).__name__}"
        )
    unknown = sorted(str(k) for k in encoders if k not in MODALITIES)
    missing = [m for m in REQUIRED_MODALITIES if m not in encoders]
    if unknown or missing:
        raise StoreError(
            f"encoders: expected keys from {list(MODALITIES)} including {list(REQUIRED_MODALITIES)}, "
            f"got {sorted(str(k) for k in encoders)}"
        )
    out: dict[str, dict[str, Any]] = {}
    for m in (m for m in MODALITIES if m in encoders):
        spec = encoders[m]
        if not isinstance(spec, Mapping):
            raise StoreError(f"encoders.{m}: expected a dict with 'name' and 'dim', got {spec!r}")
        name, dim = spec.get("name"), spec.get("dim")
        if not isinstance(name, str) or not name:
            raise StoreError(f"encoders.{m}.name: expected a non-empty string, got {name!r}")
        if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
            raise StoreError(f"encoders.{m}.dim: expected a positive int, got {dim!r}")
        out[m] = {**dict(spec), "name": name, "dim": int(dim)}
    return out


def _array(movie_id: str, field: str, value: Any, ndim: int) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as e:  # ragged lists etc.
        raise StoreError(f"movie {movie_id!r}, field {field!r}: not convertible to an array ({e})") from e
    if arr.ndim != ndim:
        raise StoreError(f"movie {movie_id!r}, field {field!r}: expected {ndim} dims, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise StoreError(f"movie {movie_id!r}, field {field!r}: expected a numeric array, got {arr.dtype}")
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise StoreError(f"movie {movie_id!r}, field {field!r}: NaN or inf at index {bad}")
    return arr


def check_movie(
    movie_id: str,
    *,
    shots: Any,
    video: Any,
    audio: Any,
    text: Any,
    text_spans: Any,
    dims: Mapping[str, int],
    dtype: np.dtype,
    eps: float = SPAN_EPS,
) -> dict[str, np.ndarray]:
    """Validate one movie's arrays against the store's `dims`; return them converted for storage.

    Times become float64, features `dtype`. Raises `StoreError` naming the movie and field. A modality
    absent from `dims` (a store without it) must be given as None; its arrays are not returned (without
    language, `text_spans` neither).
    """
    _check_present(movie_id, audio, text, text_spans, dims)
    shots = _check_shots(movie_id, shots)
    feats = _check_features(movie_id, video, audio, text, shots.shape[0], dims, dtype)
    if "text" not in dims:
        return {"shots": shots, **feats}
    spans = _check_spans(movie_id, text_spans, feats, shots, eps)
    return {"shots": shots, **feats, "text_spans": spans}


def _check_present(movie_id: str, audio: Any, text: Any, text_spans: Any, dims: Mapping[str, int]) -> None:
    """Each optional modality is given exactly when the store has its encoder."""
    for field, value in (("audio", audio), ("text", text)):
        if field not in dims and value is not None:
            raise StoreError(
                f"movie {movie_id!r}, field {field!r}: the store has no {field} encoder (modalities "
                f"{[m for m in MODALITIES if m in dims]}): pass {field}=None"
            )
        if field in dims and value is None:
            raise StoreError(
                f"movie {movie_id!r}, field {field!r}: missing (the store has a {field} encoder)"
            )
    if "text" not in dims and text_spans is not None and np.size(text_spans):
        raise StoreError(
            f"movie {movie_id!r}, field 'text_spans': the store has no text encoder: pass text_spans=None"
        )


def _check_shots(movie_id: str, shots: Any) -> np.ndarray:
    """`shots` as float64 [S>=1, 2]: positive lengths, sorted by start, not overlapping."""
    shots = _array(movie_id, "shots", shots, 2).astype(np.float64)
    n = shots.shape[0]
    if n < 1 or shots.shape[1] != 2:
        raise StoreError(f"movie {movie_id!r}, field 'shots': expected shape [S>=1, 2], got {shots.shape}")
    length = shots[:, 1] - shots[:, 0]
    if (length <= 0).any():
        i = int(np.argmax(length <= 0))
        raise StoreError(
            f"movie {movie_id!r}, field 'shots': shot {i} has non-positive length ({shots[i].tolist()})"
        )
    if n > 1:
        if (np.diff(shots[:, 0]) <= 0).any():
            i = int(np.argmax(np.diff(shots[:, 0]) <= 0)) + 1
            raise StoreError(f"movie {movie_id!r}, field 'shots': not sorted by start at shot {i}")
        if (shots[1:, 0] < shots[:-1, 1]).any():
            i = int(np.argmax(shots[1:, 0] < shots[:-1, 1])) + 1
            raise StoreError(
                f"movie {movie_id!r}, field 'shots': shot {i} {shots[i].tolist()} overlaps "
                f"shot {i - 1} {shots[i - 1].tolist()}"
            )
    return shots


def _check_features(
    movie_id: str, video: Any, audio: Any, text: Any, n: int, dims: Mapping[str, int], dtype: np.dtype
) -> dict[str, np.ndarray]:
    """The store's modalities as `dtype` [rows, dim]: video and audio one row per shot, text T >= 0."""
    feats = {}
    limit = float(np.finfo(dtype).max) if np.issubdtype(dtype, np.floating) else np.inf
    for field, value, rows in (("video", video, n), ("audio", audio, n), ("text", text, None)):
        if field not in dims:
            continue
        d = dims[field]
        if field == "text" and np.size(value) == 0:
            value = np.zeros((0, d))  # a movie without any language token (T = 0)
        arr = _array(movie_id, field, value, 2)
        if arr.shape[1] != d:
            raise StoreError(
                f"movie {movie_id!r}, field {field!r}: expected dim {d} (store encoder), got {arr.shape[1]}"
            )
        if rows is not None and arr.shape[0] != rows:
            raise StoreError(
                f"movie {movie_id!r}, field {field!r}: expected {rows} rows (one per shot), got {arr.shape[0]}"
            )
        if arr.size and np.abs(arr).max() > limit:
            raise StoreError(
                f"movie {movie_id!r}, field {field!r}: values up to {np.abs(arr).max():.4g} overflow "
                f"{np.dtype(dtype).name} (max {limit:.6g}); rescale the features or create the store "
                "with a wider dtype"
            )
        feats[field] = arr.astype(dtype)
    return feats


def _check_spans(
    movie_id: str, text_spans: Any, feats: dict[str, np.ndarray], shots: np.ndarray, eps: float
) -> np.ndarray:
    """`text_spans` as float64 [T, 2], one per token, each inside the movie's shots (give or take `eps`)."""
    spans = np.asarray(text_spans)
    spans = _array(movie_id, "text_spans", np.zeros((0, 2)) if spans.size == 0 else spans, 2)
    spans = spans.astype(np.float64)
    if spans.shape[1] != 2:
        raise StoreError(f"movie {movie_id!r}, field 'text_spans': expected shape [T, 2], got {spans.shape}")
    if spans.shape[0] != feats["text"].shape[0]:
        raise StoreError(
            f"movie {movie_id!r}, field 'text_spans': {spans.shape[0]} rows but 'text' has "
            f"{feats['text'].shape[0]} (expected one span per token)"
        )
    if spans.shape[0]:
        if (spans[:, 1] < spans[:, 0]).any():
            i = int(np.argmax(spans[:, 1] < spans[:, 0]))
            raise StoreError(f"movie {movie_id!r}, field 'text_spans': token {i} ends before it starts")
        lo, hi = shots[0, 0] - eps, shots[-1, 1] + eps
        out = (spans[:, 0] < lo) | (spans[:, 1] > hi)
        if out.any():
            i = int(np.argmax(out))
            raise StoreError(
                f"movie {movie_id!r}, field 'text_spans': token {i} span {spans[i].tolist()} is outside "
                f"the movie [{shots[0, 0]}, {shots[-1, 1]}]"
            )
    return spans


def check_meta(movie_id: str, meta: Any) -> dict[str, Any]:
    """`meta` must be a dict with string keys that are not reserved manifest columns."""
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise StoreError(f"movie {movie_id!r}, field 'meta': expected a dict, got {type(meta).__name__}")
    for key in meta:
        if not isinstance(key, str) or key in RESERVED_COLUMNS:
            raise StoreError(
                f"movie {movie_id!r}, field 'meta': key {key!r} is reserved or not a string "
                f"(reserved: {list(RESERVED_COLUMNS)})"
            )
    return dict(meta)
