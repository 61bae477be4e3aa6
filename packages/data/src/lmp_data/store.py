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
"""

from __future__ import annotations

import json
import logging
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

from lmp_data.files import atomic_write
from lmp_data.validate import (
    MODALITIES,
    StoreError,
    check_encoders,
    check_meta,
    check_movie,
    check_movie_id,
)

log = logging.getLogger(__name__)

FORMAT = "lmp-feature-store"
VERSION = 1
ARRAYS = ("shots", "video", "audio", "text", "text_spans")
SHOT_ARRAYS = ("shots", "video", "audio")
"""Arrays with one row per shot (the others have one row per language token)."""


def store_arrays(modalities: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The arrays a store of these modalities keeps per movie (`text_spans` goes with `text`)."""
    have = set(modalities) | {"shots"} | ({"text_spans"} if "text" in modalities else set())
    return tuple(a for a in ARRAYS if a in have)


BASE_COLUMNS = {"movie_id": pl.String, "n_shots": pl.Int64, "n_tokens": pl.Int64, "duration": pl.Float64}
CHUNK_BYTES = 1 << 20
"""Target bytes per Zarr chunk (rows x dim): big enough for fast whole-movie loads, small for windows."""


def _chunk_rows(dim: int, itemsize: int) -> int:
    return int(max(64, min(65536, CHUNK_BYTES // max(1, dim * itemsize))))


def _group_id(group: str) -> str:
    """The movie id of a group folder name `<id>.<token>`."""
    return group.rsplit(".", 1)[0]


def _age(p: Path, now: float) -> float:
    try:
        return now - p.stat().st_mtime
    except FileNotFoundError:
        return -1.0


def _remove(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


@dataclass
class StoreCheck:
    """What `FeatureStore.check()` found; `ok` when nothing."""

    unreadable_rows: dict[str, str]
    """movie id -> why its manifest row cannot be read (the movie is not listed)."""
    missing_groups: dict[str, str]
    """movie id -> the group its manifest row names, which does not exist (the movie is not listed)."""
    orphan_groups: list[str]
    """Groups under movies/ that no manifest row names (`repair()` removes them)."""
    unreadable_groups: list[str]
    """Unreferenced groups of a movie whose manifest row is unreadable (kept: they may be its data)."""
    temporary: list[str]
    """`.tmp-*` leftovers of writes (in progress, or interrupted: `cleanup()` removes old ones)."""

    @property
    def ok(self) -> bool:
        return not (
            self.unreadable_rows or self.missing_groups or self.orphan_groups or self.unreadable_groups
        )

    def lines(self) -> list[str]:
        out = [f"unreadable manifest row: {m}: {why}" for m, why in self.unreadable_rows.items()]
        out += [
            f"missing group: movie {m!r}: movies/{g} does not exist" for m, g in self.missing_groups.items()
        ]
        out += [f"orphan group: movies/{g} (no manifest row names it)" for g in self.orphan_groups]
        out += [f"unreferenced group of an unreadable movie: movies/{g}" for g in self.unreadable_groups]
        out += [f"temporary: {t}" for t in self.temporary]
        return out


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
    def modalities(self) -> tuple[str, ...]:
        """The modalities the store has, in `MODALITIES` order (a missing one is zero-width here)."""
        return tuple(m for m in MODALITIES if m in self.encoders)

    @property
    def dims(self) -> dict[str, int]:
        """Feature width of each modality the store has (a missing modality is absent)."""
        return {m: int(self.encoders[m]["dim"]) for m in self.modalities}

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

    # -- writing -------------------------------------------------------------------------------------
    def write_movie(
        self,
        movie_id: str,
        *,
        shots: Any,
        video: Any,
        audio: Any = None,
        text: Any = None,
        text_spans: Any = None,
        meta: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        """Validate and atomically write one movie. `shots` [S,2] (start, end seconds), `video` [S,Dv],
        `audio` [S,Da], `text` [T,Dl] (T may be 0), `text_spans` [T,2]; `meta` JSON-able metadata that
        becomes manifest columns. Rewriting an existing id needs `overwrite=True`. A modality the store
        does not have is left at None (giving it is an error naming the field)."""
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
        try:
            old_group = self._row(movie_id)["group"] if final.exists() else None
        except StoreError:  # an unreadable manifest row is replaced; its group is left to `check()`
            old_group = None

        import zarr  # noqa: PLC0415  (keeps `import lmp_data.store` light)

        token = uuid.uuid4().hex[:12]
        group = f"{movie_id}.{token}"
        tmp_group = self.path / "movies" / f".tmp-{group}"
        try:
            g = zarr.open_group(tmp_group, mode="w")
            for name in self.arrays:
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
            "n_tokens": int(arrays["text"].shape[0]) if "text" in arrays else 0,
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
        rows, unreadable = self._scan()
        referenced = {r["group"] for r in rows.values()}
        now, removed = time.time(), []
        for sub in ("movies", "manifest"):
            for p in (self.path / sub).iterdir():
                is_tmp = p.name.startswith(".tmp-")
                unref = sub == "movies" and p.name not in referenced and _group_id(p.name) not in unreadable
                if (is_tmp or unref) and _age(p, now) >= older_than_s:
                    _remove(p)
                    removed.append(f"{sub}/{p.name}")
        return removed

    def check(self) -> StoreCheck:
        """Every inconsistency of the store (read-only): unreadable manifest rows, manifest rows whose
        group is missing, orphan groups (no manifest row names them) and temporary leftovers."""
        rows, unreadable = self._scan()
        referenced = {r["group"] for r in rows.values()}
        missing = {m: r["group"] for m, r in rows.items() if not (self.path / "movies" / r["group"]).is_dir()}
        orphans, kept, temp = [], [], []
        for sub in ("movies", "manifest"):
            for p in sorted((self.path / sub).iterdir()):
                if p.name.startswith(".tmp-"):
                    temp.append(f"{sub}/{p.name}")
                elif sub == "movies" and p.name not in referenced:
                    # a group of a movie whose manifest row is unreadable may be its data: kept, listed
                    (kept if _group_id(p.name) in unreadable else orphans).append(p.name)
        return StoreCheck(
            dict(sorted(unreadable.items())), dict(sorted(missing.items())), orphans, kept, temp
        )

    def repair(self, older_than_s: float = 60.0) -> list[str]:
        """Remove orphan groups (Zarr groups no manifest row names, e.g. left by racing overwrites) older
        than `older_than_s` seconds (a group is renamed into place just before its manifest row is
        published). Nothing else is touched: unreadable manifest rows and rows whose group is missing
        are only reported by `check()`. Returns the removed `movies/<group>` names."""
        now, removed = time.time(), []
        for name in self.check().orphan_groups:
            p = self.path / "movies" / name
            if _age(p, now) >= older_than_s:
                _remove(p)
                removed.append(f"movies/{name}")
        return removed

    # -- reading -------------------------------------------------------------------------------------
    def _movie_files(self) -> list[str]:
        return sorted(
            p.name[: -len(".parquet")]
            for p in (self.path / "manifest").iterdir()
            if p.name.endswith(".parquet") and not p.name.startswith(".tmp-")
        )

    def _scan(self, frames: list[pl.DataFrame] | None = None) -> tuple[dict[str, dict], dict[str, str]]:
        """Read every manifest row: ({movie_id: row}, {movie_id: why unreadable}); rows removed while
        listing are skipped. The DataFrames read are appended to `frames` when given."""
        rows: dict[str, dict] = {}
        unreadable: dict[str, str] = {}
        for m in self._movie_files():
            p = self.path / "manifest" / f"{m}.parquet"
            try:
                df = pl.read_parquet(p)
                row = df.row(0, named=True)
                if row.get("movie_id") != m or not isinstance(row.get("group"), str) or not row["group"]:
                    raise StoreError(f"movie_id {row.get('movie_id')!r}, group {row.get('group')!r}")
            except FileNotFoundError:  # deleted/overwritten while listing
                continue
            except Exception as e:  # truncated / corrupt Parquet
                unreadable[m] = f"manifest row manifest/{m}.parquet unreadable ({type(e).__name__}: {e})"
                continue
            rows[m] = row
            if frames is not None:
                frames.append(df)
        return rows, unreadable

    def has_movie(self, movie_id: str) -> bool:
        return self._manifest_path(movie_id).exists()

    def movies(self) -> pl.DataFrame:
        """One row per complete movie: movie_id, n_shots, n_tokens, duration, then metadata columns.

        A manifest row that cannot be read, or whose group is missing, costs that movie only: it is left
        out with a warning naming it (`check()` lists every such problem)."""
        frames = []
        rows, unreadable = self._scan(frames)
        for m, err in unreadable.items():
            log.warning("store %s: movie %r left out: %s", self.path, m, err)
        for m, row in rows.items():
            if not (self.path / "movies" / row["group"]).is_dir():
                log.warning(
                    "store %s: movie %r left out: its group movies/%s is missing", self.path, m, row["group"]
                )
                frames = [f for f in frames if f["movie_id"][0] != m]
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
            return {name: g[name] for name in self.arrays}
        except (FileNotFoundError, KeyError) as e:
            raise StoreError(
                f"store {self.path}: movie {movie_id!r}: group {row['group']} unreadable ({e})"
            ) from e

    def read_movie(self, movie_id: str) -> dict[str, np.ndarray]:
        """The movie's arrays as numpy: shots, video, audio, text, text_spans (stored dtypes; only those of
        the store's modalities)."""
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
        # a missing modality is zero-width (language: no tokens at all), see the module docstring
        out = {
            "shots": np.empty((so[-1], 2), np.float64),
            "video": np.empty((so[-1], d["video"]), dtype),
            "audio": np.empty((so[-1], d.get("audio", 0)), dtype),
            "text": np.empty((to[-1], d.get("text", 0)), dtype),
            "text_spans": np.empty((to[-1], 2), np.float64),
        }

        def load(i: int) -> None:
            m = movie_ids[i]
            arrs = self.open_arrays(m)
            for name, a in arrs.items():
                lo, hi = (so[i], so[i + 1]) if name in SHOT_ARRAYS else (to[i], to[i + 1])
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
