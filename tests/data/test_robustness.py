"""Bad inputs that must not delete, crash or hang `lmp-data` (issue 12): demo --overwrite, corrupt and
non-regular `.npz` files, a corrupt manifest row, orphan groups, reserved ids, one-line CLI errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lmp_data import FeatureStore, StoreError
from lmp_data.cli import main

SRC = str(Path(__file__).resolve().parents[2] / "packages" / "data" / "src")
NPZ_ENC = ("--video", "v:6", "--audio", "a:3", "--text", "t:4")
ENC = {
    "video": {"name": "vid", "dim": 8},
    "audio": {"name": "aud", "dim": 4},
    "text": {"name": "txt", "dim": 6},
}


def make_movie(seed: int, n_shots: int = 12, n_tokens: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    b = np.arange(n_shots + 1, dtype=float)
    return {
        "shots": np.stack([b[:-1], b[1:]], 1),
        "video": rng.normal(size=(n_shots, 8)),
        "audio": rng.normal(size=(n_shots, 4)),
        "text": rng.normal(size=(n_tokens, 6)),
        "text_spans": np.stack([np.linspace(0, 5, n_tokens), np.linspace(1, 6, n_tokens)], 1),
    }


def write_npz(path: Path, seed: int, n_shots: int = 10, n_tokens: int = 7) -> None:
    m = make_movie(seed, n_shots, n_tokens)
    rng = np.random.default_rng(seed)
    m |= {"video": rng.normal(size=(n_shots, 6)), "audio": rng.normal(size=(n_shots, 3))}
    m["text"] = rng.normal(size=(n_tokens, 4))
    np.savez(path, **m)


def one_line_error(err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("lmp-data ") and ": error: " in lines[0], err
    for n in needles:
        assert n in lines[0], (n, err)


# ------------------------------------------------------------------------------------------- demo
def test_demo_overwrite_refuses_a_folder_that_is_not_a_demo(tmp_path, capsys):
    v = tmp_path / "v"
    (v / "keep").mkdir(parents=True)
    (v / "keep" / "f").write_text("x")
    (v / "store.json").write_text("{}")
    rc = main(["demo", str(v), "--size", "tiny", "--movies", "3", "--overwrite"])
    assert rc == 2
    one_line_error(capsys.readouterr().err, "not a demo", "keep/", "store.json")
    assert (v / "keep" / "f").read_text() == "x" and sorted(p.name for p in v.iterdir()) == [
        "keep",
        "store.json",
    ]
    # a demo.json of another format is not a demo marker either
    (v / "demo.json").write_text(json.dumps({"format": "something-else"}))
    assert main(["demo", str(v), "--size", "tiny", "--movies", "3", "--overwrite"]) == 2
    assert (v / "keep" / "f").exists()


def test_demo_overwrite_replaces_a_demo_and_refuses_without_it(tmp_path, capsys):
    v = tmp_path / "v"
    v.mkdir()
    from lmp_data.demo import build

    other = {
        "format": build.FORMAT,
        "version": build.VERSION,
        "config": {"seed": 99, "generator_version": 10**6},
    }
    (v / "demo.json").write_text(json.dumps(other))  # a current (not stale) demo of another config
    (v / "old").write_text("old demo part")
    assert main(["demo", str(v), "--size", "tiny", "--movies", "3"]) == 2
    one_line_error(capsys.readouterr().err, str(v), "--overwrite")
    assert main(["demo", str(v), "--size", "tiny", "--movies", "3", "--overwrite"]) == 0
    assert not (v / "old").exists() and json.loads((v / "demo.json").read_text())["config"]["seed"] == 0


# ------------------------------------------------------------------------------------------ import
def test_import_reports_corrupt_npz_and_goes_on(tmp_path, capsys):
    d = tmp_path / "npz"
    d.mkdir()
    write_npz(d / "a_trunc.npz", 1)
    data = (d / "a_trunc.npz").read_bytes()
    (d / "a_trunc.npz").write_bytes(data[: len(data) // 2])
    write_npz(d / "b_flip.npz", 2)
    data = bytearray((d / "b_flip.npz").read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside an array's bytes: zip's CRC-32 no longer matches
    (d / "b_flip.npz").write_bytes(bytes(data))
    write_npz(d / "c_good.npz", 3)
    rc = main(["import", str(d), str(tmp_path / "store"), *NPZ_ENC])
    cap = capsys.readouterr()
    assert rc == 1, cap
    assert "imported 1, skipped 0 (already in store), failed 2" in cap.out
    for name in ("a_trunc.npz", "b_flip.npz"):
        line = next(ln for ln in cap.err.splitlines() if ln.startswith(f"FAILED {name}:"))
        assert "not a readable .npz" in line, line
    assert FeatureStore.open(tmp_path / "store").movies()["movie_id"].to_list() == ["c_good"]


def test_import_skips_a_fifo_without_opening_it(tmp_path):
    d = tmp_path / "npz"
    d.mkdir()
    write_npz(d / "a.npz", 1)
    os.mkfifo(d / "b_fifo.npz")
    write_npz(d / "c.npz", 3)
    code = f"import sys; sys.path.insert(0, {SRC!r}); from lmp_data.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, "import", str(d), str(tmp_path / "store"), *NPZ_ENC],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "SKIPPED b_fifo.npz: not a regular file (a FIFO)" in proc.stderr
    assert "imported 2, skipped 0 (already in store), failed 0, 1 not regular files skipped" in proc.stdout


def test_bad_dtype_is_one_line_and_verbose_shows_the_traceback(tmp_path, capsys):
    d = tmp_path / "npz"
    d.mkdir()
    write_npz(d / "a.npz", 1)
    assert main(["import", str(d), str(tmp_path / "store"), *NPZ_ENC, "--dtype", "nosuch"]) == 2
    one_line_error(capsys.readouterr().err, "dtype 'nosuch'")
    assert main(["import", str(d), str(tmp_path / "store"), *NPZ_ENC, "--dtype", "nosuch", "-v"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("lmp-data import: error: ")


# -------------------------------------------------------------------------------------- movie ids
@pytest.mark.parametrize("bad", [".tmp-abc", ".tmp-", ".tmp-x.1234"])
def test_reserved_temp_prefix_is_not_a_movie_id(tmp_path, bad):
    store = FeatureStore.create(tmp_path / "s", encoders=ENC)
    with pytest.raises(StoreError, match="reserved"):
        store.write_movie(bad, **make_movie(0))
    assert store.movies().height == 0 and list((store.path / "movies").iterdir()) == []
    store.write_movie(".tmpx", **make_movie(0))  # only the exact prefix is reserved
    store.write_movie("a.tmp-b", **make_movie(1))


# ------------------------------------------------------------------------------ store consistency
@pytest.fixture
def damaged(tmp_path):
    """A store of 5 movies: m1's manifest row truncated, m2's group deleted, and one orphan group."""
    store = FeatureStore.create(tmp_path / "store", encoders=ENC)
    for i in range(5):
        store.write_movie(f"m{i}", **make_movie(i), meta={"split": "train"})
    row = store.path / "manifest" / "m1.parquet"
    row.write_bytes(row.read_bytes()[:40])
    group2 = store._row("m2")["group"]
    shutil.rmtree(store.path / "movies" / group2)
    orphan = store.path / "movies" / "m3.0123456789ab"
    shutil.copytree(store.path / "movies" / store._row("m3")["group"], orphan)
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    return store, group2, orphan.name


def test_a_bad_manifest_row_costs_one_movie(damaged, caplog):
    store, _, _ = damaged
    with caplog.at_level("WARNING", logger="lmp_data.store"):
        df = store.movies()
    assert df["movie_id"].to_list() == ["m0", "m3", "m4"]
    assert "'m1'" in caplog.text and "manifest/m1.parquet" in caplog.text and "'m2'" in caplog.text
    mem = store.load_all()
    assert mem.movie_ids == ["m0", "m3", "m4"] and mem.n_shots == 36
    with pytest.raises(StoreError, match=r"m1.*manifest row .*m1\.parquet unreadable"):
        store.read_movie("m1")
    # re-importing the movie with overwrite mends it
    store.write_movie("m1", **make_movie(1), overwrite=True)
    assert "m1" in store.movies()["movie_id"].to_list()


def test_info_check_lists_every_inconsistency_and_repair_removes_only_orphans(damaged, capsys):
    store, group2, orphan = damaged
    (store.path / "movies" / ".tmp-m9.aaaaaaaaaaaa").mkdir()
    assert main(["info", str(store.path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["movies"], s["shots"], s["splits"]) == (3, 36, {"train": 3})

    assert main(["info", str(store.path), "--check"]) == 1
    out = capsys.readouterr().out
    assert "movies    3" in out and "check     4 problem(s)" in out
    assert "unreadable manifest row: m1: manifest row manifest/m1.parquet unreadable" in out
    assert f"missing group: movie 'm2': movies/{group2} does not exist" in out
    assert f"orphan group: movies/{orphan}" in out and "temporary: movies/.tmp-m9.aaaaaaaaaaaa" in out
    m1_group = next(p.name for p in (store.path / "movies").iterdir() if p.name.startswith("m1."))
    assert f"unreferenced group of an unreadable movie: movies/{m1_group}" in out

    before = {p.name for p in (store.path / "movies").iterdir()} | {
        p.name for p in (store.path / "manifest").iterdir()
    }
    assert main(["info", str(store.path), "--repair", "--json"]) == 1  # the other problems remain
    s = json.loads(capsys.readouterr().out)
    assert s["check"]["removed"] == [f"movies/{orphan}"] and s["check"]["orphan_groups"] == []
    assert set(s["check"]["unreadable_rows"]) == {"m1"} and s["check"]["missing_groups"] == {"m2": group2}
    after = {p.name for p in (store.path / "movies").iterdir()} | {
        p.name for p in (store.path / "manifest").iterdir()
    }
    assert before - after == {orphan}
    assert store.movies()["movie_id"].to_list() == ["m0", "m3", "m4"]


def test_repair_leaves_young_orphans(tmp_path):
    store = FeatureStore.create(tmp_path / "s", encoders=ENC)
    store.write_movie("m0", **make_movie(0))
    shutil.copytree(store.path / "movies" / store._row("m0")["group"], store.path / "movies" / "m0.fresh")
    assert store.check().orphan_groups == ["m0.fresh"]
    assert store.repair(older_than_s=60) == [] and (store.path / "movies" / "m0.fresh").is_dir()
    assert store.repair(older_than_s=0) == ["movies/m0.fresh"] and store.check().ok


def test_truncated_manifest_row_via_info_is_named(tmp_path, capsys, caplog):
    store = FeatureStore.create(tmp_path / "s", encoders=ENC)
    store.write_movie("only", **make_movie(0))
    (store.path / "manifest" / "only.parquet").write_bytes(b"PAR1")
    with caplog.at_level("WARNING", logger="lmp_data.store"):
        assert main(["info", str(store.path)]) == 0
    assert "movies    0" in capsys.readouterr().out
    assert "'only' left out" in caplog.text and "only.parquet" in caplog.text


# ------------------------------------------------------------------------------------------ ingest
def test_ingest_subtitle_encoding_reaches_the_config(tmp_path, monkeypatch, capsys):
    from lmp_data.ingest import language, pipeline

    srt = tmp_path / "movies" / "m.srt"
    srt.parent.mkdir()
    srt.write_bytes("1\n00:00:00,100 --> 00:00:02,000\nLa crème brûlée est très bonne.\n".encode("latin-1"))
    seen = {}

    class Summary:
        failed = 0

        def format(self):
            return "ok"

    def fake_ingest(movies_dir, store, cfg, encoders=None):
        seen["cfg"] = cfg
        seen["cues"] = language.read_subtitles(srt, cfg.subtitle_encoding)[0]
        return Summary()

    monkeypatch.setattr(pipeline, "ingest", fake_ingest)
    args = ["ingest", str(srt.parent), str(tmp_path / "store"), "--no-progress"]
    assert main([*args, "--subtitle-encoding", "latin-1"]) == 0
    assert seen["cfg"].subtitle_encoding == "latin-1"
    assert "crème brûlée" in seen["cues"][0].text
