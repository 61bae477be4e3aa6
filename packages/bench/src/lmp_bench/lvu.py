"""The LVU benchmark's nine tasks and a reader for its official label files.

The LVU 1.0 release ships `{task}/{train,val,test}.csv` that are *space*-separated with a header
despite the extension. Classification rows are `class_id class_name youtube_id imdb_id`; like ratio
rows `like_count dislike_count youtube_id imdb_id`; view count rows `view_count youtube_id imdb_id`.
Every column is read as a string first (YouTube ids such as `-5Rohhkg-7k` or all digits, `\\N`
writer names) and converted explicitly, so a bad row is reported with its file and line.

Regression targets are normalised exactly like LVU's own code:
`view_count -> log(views) - 11.76425435683139` and
`like_ratio -> 10 * like / (like + dislike) - 9.138220535629456`.

Declared class counts are kept even where the files never use some ids (director uses 8 of 10,
writer 7 of 10, and writer's class 0 is `\\N`, "unknown", kept as a class as LVU does): the probe
has one output per declared class, and the metrics only average over classes that occur.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

SPLITS = ("train", "val", "test")
GROUPS = ("content", "metadata", "user")
VIEW_COUNT_OFFSET = 11.76425435683139
LIKE_RATIO_OFFSET = 9.138220535629456


@dataclass(frozen=True)
class TaskSpec:
    """One LVU task: how its label is read and scored.

    kind: "classification" (top-1 accuracy, higher is better) or "regression" (MSE, lower is better).
    n_classes: the declared class count (classification only); the probe's output width.
    group: "content", "metadata" or "user" (the paper's three averages).
    title: the column name in the paper's Table 4.
    """

    name: str
    kind: Literal["classification", "regression"]
    group: Literal["content", "metadata", "user"]
    title: str
    n_classes: int = 0

    @property
    def higher_is_better(self) -> bool:
        return self.kind == "classification"

    @property
    def metric(self) -> str:
        return "top1" if self.kind == "classification" else "mse"


TASKS: dict[str, TaskSpec] = {
    s.name: s
    for s in (
        TaskSpec("relationship", "classification", "content", "Relationship", 4),
        TaskSpec("way_speaking", "classification", "content", "Way-Speaking", 5),
        TaskSpec("scene", "classification", "content", "Scene", 6),
        TaskSpec("director", "classification", "metadata", "Director", 10),
        TaskSpec("genre", "classification", "metadata", "Genre", 4),
        TaskSpec("writer", "classification", "metadata", "Writer", 10),
        TaskSpec("year", "classification", "metadata", "Year", 9),
        TaskSpec("like_ratio", "regression", "user", "Like", 0),
        TaskSpec("view_count", "regression", "user", "Views", 0),
    )
}

_HEADERS = {
    "classification": ["class_id", "class_name", "youtube_id", "imdb_id"],
    "like_ratio": ["like_count", "dislike_count", "youtube_id", "imdb_id"],
    "view_count": ["view_count", "youtube_id", "imdb_id"],
}


class LVUFormatError(ValueError):
    """A label file that does not have LVU's format; the message names the file and line."""


def task_spec(task: str) -> TaskSpec:
    if task not in TASKS:
        raise KeyError(f"unknown LVU task {task!r}; expected one of {sorted(TASKS)}")
    return TASKS[task]


def parse_tasks(tasks: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """`None`/"all" -> all nine tasks in the paper's order; "a,b" or ["a", "b"] -> validated names."""
    if tasks is None or tasks == "all":
        return list(TASKS)
    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    for t in names:
        task_spec(t)
    return [t for t in TASKS if t in names]


def _header(spec: TaskSpec) -> list[str]:
    return _HEADERS["classification"] if spec.kind == "classification" else _HEADERS[spec.name]


def _read_split(path: Path, spec: TaskSpec) -> pl.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"LVU label file not found: {path} (expected {spec.name}/<split>.csv)")
    expected = _header(spec)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise LVUFormatError(
            f"{path}:{line}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
            "LVU label files are UTF-8"
        ) from None
    if not lines or lines[0].split() != expected:
        got = lines[0].split() if lines else []
        raise LVUFormatError(f"{path}: header {got} is not LVU's space-separated {expected}")
    rows, linenos = [], []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != len(expected):
            raise LVUFormatError(
                f"{path}:{lineno}: expected {len(expected)} space-separated fields {expected}, got {len(fields)}"
            )
        rows.append(fields)
        linenos.append(lineno)
    raw = pl.DataFrame(rows, schema=expected, orient="row")
    return raw.with_columns(pl.Series(LINE, linenos, dtype=pl.Int64))


LINE = "_line"
"""Column of `_read_split`'s frame: the row's line number in its file (blank lines counted), for errors."""


def _where(raw: pl.DataFrame, i: int, path: Path) -> str:
    """`path:line` of row `i` of a frame read by `_read_split`."""
    return f"{path}:{raw[LINE][i]}"


def _to_int(raw: pl.DataFrame, col: str, path: Path) -> pl.Series:
    out = raw[col].cast(pl.Int64, strict=False)
    bad = out.is_null() & raw[col].is_not_null()
    if bad.any():
        i = int(bad.arg_max())
        raise LVUFormatError(f"{_where(raw, i, path)}: {col} {raw[col][i]!r} is not an integer")
    return out


def _labels(raw: pl.DataFrame, spec: TaskSpec, path: Path) -> pl.DataFrame:
    if spec.kind == "classification":
        cid = _to_int(raw, "class_id", path)
        bad = (cid < 0) | (cid >= spec.n_classes)
        if bad.any():
            i = int(bad.arg_max())
            raise LVUFormatError(
                f"{_where(raw, i, path)}: class_id {cid[i]} outside [0, {spec.n_classes}) declared for "
                f"{spec.name}"
            )
        return raw.with_columns(label=cid, class_id=cid)
    if spec.name == "like_ratio":
        like, dislike = _to_int(raw, "like_count", path), _to_int(raw, "dislike_count", path)
        total = like + dislike
        bad = (total <= 0) | (like < 0) | (dislike < 0)
        if bad.any():
            i = int(bad.arg_max())
            raise LVUFormatError(
                f"{_where(raw, i, path)}: like/dislike counts {like[i]}/{dislike[i]} give no ratio"
            )
        label = 10.0 * like.cast(pl.Float64) / total.cast(pl.Float64) - LIKE_RATIO_OFFSET
        return raw.with_columns(label=label, like_count=like, dislike_count=dislike)
    views = _to_int(raw, "view_count", path)
    bad = views <= 0
    if bad.any():
        i = int(bad.arg_max())
        raise LVUFormatError(f"{_where(raw, i, path)}: view_count {views[i]} must be positive (log is taken)")
    label = views.cast(pl.Float64).log(math.e) - VIEW_COUNT_OFFSET
    return raw.with_columns(label=label, view_count=views)


def load_task(root: str | Path, task: str, splits: tuple[str, ...] = SPLITS) -> pl.DataFrame:
    """Read one LVU task's label files under `root/{task}/`.

    Returns a DataFrame with `split, clip_id, imdb_id, label` (label: the class id, Int64, for
    classification; the normalised Float64 target for regression) followed by the task's raw columns
    (`class_id, class_name` or `like_count, dislike_count` or `view_count`). `clip_id` is LVU's
    YouTube id, which is the clip's movie id in a clip store.
    """
    spec = task_spec(task)
    frames = []
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        path = Path(root) / task / f"{split}.csv"
        raw = _read_split(path, spec)
        frames.append(_labels(raw, spec, path).with_columns(split=pl.lit(split)))
    df = pl.concat(frames, how="vertical")
    raw_cols = [c for c in _header(spec) if c not in ("youtube_id", "imdb_id")]
    df = df.rename({"youtube_id": "clip_id"}).select("split", "clip_id", "imdb_id", "label", *raw_cols)
    dup = df["clip_id"].is_duplicated()
    if dup.any():
        raise LVUFormatError(
            f"{Path(root) / task}: clip {df['clip_id'][int(dup.arg_max())]!r} is listed twice"
        )
    return df
