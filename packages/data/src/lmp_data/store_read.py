"""Reading a `FeatureStore` (`lmp_data.store`): its manifest, one movie, or many movies into memory.

`StoreReader` holds the read side of `FeatureStore` (a mixin: it uses the store's `path`, `dims`,
`encoders`, `arrays`, `_row` and `_manifest_path`); `InMemoryStore` is what `load_all` returns, the input
of the window loader. Readers see only movies whose manifest row is published (`lmp_data.store`'s docstring).
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from lmp_data.validate import MODALITIES, StoreError, check_movie_id

log = logging.getLogger("lmp_data.store")  # the store's warnings keep the logger they always had

SHOT_ARRAYS = ("shots", "video", "audio")
"""Arrays with one row per shot (the others have one row per language token)."""


BASE_COLUMNS = {"movie_id": pl.String, "n_shots": pl.Int64, "n_tokens": pl.Int64, "duration": pl.Float64}


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


class StoreReader:
    """The read side of `FeatureStore`: list the movies, read one movie or load many into memory."""

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
