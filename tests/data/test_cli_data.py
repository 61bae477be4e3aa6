"""`lmp-data info` and `lmp-data import` (through `lmp_data.cli.main`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmp_data import FeatureStore


def run_cli(*argv: str) -> int:
    """`lmp-data ARGV` in this process (errors reported the way `lmp_data.cli.main` reports them)."""
    from lmp_data.cli import main

    return main(list(argv))


def write_npz(path, seed: int, n_shots: int = 10, n_tokens: int = 7, dims=(6, 3, 4)) -> dict:
    rng = np.random.default_rng(seed)
    b = np.arange(n_shots + 1, dtype=float) * 2.0
    arrays = {
        "shots": np.stack([b[:-1], b[1:]], 1),
        "video": rng.normal(size=(n_shots, dims[0])),
        "audio": rng.normal(size=(n_shots, dims[1])),
        "text": rng.normal(size=(n_tokens, dims[2])),
        "text_spans": np.stack([np.linspace(0, 15, n_tokens), np.linspace(1, 16, n_tokens)], 1),
    }
    np.savez(path, **arrays)
    return arrays


@pytest.fixture
def npz_dir(tmp_path):
    d = tmp_path / "npz"
    d.mkdir()
    movies = {f"tt{i:04d}": write_npz(d / f"tt{i:04d}.npz", i) for i in range(3)}
    (d / "tt0000.json").write_text(json.dumps({"title": "Zero", "genres": ["drama"], "year": 1990}))
    (d / "meta.json").write_text(
        json.dumps({"tt0000": {"title": "ignored", "director": "D"}, "tt0001": {"year": 2001}})
    )
    return d, movies


def test_import_then_info(npz_dir, tmp_path, capsys):
    d, movies = npz_dir
    store = tmp_path / "store"
    assert run_cli("import", str(d), str(store), "--video", "v:6", "--audio", "a:3", "--text", "t:4") == 0
    assert "imported 3, skipped 0" in capsys.readouterr().out
    st = FeatureStore.open(store)
    df = st.movies()
    assert df["movie_id"].to_list() == sorted(movies) and df["n_shots"].to_list() == [10, 10, 10]
    row = df.row(0, named=True)
    assert (row["title"], row["director"], row["genres"], row["year"]) == ("Zero", "D", ["drama"], 1990)
    assert df["year"].to_list() == [1990, 2001, None]
    np.testing.assert_allclose(
        st.read_movie("tt0002")["video"], movies["tt0002"]["video"], atol=3e-3, rtol=3e-3
    )
    # a second import resumes: everything is skipped
    assert run_cli("import", str(d), str(store)) == 0
    assert "imported 0, skipped 3" in capsys.readouterr().out

    assert run_cli("info", str(store), "--json") == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["movies"], s["shots"], s["tokens"]) == (3, 30, 21)
    assert s["encoders"]["video"] == {"name": "v", "dim": 6} and s["dtype"] == "float16"
    assert s["bytes_on_disk"] > 3 * 10 * 9 * 2
    assert run_cli("info", str(store)) == 0
    out = capsys.readouterr().out
    assert "movies    3" in out and "shots     30" in out and "tokens    21" in out and "MiB" in out


def test_bad_files_are_reported_and_skipped(npz_dir, tmp_path, capsys):
    d, _ = npz_dir
    (d / "encoders.json").write_text(
        json.dumps({m: {"name": m, "dim": n} for m, n in zip(("video", "audio", "text"), (6, 3, 4))})
    )
    np.savez(d / "missing.npz", shots=np.zeros((2, 2)))
    (d / "garbage.npz").write_bytes(b"not a zip")
    write_npz(d / "wrongdim.npz", 9, dims=(5, 3, 4))
    write_npz(d / "bad id!.npz", 9)
    store = tmp_path / "store"
    assert run_cli("import", str(d), str(store)) == 1
    cap = capsys.readouterr()
    assert "imported 3, skipped 0 (already in store), failed 4" in cap.out
    for name, msg in [
        ("missing.npz", "missing arrays"),
        ("garbage.npz", "not a readable .npz"),
        ("wrongdim.npz", "expected dim 6"),
        ("bad id!.npz", "movie id"),
    ]:
        line = next(ln for ln in cap.err.splitlines() if ln.startswith(f"FAILED {name}:"))
        assert msg in line, line
    assert FeatureStore.open(store).movies().height == 3


def test_import_needs_encoders_and_info_needs_a_store(npz_dir, tmp_path, capsys):
    d, _ = npz_dir
    assert run_cli("import", str(d), str(tmp_path / "s")) == 2
    assert "encoders.json" in capsys.readouterr().err
    assert (
        run_cli("import", str(d), str(tmp_path / "s"), "--video", "v:x", "--audio", "a:3", "--text", "t:4")
        == 2
    )
    assert "NAME:DIM" in capsys.readouterr().err
    assert run_cli("info", str(tmp_path / "nothing")) == 2
    assert "no store.json" in capsys.readouterr().err
    FeatureStore.create(
        tmp_path / "s2", encoders={m: {"name": m, "dim": 2} for m in ("video", "audio", "text")}
    )
    assert (
        run_cli("import", str(d), str(tmp_path / "s2"), "--video", "v:6", "--audio", "a:3", "--text", "t:4")
        == 2
    )
    assert "has encoders" in capsys.readouterr().err
