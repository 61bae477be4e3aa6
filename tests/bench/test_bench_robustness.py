"""Bad input to `lmp-bench` (issue 12): label-file line numbers, non-UTF-8 labels, partial group averages,
one-line CLI errors for an unknown task, a broken export, an unknown MLflow run and an empty store."""

import json

import polars as pl
import pytest
import torch

from lmp_bench.cli import main
from lmp_bench.lvu import LVUFormatError, load_task
from lmp_bench.results import RUN_SCHEMA, LVUResult

HEADER = "class_id class_name youtube_id imdb_id"


def write_genre(root, test_text: str) -> None:
    (root / "genre").mkdir(parents=True)
    for split in ("train", "val"):
        (root / "genre" / f"{split}.csv").write_text(f"{HEADER}\n0 g0 a{split} tt1\n")
    (root / "genre" / "test.csv").write_text(test_text)


@pytest.mark.parametrize(
    "rows, line, msg",
    [
        ("0 g0 c1 tt1\n\n\n1 g1 c2 tt2\nx g2 c3 tt3\n", 6, "class_id 'x' is not an integer"),
        ("\n0 g0 c1 tt1\n\n7 g7 c2 tt2\n", 5, "class_id 7 outside [0, 4)"),
    ],
)
def test_label_errors_name_the_real_line_after_blank_lines(tmp_path, rows, line, msg):
    write_genre(tmp_path, f"{HEADER}\n{rows}")
    with pytest.raises(LVUFormatError) as e:
        load_task(tmp_path, "genre")
    assert f"test.csv:{line}: " in str(e.value) and msg in str(e.value), str(e.value)


def test_view_count_line_numbers(tmp_path):
    (tmp_path / "view_count").mkdir()
    for split in ("train", "val"):
        (tmp_path / "view_count" / f"{split}.csv").write_text(
            f"view_count youtube_id imdb_id\n5 a{split} tt1\n"
        )
    (tmp_path / "view_count" / "test.csv").write_text(
        "view_count youtube_id imdb_id\n\n5 c1 tt1\n\n0 c2 tt2\n"
    )
    with pytest.raises(LVUFormatError, match=r"test\.csv:5: view_count 0 must be positive"):
        load_task(tmp_path, "view_count")


def test_non_utf8_label_file_is_named(tmp_path):
    write_genre(tmp_path, HEADER + "\n0 g0 c1 tt1\n0 caf\xe9 c2 tt2\n")
    (tmp_path / "genre" / "test.csv").write_bytes(
        (HEADER + "\n0 g0 c1 tt1\n0 caf\xe9 c2 tt2\n").encode("latin-1")
    )
    with pytest.raises(LVUFormatError, match=r"genre/test\.csv:3: not UTF-8"):
        load_task(tmp_path, "genre")


def test_partial_group_average_says_which_tasks(tmp_path):
    rows = [
        {"method": "m", "features": "v", "task": t, "group": g, "metric": "top1", "seed": 0, "value": v}
        for t, g, v in (
            ("relationship", "content", 50.0),
            ("scene", "content", 40.0),
            ("genre", "metadata", 30.0),
        )
    ]
    rows += [{"method": "m", "features": "v", "task": t, "group": "metadata", "metric": "top1", "seed": 0,
              "value": 20.0} for t in ("director", "writer", "year")]  # fmt: skip
    res = LVUResult(pl.DataFrame(rows, schema=RUN_SCHEMA))
    text = res.format()
    assert (
        "note: Content avg (Content ↑) averages relationship, scene only; not evaluated: way_speaking" in text
    ), text
    assert "Metadata avg" not in text.split("note:", 1)[1]  # complete: no note
    assert set(res.partial_groups()) == {("m", "content")}
    full = LVUResult(pl.DataFrame([{**rows[0], "task": "way_speaking"}, *rows], schema=RUN_SCHEMA))
    assert full.partial_groups() == {} and "note:" not in full.format()


# ---------------------------------------------------------------------------------------------- CLI
def one_line(err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.startswith("lmp-bench")]  # (MLflow logs its DB set-up)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("lmp-bench lvu: error: "), err
    for n in needles:
        assert n in lines[0], (n, err)


@pytest.fixture(scope="module")
def export(tiny_bench, tiny_cfg, tmp_path_factory):
    from lmp_data import FeatureStore
    from lmp_model.export import save_pretrained
    from lmp_model.model import LMP

    store = FeatureStore.open(tiny_bench[0])
    torch.manual_seed(0)
    return save_pretrained(
        tmp_path_factory.mktemp("export") / "export", LMP(tiny_cfg, store.dims), encoders=store.encoders
    )


def test_cli_bad_inputs_are_one_line(tiny_bench, export, tmp_path, capsys, monkeypatch):
    import shutil

    store, labels, _, _ = tiny_bench
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    opts = ["--store", str(store), "--labels", str(labels), "--seeds", "1", "--no-mlflow", "--k", "5"]
    opts += ["--out", str(tmp_path / "o.parquet")]

    assert main(["lvu", "--model", "none", *opts, "--tasks", "genre,nosuch"]) == 1
    one_line(capsys.readouterr().err, "unknown LVU task 'nosuch'")

    bad_json = tmp_path / "bad_json"
    shutil.copytree(export, bad_json)
    (bad_json / "lmp.json").write_text("{not json")
    assert main(["lvu", "--model", str(bad_json), *opts, "--tasks", "genre"]) == 1
    one_line(capsys.readouterr().err, f"--model {bad_json}", "JSONDecodeError")

    trunc = tmp_path / "trunc"
    shutil.copytree(export, trunc)
    w = trunc / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    assert main(["lvu", "--model", str(trunc), *opts, "--tasks", "genre"]) == 1
    one_line(capsys.readouterr().err, f"--model {trunc}")

    assert main(["lvu", "--model", "0123456789abcdef0123456789abcdef", *opts, "--tasks", "genre"]) == 1
    one_line(capsys.readouterr().err, "--model 0123456789abcdef0123456789abcdef")

    latin = tmp_path / "latin"
    shutil.copytree(labels, latin)
    (latin / "genre" / "val.csv").write_bytes(HEADER.encode() + b"\n0 caf\xe9 c tt1\n")
    assert (
        main(["lvu", "--model", "none", *opts[:2], "--labels", str(latin), *opts[4:], "--tasks", "genre"])
        == 1
    )
    one_line(capsys.readouterr().err, "genre/val.csv:2: not UTF-8")

    from lmp_data import FeatureStore

    empty = FeatureStore.create(tmp_path / "empty", FeatureStore.open(store).encoders).path
    assert main(["lvu", "--model", "none", "--store", str(empty), *opts[2:], "--tasks", "genre"]) == 1
    one_line(capsys.readouterr().err)

    assert main(["lvu", "--model", str(trunc), *opts, "--tasks", "genre", "-v"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("lmp-bench lvu: error: --model")
    json.dumps(err)  # printable
