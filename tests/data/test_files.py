"""lmp_data.files.atomic_write: the one atomic write every package uses."""

from __future__ import annotations

import polars as pl
import pytest

from lmp_data.files import atomic_write


def test_text_bytes_and_writer_land_whole_without_leftovers(tmp_path):
    assert atomic_write(tmp_path / "a.txt", "héllo\n") == tmp_path / "a.txt"
    atomic_write(tmp_path / "b.bin", b"\x00\x01")
    atomic_write(tmp_path / "c.parquet", pl.DataFrame({"x": [1, 2]}).write_parquet)
    atomic_write(tmp_path / "a.txt", "replaced")
    assert (tmp_path / "a.txt").read_text() == "replaced"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert pl.read_parquet(tmp_path / "c.parquet")["x"].to_list() == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.parquet"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp(tmp_path):
    target = tmp_path / "t.json"
    atomic_write(target, "old")

    def half(tmp):
        tmp.write_text("half")
        raise RuntimeError("writer died")

    with pytest.raises(RuntimeError, match="writer died"):
        atomic_write(target, half)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]
