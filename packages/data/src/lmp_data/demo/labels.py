"""LVU-format label files for the demo's evaluation clips.

Exactly the format of the public LVU 1.0 release (`lvu_1.0/{task}/{train,val,test}.csv`): despite the
`.csv` name, space-separated with a header line, no quoting, one clip per row, `\\n` line ends.

| task kind      | tasks                                                             | columns                                        |
|----------------|-------------------------------------------------------------------|------------------------------------------------|
| classification | relationship, way_speaking, scene, director, writer, year, genre | `class_id class_name youtube_id imdb_id`       |
| like ratio     | like_ratio                                                        | `like_count dislike_count youtube_id imdb_id`  |
| views          | view_count                                                        | `view_count youtube_id imdb_id`                |

The demo's clip id (`clip00042`, a movie id in the evaluation store) stands where LVU has the YouTube id.
All declared classes are used (relationship 4, way_speaking 5, scene 6, director 10, writer 10, year 9,
genre 4); writer class 0 is named `\\N` (unknown), as in LVU. Rows are sorted by class id then clip id
(classification) or as strings (engagement), as in the release. Splits are disjoint by source movie.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .generate import CLASSES, Demo

CLASSIFICATION_TASKS = ("relationship", "way_speaking", "scene", "director", "writer", "year", "genre")
REGRESSION_TASKS = ("like_ratio", "view_count")
TASKS = CLASSIFICATION_TASKS + REGRESSION_TASKS
N_CLASSES = {
    "relationship": 4,
    "way_speaking": 5,
    "scene": 6,
    "director": 10,
    "writer": 10,
    "year": 9,
    "genre": 4,
}
HEADERS = {
    **{t: "class_id class_name youtube_id imdb_id" for t in CLASSIFICATION_TASKS},
    "like_ratio": "like_count dislike_count youtube_id imdb_id",
    "view_count": "view_count youtube_id imdb_id",
}
SPLITS = ("train", "val", "test")


def class_names(demo: Demo, task: str) -> list[str]:
    """The `class_name` column's values by class id."""
    if task in ("director", "writer"):
        return demo.people[task]
    return CLASSES[task]


def select_clips(demo: Demo) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per task and split, the labelled clips (few, as in LVU): a seeded sample of at most
    `labels_per_split` clips of that split. Returns the clip-table rows."""
    cfg = demo.config
    by_split = {s: [r for r in demo.clip_table if r["split"] == s] for s in SPLITS}
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for ti, task in enumerate(TASKS):
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x1AB, ti]))
        out[task] = {}
        for split, n in zip(SPLITS, cfg.labels_per_split):
            rows = by_split[split]
            idx = np.sort(rng.choice(len(rows), size=min(n, len(rows)), replace=False))
            out[task][split] = [rows[i] for i in idx]
    return out


def format_rows(demo: Demo, task: str, rows: list[dict[str, Any]]) -> list[str]:
    """The data lines of one label file (without header), in the release's order."""
    if task in CLASSIFICATION_TASKS:
        names = class_names(demo, task)
        keyed = sorted((r[task], r["clip_id"], r["imdb_id"]) for r in rows)
        return [f"{c} {names[c]} {clip} {imdb}" for c, clip, imdb in keyed]
    if task == "like_ratio":
        lines = [f"{r['like_count']} {r['dislike_count']} {r['clip_id']} {r['imdb_id']}" for r in rows]
    else:
        lines = [f"{r['view_count']} {r['clip_id']} {r['imdb_id']}" for r in rows]
    return sorted(lines)


def write_lvu(demo: Demo, lvu_dir: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Write `lvu_dir/{task}/{split}.csv` for all nine tasks; returns the row counts."""
    lvu_dir = Path(lvu_dir)
    counts: dict[str, dict[str, int]] = {}
    for task, splits in select_clips(demo).items():
        (lvu_dir / task).mkdir(parents=True, exist_ok=True)
        counts[task] = {}
        for split, rows in splits.items():
            lines = [HEADERS[task], *format_rows(demo, task, rows)]
            (lvu_dir / task / f"{split}.csv").write_text("\n".join(lines) + "\n", encoding="ascii")
            counts[task][split] = len(rows)
    return counts
