"""`FeatureStore`: the base features of many movies for one encoder set (Zarr v3 + Parquet manifest).

Layout on disk (local paths)::

    STORE/store.json                      format, version, dtype and the encoders {name, dim, ...}
    STORE/movies/<id>.<token>/            one Zarr v3 group per movie: shots [S,2] f64, video [S,Dv],
                                          audio [S,Da], text [T,Dl], text_spans [T,2] f64
                                          (only the arrays of the store's modalities, see below)
    STORE/manifest/<id>.parquet           one manifest row per movie (Polars); its `group` column names
                                          the Zarr group. This file is the commit marker.
    STORE/movies/.tmp-<id>.<token>/       a movie being written (never read)
    STORE/manifest/.tmp-<id>.<token>.parquet

Why this layout: a movie is written into a fresh group under a temporary name, renamed into place,
then its manifest row is written to a temporary file and published with one atomic link/rename. Only
movies with a manifest row exist for readers, so a reader in another process never sees a half-written
movie and a killed writer leaves only `.tmp-*`/unreferenced groups that `cleanup()` removes. Writers of
different movies touch disjoint files, so concurrent writers need no lock. Creating a new id uses
`os.link` (fails if the id appeared meanwhile), overwriting uses `os.replace`, so `overwrite=False`
holds even between racing processes. The old group of an overwritten movie is removed after the switch.

Modalities: a store has video and, optionally, audio and/or language; its `encoders` name the ones it
has (`modalities`). A store created without, say, audio (MAD's public release has none) writes no audio
array; in memory (`InMemoryStore`) a missing modality is a zero-width array ([S, 0]; language: [0, 0] with
`text_spans` [0, 2]), so windows and batches keep their keys and shapes with a feature width of 0, and
`dims` lists only the modalities the store has.

This module opens and creates stores (`FeatureStore`); the write side (`StoreWriter`: write_movie,
delete_movie, cleanup, check, repair) is in `lmp_data.store_write`, the read side (`StoreReader`: movies,
read_movie, load_all -> `InMemoryStore`) in `lmp_data.store_read`; their public names are re-exported here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from lmp_data.files import atomic_write
from lmp_data.store_read import (  # noqa: F401  (re-exported: the public names of lmp_data.store)
    BASE_COLUMNS,
    SHOT_ARRAYS,
    InMemoryStore,
    StoreReader,
)
from lmp_data.store_write import (  # noqa: F401  (re-exported)
    CHUNK_BYTES,
    StoreCheck,
    StoreWriter,
)
from lmp_data.validate import (
    MODALITIES,
    StoreError,
    check_encoders,
    check_movie_id,
)

FORMAT = "lmp-feature-store"
VERSION = 1
ARRAYS = ("shots", "video", "audio", "text", "text_spans")


def store_arrays(modalities: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The arrays a store of these modalities keeps per movie (`text_spans` goes with `text`)."""
    have = set(modalities) | {"shots"} | ({"text_spans"} if "text" in modalities else set())
    return tuple(a for a in ARRAYS if a in have)


class FeatureStore(StoreWriter, StoreReader):
    """A feature store directory. Use `FeatureStore.create` or `FeatureStore.open`."""

    def __init__(self, path: str | os.PathLike, info: dict[str, Any]):
        self.path = Path(path)
        self.info = info
        self.encoders: dict[str, dict[str, Any]] = info["encoders"]
        self.modalities: tuple[str, ...] = tuple(m for m in MODALITIES if m in self.encoders)
        """The modalities this store has (video always; audio and text when it has their encoders)."""
        self.dims: dict[str, int] = {m: int(self.encoders[m]["dim"]) for m in self.modalities}
        self.arrays: tuple[str, ...] = store_arrays(self.modalities)
        self.dtype = np.dtype(info["dtype"])

    # -- opening -------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        encoders: dict[str, dict[str, Any]],
        dtype: str = "float16",
        exist_ok: bool = False,
    ) -> FeatureStore:
        """Create an empty store for one encoder set. With `exist_ok`, an existing store with the same
        encoders and dtype is opened instead (a different one is an error). `encoders` may leave out
        audio and/or text: the store then has only the modalities named (video is required)."""
        path = Path(path)
        encoders = check_encoders(encoders)
        try:
            np.dtype(dtype)
        except TypeError:
            raise StoreError(
                f"store {path}: dtype {dtype!r} is not a numpy dtype (e.g. float16, float32)"
            ) from None
        if np.dtype(dtype).kind != "f":
            raise StoreError(f"store {path}: dtype must be a float type, got {dtype!r}")
        info = {"format": FORMAT, "version": VERSION, "dtype": np.dtype(dtype).name, "encoders": encoders}
        json.dumps(info)  # encoders' extra fields must be JSON-able
        if (path / "store.json").exists():
            if not exist_ok:
                raise StoreError(f"store {path}: already exists")
            store = cls.open(path)
            if store.encoders != encoders or store.dtype != np.dtype(dtype):
                raise StoreError(
                    f"store {path}: exists with encoders {store.encoders} ({store.dtype}), "
                    f"not {encoders} ({dtype})"
                )
            return store
        if path.exists() and any(path.iterdir()):
            raise StoreError(f"store {path}: directory exists, is not empty and has no store.json")
        for sub in ("movies", "manifest"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        atomic_write(path / "store.json", json.dumps(info, indent=2))
        return cls(path, info)

    @classmethod
    def open(cls, path: str | os.PathLike) -> FeatureStore:
        """Open an existing store (checks its format and encoders)."""
        path = Path(path)
        meta = path / "store.json"
        if not meta.is_file():
            raise StoreError(f"store {path}: no store.json (not a feature store, or not created yet)")
        try:
            info = json.loads(meta.read_text())
        except json.JSONDecodeError as e:
            raise StoreError(f"store {path}: store.json is not valid JSON ({e})") from e
        if info.get("format") != FORMAT or info.get("version") != VERSION:
            raise StoreError(
                f"store {path}: store.json has format {info.get('format')!r} version {info.get('version')!r}, "
                f"expected {FORMAT!r} version {VERSION}"
            )
        info["encoders"] = check_encoders(info.get("encoders"))
        return cls(path, info)

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, dims={self.dims}, dtype={self.dtype.name})"

    @property
    def missing(self) -> tuple[str, ...]:
        """The modalities this store does not have (e.g. ("audio",) for a MAD import)."""
        return tuple(m for m in MODALITIES if m not in self.modalities)

    # -- paths ---------------------------------------------------------------------------------------
    def _manifest_path(self, movie_id: str) -> Path:
        return self.path / "manifest" / f"{check_movie_id(movie_id)}.parquet"

    def _row(self, movie_id: str) -> dict[str, Any]:
        """The manifest row of `movie_id`; KeyError if absent, StoreError (naming the file) if unreadable."""
        p = self._manifest_path(movie_id)
        try:
            row = pl.read_parquet(p).row(0, named=True)
        except FileNotFoundError:
            raise KeyError(f"store {self.path}: no movie {movie_id!r}") from None
        except Exception as e:  # truncated / corrupt Parquet: polars names no file
            raise StoreError(
                f"store {self.path}: movie {movie_id!r}: manifest row {p} unreadable "
                f"({type(e).__name__}: {e})"
            ) from e
        if not isinstance(row.get("group"), str) or not row["group"]:
            raise StoreError(f"store {self.path}: movie {movie_id!r}: manifest row {p} names no group")
        return row
