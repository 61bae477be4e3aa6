"""Reading MAD's release files (`lmp_data.mad`): annotations, shot boundaries and HDF5 feature files.

Each reader checks its file and raises a `MadError` whose one-line message names the file and the movie,
annotation or field; the formats are listed in `lmp_data.mad`'s docstring.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MAD_FPS = 5.0
"""MAD's frame rate (its frame feature files are `*_5fps.h5`)."""
SPLITS = ("train", "val", "test")


class MadError(ValueError):
    """Bad MAD input; the message names the file and the movie / annotation / field."""


@dataclass(frozen=True)
class Sentence:
    """One annotation: its id, the file it came from, its span (seconds) and text."""

    ann_id: str
    source: str
    start: float
    end: float
    text: str


@dataclass
class Annotations:
    """The sentences of every movie, from one or more MAD annotation files."""

    sentences: dict[str, list[Sentence]] = field(default_factory=dict)
    split: dict[str, str] = field(default_factory=dict)
    duration: dict[str, float] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)
    """One line per annotation that names no usable movie (it cannot be charged to a movie)."""
    movie_errors: dict[str, str] = field(default_factory=dict)
    """movie id -> the first bad annotation of that movie (the movie fails with it)."""


def split_of(path: Path) -> str:
    """The split an annotation file holds, from its name: MAD_train.json -> "train" (else the stem)."""
    stem = path.stem
    for s in SPLITS:
        if re.search(rf"(^|[_\-.]){s}($|[_\-.])", stem, re.IGNORECASE):
            return s
    return stem


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    return v if np.isfinite(v) else None


def read_annotations(paths: Iterable[str | Path]) -> Annotations:
    """Read MAD annotation files (see the module docstring). A file that cannot be read, is not JSON or
    not a JSON object raises `MadError` naming it; a bad entry is recorded (`bad`, `movie_errors`)."""
    out = Annotations()
    for path in map(Path, paths):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MadError(f"{path}: annotation file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise MadError(f"{path}: cannot read the annotation file ({e})") from e
        except json.JSONDecodeError as e:
            raise MadError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(data, dict):
            raise MadError(
                f"{path}: expected MAD's JSON object of annotation id -> {{movie, sentence, "
                f"ext_timestamps, movie_duration}}, got a {type(data).__name__}"
            )
        split = split_of(path)
        for ann_id, entry in data.items():
            where = f"{path.name}: annotation {ann_id!r}"
            movie = entry.get("movie") if isinstance(entry, dict) else None
            if not isinstance(movie, str) or not movie:
                what = "not an object" if not isinstance(entry, dict) else f"field 'movie' is {movie!r}"
                out.bad.append(f"{where}: {what} (expected a movie id string)")
                continue
            try:
                out.sentences.setdefault(movie, []).append(_sentence(where, str(ann_id), path.name, entry))
            except MadError as e:
                out.movie_errors.setdefault(movie, str(e))
                continue
            prev = out.split.setdefault(movie, split)
            if prev != split:
                out.movie_errors.setdefault(
                    movie, f"{where}: movie {movie!r} is in split {split!r} here and {prev!r} in another file"
                )
            dur = _number(entry.get("movie_duration"))
            if dur is not None:
                out.duration.setdefault(movie, dur)
    return out


def _sentence(where: str, ann_id: str, source: str, entry: dict) -> Sentence:
    key = "ext_timestamps" if "ext_timestamps" in entry else "timestamps"
    ts = entry.get(key)
    if not isinstance(ts, list | tuple) or len(ts) != 2 or any(_number(t) is None for t in ts):
        raise MadError(f"{where}: field {key!r} is {ts!r} (expected [start, end] in seconds)")
    text = entry.get("sentence")
    if not isinstance(text, str):
        raise MadError(f"{where}: field 'sentence' is {text!r} (expected a string)")
    return Sentence(ann_id, source, float(ts[0]), float(ts[1]), " ".join(text.split()))


def read_boundaries(path: str | Path) -> dict[str, np.ndarray]:
    """A boundaries file: JSON object movie id -> list of shot start times in seconds."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MadError(f"{path}: boundaries file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MadError(f"{path}: not a readable JSON boundaries file ({e})") from e
    if not isinstance(data, dict):
        raise MadError(f"{path}: expected a JSON object movie id -> [shot start seconds, ...]")
    out = {}
    for movie, times in data.items():
        if not isinstance(times, list) or any(_number(t) is None for t in times):
            raise MadError(f"{path}: movie {movie!r}: expected a list of shot start times in seconds")
        out[str(movie)] = np.asarray(times, np.float64)
    return out


def h5_file(path: str | Path, what: str):
    """Open an HDF5 file read-only; `MadError` naming it if that fails."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise MadError(f"{path}: {what} not found")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise MadError(f"{path}: not a readable HDF5 {what} ({e})") from e


def h5_array(f, key: str, path: Path, what: str) -> np.ndarray:
    """Dataset `key` of an open HDF5 file as float32; `MadError` naming the file and key."""
    import h5py

    if key not in f:
        raise MadError(f"{path}: no dataset {key!r} ({what})")
    obj = f[key]
    if not isinstance(obj, h5py.Dataset):
        raise MadError(f"{path}: {key!r} is a {type(obj).__name__}, not a dataset ({what})")
    try:
        arr = np.asarray(obj[()], dtype=np.float32)
    except (OSError, TypeError, ValueError) as e:
        raise MadError(f"{path}: dataset {key!r} unreadable ({what}: {e})") from e
    return arr
