"""A store with a subset of the modalities (video + text, as MAD; or video alone): writing, reading,
windows and batches, `lmp-data import` of an npz folder, `lmp-data info`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmp_data import FeatureStore, ShotWindows, StoreError, collate_windows

ENC = {"video": {"name": "clip", "dim": 8}, "text": {"name": "tok", "dim": 6}}


def movie(rng, n=10, t=7):
    b = np.arange(n + 1, dtype=float) * 2.0
    a = np.sort(rng.uniform(0, 2 * n - 1, t))
    return {
        "shots": np.stack([b[:-1], b[1:]], 1),
        "video": rng.normal(size=(n, 8)),
        "text": rng.normal(size=(t, 6)),
        "text_spans": np.stack([a, a + 1.0], 1),
    }


@pytest.fixture
def vt_store(tmp_path):
    st = FeatureStore.create(tmp_path / "vt", ENC, dtype="float32")
    rng = np.random.default_rng(0)
    for i, n in enumerate((10, 3, 14)):
        st.write_movie(f"m{i}", **movie(rng, n), meta={"split": "train"})
    return FeatureStore.open(tmp_path / "vt")


def test_store_without_audio(vt_store, tmp_path):
    st = vt_store
    assert st.modalities == ("video", "text") and st.missing == ("audio",)
    assert st.dims == {"video": 8, "text": 6}
    assert sorted(p.name for p in next((st.path / "movies").iterdir()).iterdir() if not p.name.startswith("zarr")) == [
        "shots", "text", "text_spans", "video"
    ]  # fmt: skip
    rng = np.random.default_rng(1)
    with pytest.raises(StoreError, match=r"movie 'x', field 'audio': the store has no audio encoder"):
        st.write_movie("x", **movie(rng), audio=np.zeros((10, 3)))
    with pytest.raises(StoreError, match=r"movie 'x', field 'text': missing"):
        st.write_movie("x", **{**movie(rng), "text": None})
    assert not st.has_movie("x") and st.check().ok
    mem = st.load_all()
    assert mem.modalities == ("video", "text") and mem.audio.shape == (27, 0)
    assert mem.movie("m1")["audio"].shape == (3, 0)


def test_windows_and_batches_keep_their_keys_with_zero_width(vt_store):
    ds = ShotWindows(vt_store, 5, mode="eval")
    idx = list(range(len(ds)))
    fast = ds.__getitems__(idx)
    slow = collate_windows([ds[i] for i in idx])
    assert tuple(fast["audio"].shape) == (len(idx), 5, 0)
    for key in ("video", "audio", "shot_mask", "text", "text_mask", "token_shot", "start"):
        assert torch.equal(fast[key], slow[key]), key
    assert fast["text_mask"].any()


def test_video_only_store(tmp_path):
    st = FeatureStore.create(tmp_path / "v", {"video": ENC["video"]})
    rng = np.random.default_rng(2)
    m = movie(rng)
    st.write_movie("a", shots=m["shots"], video=m["video"])
    with pytest.raises(StoreError, match="text_spans"):
        st.write_movie("b", shots=m["shots"], video=m["video"], text_spans=m["text_spans"])
    ds = ShotWindows(st, 4, mode="eval")
    b = ds.__getitems__([0, 1])
    assert tuple(b["text"].shape) == (2, 1, 0) and not b["text_mask"].any() and not b["token_shot"].any()
    assert st.movies()["n_tokens"].to_list() == [0]


def test_import_npz_into_a_video_text_store_and_info(tmp_path, capsys):
    from lmp_data.cli import main

    d = tmp_path / "npz"
    d.mkdir()
    rng = np.random.default_rng(3)
    for i in range(2):
        np.savez(d / f"tt{i}.npz", **movie(rng))
    np.savez(d / "tt9.npz", **movie(rng), audio=np.zeros((10, 3)))  # left out: the store has no audio
    store = tmp_path / "store"
    assert main(["import", str(d), str(store), "--video", "clip:8", "--text", "tok:6"]) == 0
    out = capsys.readouterr().out
    assert (
        "imported 3, skipped 0 (already in store), failed 0 (audio not imported: the store has no audio)"
        in out
    )
    assert set(FeatureStore.open(store).read_movie("tt9")) == {"shots", "video", "text", "text_spans"}
    assert FeatureStore.open(store).modalities == ("video", "text")
    assert main(["import", str(d), str(tmp_path / "s2"), "--text", "tok:6"]) == 2
    assert "give --video NAME:DIM" in capsys.readouterr().err
    assert main(["info", str(store)]) == 0
    out = capsys.readouterr().out
    assert "(no audio: pretraining drops the loss terms that need it)" in out
    assert main(["info", str(store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["modalities"] == ["video", "text"]
