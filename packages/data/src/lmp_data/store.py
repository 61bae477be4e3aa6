"""`FeatureStore`: the base features of many movies for one encoder set (Zarr v3 + Parquet manifest).

Layout on disk (local paths)::

    STORE/store.json                      format, version, dtype and the encoders {name, dim, ...}
    STORE/movies/<id>.<token>/            one Zarr v3 group per movie: shots [S,2] f64, video [S,Dv],
                                          audio [S,Da], text [T,Dl], text_spans [T,2] f64
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
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from lmp_data.validate import (
    MODALITIES,
    StoreError,
    check_encoders,
    check_meta,
    check_movie,
    check_movie_id,
)

FORMAT = "lmp-feature-store"
VERSION = 1
ARRAYS = ("shots", "video", "audio", "text", "text_spans")
BASE_COLUMNS = {"movie_id": pl.String, "n_shots": pl.Int64, "n_tokens": pl.Int64, "duration": pl.Float64}
CHUNK_BYTES = 1 << 20
"""Target bytes per Zarr chunk (rows x dim): big enough for fast whole-movie loads, small for windows."""


def _chunk_rows(dim: int, itemsize: int) -> int:
    return int(max(64, min(65536, CHUNK_BYTES // max(1, dim * itemsize))))


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@dataclass
class InMemoryStore:
    """Movies of a store concatenated into contiguous arrays; movie `i` owns rows
    `shot_offsets[i]:shot_offsets[i+1]` of shots/video/audio and `token_offsets[i]:token_offsets[i+1]`
    of text/text_spans. Within a movie tokens are sorted by span start (stable), so the tokens of a
    time range are (nearly) one contiguous slice.
    """

    movie_ids: list[str]
    manifest: pl.DataFrame
    encoders: dict[str, dict[str, Any]]
    shot_offsets: np.ndarray
    token_offsets: np.ndarray
    shots: np.ndarray
    video: np.ndarray
    audio: np.ndarray
    text: np.ndarray
    text_spans: np.ndarray
    index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.index = {m: i for i, m in enumerate(self.movie_ids)}

    @property
    def dims(self) -> dict[str, int]:
        return {m: int(self.encoders[m]["dim"]) for m in MODALITIES}

    @property
    def n_shots(self) -> int:
        return int(self.shot_offsets[-1])

    def movie(self, movie_id: str) -> dict[str, np.ndarray]:
        """Views of one movie's arrays (tokens in time order)."""
        i = self.index[movie_id]
        s0, s1 = self.shot_offsets[i], self.shot_offsets[i + 1]
        t0, t1 = self.token_offsets[i], self.token_offsets[i + 1]
        return {
            "shots": self.shots[s0:s1],
            "video": self.video[s0:s1],
            "audio": self.audio[s0:s1],
            "text": self.text[t0:t1],
            "text_spans": self.text_spans[t0:t1],
        }


class FeatureStore:
    """A feature store directory. Use `FeatureStore.create` or `FeatureStore.open`."""

    def __init__(self, path: str | os.PathLike, info: dict[str, Any]):
        self.path = Path(path)
        self.info = info
        self.encoders: dict[str, dict[str, Any]] = info["encoders"]
        self.dims: dict[str, int] = {m: int(self.encoders[m]["dim"]) for m in MODALITIES}
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
        encoders and dtype is opened instead (a different one is an error)."""
        path = Path(path)
        encoders = check_encoders(encoders)
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
        tmp = path / f".tmp-store.{uuid.uuid4().hex}.json"
        _fsync_write(tmp, json.dumps(info, indent=2).encode())
        os.replace(tmp, path / "store.json")
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

    # -- paths ---------------------------------------------------------------------------------------
    def _manifest_path(self, movie_id: str) -> Path:
        return self.path / "manifest" / f"{check_movie_id(movie_id)}.parquet"

    def _row(self, movie_id: str) -> dict[str, Any]:
        p = self._manifest_path(movie_id)
        try:
            return pl.read_parquet(p).row(0, named=True)
        except FileNotFoundError:
            raise KeyError(f"store {self.path}: no movie {movie_id!r}") from None

    # -- writing -------------------------------------------------------------------------------------
    def write_movie(
        self,
        movie_id: str,
        *,
        shots: Any,
        video: Any,
        audio: Any,
        text: Any,
        text_spans: Any,
        meta: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        """Validate and atomically write one movie. `shots` [S,2] (start, end seconds), `video` [S,Dv],
        `audio` [S,Da], `text` [T,Dl] (T may be 0), `text_spans` [T,2]; `meta` JSON-able metadata that
        becomes manifest columns. Rewriting an existing id needs `overwrite=True`."""
        check_movie_id(movie_id)
        meta = check_meta(movie_id, meta)
        try:
            meta_json = json.dumps(meta)
        except (TypeError, ValueError) as e:
            raise StoreError(f"movie {movie_id!r}, field 'meta': not JSON-able ({e})") from e
        arrays = check_movie(
            movie_id,
            shots=shots,
            video=video,
            audio=audio,
            text=text,
            text_spans=text_spans,
            dims=self.dims,
            dtype=self.dtype,
        )
        final = self._manifest_path(movie_id)
        if final.exists() and not overwrite:
            raise StoreError(f"store {self.path}: movie {movie_id!r} exists (pass overwrite=True to rewrite)")
        old_group = self._row(movie_id)["group"] if final.exists() else None

        import zarr  # noqa: PLC0415  (keeps `import lmp_data.store` light)

        token = uuid.uuid4().hex[:12]
        group = f"{movie_id}.{token}"
        tmp_group = self.path / "movies" / f".tmp-{group}"
        try:
            g = zarr.open_group(tmp_group, mode="w")
            for name in ARRAYS:
                a = arrays[name]
                g.create_array(name, data=a, chunks=(_chunk_rows(a.shape[1], a.itemsize), a.shape[1]))
            g.attrs.update({"movie_id": movie_id, "meta": meta_json})
            os.rename(tmp_group, self.path / "movies" / group)
        except BaseException:
            shutil.rmtree(tmp_group, ignore_errors=True)
            raise

        shots_ = arrays["shots"]
        row = {
            "movie_id": movie_id,
            "n_shots": int(shots_.shape[0]),
            "n_tokens": int(arrays["text"].shape[0]),
            "duration": float(shots_[-1, 1] - shots_[0, 0]),
            **meta,
            "group": group,
            "written_at": time.time(),
        }
        tmp_row = self.path / "manifest" / f".tmp-{group}.parquet"
        try:
            try:
                df = pl.DataFrame([row])
            except Exception as e:
                raise StoreError(
                    f"movie {movie_id!r}, field 'meta': cannot become manifest columns ({e})"
                ) from e
            df.write_parquet(tmp_row)
            with open(tmp_row, "rb") as f:
                os.fsync(f.fileno())
            if overwrite:
                os.replace(tmp_row, final)
            else:
                try:
                    os.link(tmp_row, final)  # atomic create-if-absent
                except FileExistsError:
                    raise StoreError(
                        f"store {self.path}: movie {movie_id!r} was written concurrently by another "
                        "process (pass overwrite=True to rewrite)"
                    ) from None
        except BaseException:
            shutil.rmtree(self.path / "movies" / group, ignore_errors=True)
            raise
        finally:
            tmp_row.unlink(missing_ok=True)
        if old_group and old_group != group:
            shutil.rmtree(self.path / "movies" / old_group, ignore_errors=True)

    def delete_movie(self, movie_id: str) -> None:
        """Remove a movie (its manifest row first, so readers stop seeing it at once)."""
        row = self._row(movie_id)
        self._manifest_path(movie_id).unlink(missing_ok=True)
        shutil.rmtree(self.path / "movies" / row["group"], ignore_errors=True)

    def cleanup(self, older_than_s: float = 3600.0) -> list[str]:
        """Remove leftovers of interrupted writes (temporary files and groups no manifest row names)
        older than `older_than_s` seconds (so writes in progress elsewhere are left alone)."""
        referenced = {self._row(m)["group"] for m in self._movie_files()}
        now, removed = time.time(), []
        for sub in ("movies", "manifest"):
            for p in (self.path / sub).iterdir():
                is_tmp = p.name.startswith(".tmp-")
                if (is_tmp or (sub == "movies" and p.name not in referenced)) and (
                    now - p.stat().st_mtime >= older_than_s
                ):
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                    removed.append(f"{sub}/{p.name}")
        return removed

    # -- reading -------------------------------------------------------------------------------------
    def _movie_files(self) -> list[str]:
        return sorted(
            p.name[: -len(".parquet")]
            for p in (self.path / "manifest").iterdir()
            if p.name.endswith(".parquet") and not p.name.startswith(".tmp-")
        )

    def has_movie(self, movie_id: str) -> bool:
        return self._manifest_path(movie_id).exists()

    def movies(self) -> pl.DataFrame:
        """One row per complete movie: movie_id, n_shots, n_tokens, duration, then metadata columns."""
        frames = []
        for m in self._movie_files():
            try:
                frames.append(pl.read_parquet(self.path / "manifest" / f"{m}.parquet"))
            except FileNotFoundError:  # deleted/overwritten while listing
                continue
        if not frames:
            return pl.DataFrame(schema=BASE_COLUMNS)
        df = pl.concat(frames, how="diagonal_relaxed").sort("movie_id")
        meta_cols = [c for c in df.columns if c not in BASE_COLUMNS and c not in ("group", "written_at")]
        return df.select([*BASE_COLUMNS, *meta_cols])

    def meta(self, movie_id: str) -> dict[str, Any]:
        """The `meta` dict a movie was written with (exactly, from JSON)."""
        import zarr  # noqa: PLC0415

        g = zarr.open_group(self.path / "movies" / self._row(movie_id)["group"], mode="r")
        return json.loads(g.attrs["meta"])

    def open_arrays(self, movie_id: str) -> dict[str, Any]:
        """The movie's Zarr arrays (lazy; slice them to read part of a movie)."""
        import zarr  # noqa: PLC0415

        row = self._row(movie_id)
        try:
            g = zarr.open_group(self.path / "movies" / row["group"], mode="r")
            return {name: g[name] for name in ARRAYS}
        except (FileNotFoundError, KeyError) as e:
            raise StoreError(
                f"store {self.path}: movie {movie_id!r}: group {row['group']} unreadable ({e})"
            ) from e

    def read_movie(self, movie_id: str) -> dict[str, np.ndarray]:
        """The movie's arrays as numpy: shots, video, audio, text, text_spans (stored dtypes)."""
        return {name: a[...] for name, a in self.open_arrays(movie_id).items()}

    def load_all(
        self, movie_ids: list[str] | None = None, dtype: str | np.dtype = "float32", threads: int = 4
    ) -> InMemoryStore:
        """Read the given (default: all complete) movies into contiguous in-memory arrays of `dtype`
        (float32 default: windows are then plain slices, no conversion; float16 halves memory)."""
        manifest = self.movies()
        if movie_ids is None:
            movie_ids = manifest["movie_id"].to_list()
        else:
            movie_ids = [check_movie_id(m) for m in movie_ids]
            missing = sorted(set(movie_ids) - set(manifest["movie_id"].to_list()))
            if missing:
                raise KeyError(f"store {self.path}: no movies {missing[:10]}")
            order = {m: i for i, m in enumerate(movie_ids)}
            manifest = manifest.filter(pl.col("movie_id").is_in(movie_ids)).sort(
                pl.col("movie_id").replace_strict(order, return_dtype=pl.Int64)
            )
        ns = manifest["n_shots"].to_numpy().astype(np.int64)
        nt = manifest["n_tokens"].to_numpy().astype(np.int64)
        so = np.concatenate([[0], np.cumsum(ns)]).astype(np.int64)
        to = np.concatenate([[0], np.cumsum(nt)]).astype(np.int64)
        dtype = np.dtype(dtype)
        d = self.dims
        out = {
            "shots": np.empty((so[-1], 2), np.float64),
            "video": np.empty((so[-1], d["video"]), dtype),
            "audio": np.empty((so[-1], d["audio"]), dtype),
            "text": np.empty((to[-1], d["text"]), dtype),
            "text_spans": np.empty((to[-1], 2), np.float64),
        }

        def load(i: int) -> None:
            m = movie_ids[i]
            arrs = self.open_arrays(m)
            for name, a in arrs.items():
                lo, hi = (so[i], so[i + 1]) if name in ("shots", "video", "audio") else (to[i], to[i + 1])
                if a.shape[0] != hi - lo:
                    raise StoreError(
                        f"store {self.path}: movie {m!r}, field {name!r}: {a.shape[0]} rows on disk, "
                        f"manifest says {hi - lo}"
                    )
                out[name][lo:hi] = a[...]
            t0, t1 = to[i], to[i + 1]
            if t1 > t0:  # tokens in time order (stable), see InMemoryStore
                order = np.argsort(out["text_spans"][t0:t1, 0], kind="stable")
                if (order != np.arange(t1 - t0)).any():
                    out["text_spans"][t0:t1] = out["text_spans"][t0:t1][order]
                    out["text"][t0:t1] = out["text"][t0:t1][order]

        with ThreadPoolExecutor(max(1, threads)) as ex:
            list(ex.map(load, range(len(movie_ids))))
        return InMemoryStore(
            movie_ids=list(movie_ids),
            manifest=manifest,
            encoders=self.encoders,
            shot_offsets=so,
            token_offsets=to,
            **out,
        )
