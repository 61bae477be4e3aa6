"""Writing a `FeatureStore` (`lmp_data.store`): atomic movie writes, deletes, and the store's repairs.

`StoreWriter` holds the write side of `FeatureStore` (a mixin: it uses the store's `path`, `dims`,
`dtype`, `arrays`, `_row`, `_manifest_path` and the read side's `_scan`); `StoreCheck` is what `check()`
finds. Why writes are atomic and safe between processes: the layout in `lmp_data.store`'s docstring.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from lmp_data.validate import StoreError, check_meta, check_movie, check_movie_id

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


class StoreWriter:
    """The write side of `FeatureStore`: write and delete movies, find and remove leftovers."""

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

        group = self._write_group(movie_id, arrays, meta_json)
        self._publish_row(movie_id, arrays, meta, group, final, overwrite)
        if old_group and old_group != group:
            shutil.rmtree(self.path / "movies" / old_group, ignore_errors=True)

    def _write_group(self, movie_id: str, arrays: dict[str, Any], meta_json: str) -> str:
        """Write the movie's arrays to a new Zarr group `movies/<id>.<token>` (built under `.tmp-`, then
        renamed into place); returns the group's name."""
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
        return group

    def _publish_row(
        self,
        movie_id: str,
        arrays: dict[str, Any],
        meta: dict[str, Any],
        group: str,
        final: Path,
        overwrite: bool,
    ) -> None:
        """Publish the movie's manifest row naming `group` (atomic: replace with `overwrite`, else
        create-if-absent); on failure the new group is removed."""
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
