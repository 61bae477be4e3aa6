"""`load_task` on the official LVU 1.0 label files: row counts, class counts, normalisation."""

import math
from pathlib import Path

import polars as pl
import pytest

from lmp_bench.lvu import (
    LIKE_RATIO_OFFSET,
    TASKS,
    VIEW_COUNT_OFFSET,
    LVUFormatError,
    load_task,
    parse_tasks,
)

LVU = Path("/work/shared/data/lvu_1.0")
if not LVU.is_dir():  # the shared checkout sits next to the repo
    LVU = Path(__file__).resolve().parents[3] / "shared" / "data" / "lvu_1.0"
needs_lvu = pytest.mark.skipif(not LVU.is_dir(), reason="LVU 1.0 label files not available")

# (train, val, test) data rows per task, from `wc -l` minus the header line.
ROWS = {
    "relationship": (149, 53, 42),
    "way_speaking": (939, 205, 201),
    "scene": (557, 120, 86),
    "director": (680, 163, 107),
    "genre": (3063, 597, 647),
    "writer": (769, 174, 168),
    "year": (770, 165, 143),
    "like_ratio": (658, 142, 140),
    "view_count": (577, 124, 126),
}
USED_CLASSES = {
    "relationship": 4,
    "way_speaking": 5,
    "scene": 6,
    "director": 8,
    "genre": 4,
    "writer": 7,
    "year": 9,
}


@needs_lvu
@pytest.mark.parametrize("task", list(TASKS))
def test_row_counts_and_columns(task):
    df = load_task(LVU, task)
    counts = dict(df.group_by("split").len().iter_rows())
    assert (counts["train"], counts["val"], counts["test"]) == ROWS[task]
    assert df.columns[:4] == ["split", "clip_id", "imdb_id", "label"]
    assert df["clip_id"].dtype == pl.String and df["clip_id"].n_unique() == df.height
    assert df["imdb_id"].str.starts_with("tt").all()


@needs_lvu
@pytest.mark.parametrize("task", [t for t, s in TASKS.items() if s.kind == "classification"])
def test_class_counts(task):
    spec = TASKS[task]
    df = load_task(LVU, task)
    assert df["label"].dtype == pl.Int64
    assert df["label"].min() >= 0 and df["label"].max() < spec.n_classes
    assert df["label"].n_unique() == USED_CLASSES[task]
    # class_name is kept verbatim (writer's unknown is the literal \N, years stay strings)
    assert df["class_name"].dtype == pl.String


def test_declared_class_counts():
    declared = {t: s.n_classes for t, s in TASKS.items() if s.kind == "classification"}
    assert declared == {
        "relationship": 4,
        "way_speaking": 5,
        "scene": 6,
        "director": 10,
        "genre": 4,
        "writer": 10,
        "year": 9,
    }
    assert {t: s.group for t, s in TASKS.items()} == {
        "relationship": "content",
        "way_speaking": "content",
        "scene": "content",
        "director": "metadata",
        "genre": "metadata",
        "writer": "metadata",
        "year": "metadata",
        "like_ratio": "user",
        "view_count": "user",
    }


@needs_lvu
def test_tricky_values_read_as_strings():
    writer = load_task(LVU, "writer")
    assert writer.filter(pl.col("label") == 0)["class_name"].unique().to_list() == ["\\N"]
    genre = load_task(LVU, "genre")
    assert "-5Rohhkg-7k" in genre["clip_id"].to_list()  # YouTube ids may start with '-'


@needs_lvu
def test_regression_normalisation():
    views = load_task(LVU, "view_count")
    first = views.filter(pl.col("clip_id") == "gFKba_Esjt0")
    assert first["view_count"][0] == 100124
    assert first["label"][0] == pytest.approx(math.log(100124) - VIEW_COUNT_OFFSET)
    like = load_task(LVU, "like_ratio")
    row = like.filter(pl.col("clip_id") == "29VjYkPPY2s")
    assert (row["like_count"][0], row["dislike_count"][0]) == (100061, 3801)
    assert row["label"][0] == pytest.approx(10 * 100061 / (100061 + 3801) - LIKE_RATIO_OFFSET)
    # LVU's offsets are the dataset means: the normalised targets are centred
    assert abs(views["label"].mean()) < 0.05 and abs(like["label"].mean()) < 0.05


def test_bad_files_name_file_and_line(tmp_path):
    (tmp_path / "scene").mkdir()
    with pytest.raises(FileNotFoundError, match="scene"):
        load_task(tmp_path, "scene")
    header = "class_id class_name youtube_id imdb_id\n"
    for split in ("train", "val", "test"):
        (tmp_path / "scene" / f"{split}.csv").write_text(header + "0 office abc tt1\n")
    (tmp_path / "scene" / "val.csv").write_text(header + "0 office abc2 tt1\n7 office x tt2\n")
    with pytest.raises(LVUFormatError, match=r"val\.csv:3: class_id 7"):
        load_task(tmp_path, "scene")
    (tmp_path / "scene" / "val.csv").write_text("class_id,class_name,youtube_id,imdb_id\n0,a,b,c\n")
    with pytest.raises(LVUFormatError, match=r"val\.csv: header"):
        load_task(tmp_path, "scene")
    (tmp_path / "scene" / "val.csv").write_text(header + "zero office abc2 tt1\n")
    with pytest.raises(LVUFormatError, match=r"val\.csv:2: class_id 'zero'"):
        load_task(tmp_path, "scene")
    (tmp_path / "scene" / "val.csv").write_text(header + "0 office abc tt1\n")
    with pytest.raises(LVUFormatError, match="listed twice"):
        load_task(tmp_path, "scene")


def test_parse_tasks():
    assert parse_tasks(None) == list(TASKS)
    assert parse_tasks("year,scene") == ["scene", "year"]
    with pytest.raises(KeyError, match="unknown LVU task 'plot'"):
        parse_tasks("plot")
