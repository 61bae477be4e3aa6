"""Probes on a clip store without audio: only features that exist are offered, and asking for one that
needs audio is a one-line error that says so."""

from __future__ import annotations

import numpy as np
import pytest

from lmp_bench.api import evaluate_lvu, random_model
from lmp_bench.features import base_features, check_model_features, encode_clips, model_default_features

from .conftest import tiny_model_config, write_lvu_labels

DIMS = {"video": 12, "text": 10}


@pytest.fixture(scope="module")
def vt_bench(tmp_path_factory):
    """Clips of a video + text store (genre planted in the video) and LVU labels."""
    from lmp_data import FeatureStore

    root = tmp_path_factory.mktemp("vt")
    rng = np.random.default_rng(0)
    store = FeatureStore.create(
        root / "clips.zarr", {m: {"name": f"tiny-{m}", "dim": d} for m, d in DIMS.items()}, dtype="float32"
    )
    centres = np.random.default_rng(99).normal(size=(4, DIMS["video"])) * 2.0
    ids = [f"clip{i:03d}" for i in range(60)]
    genre = rng.integers(0, 4, len(ids))
    for i, cid in enumerate(ids):
        n = int(rng.integers(3, 10))
        t = np.cumsum(rng.uniform(1, 3, n + 1))
        nt = int(rng.integers(1, 2 * n))
        a = np.sort(rng.uniform(t[0], t[-1] - 0.5, nt))
        store.write_movie(
            cid,
            shots=np.stack([t[:-1], t[1:]], 1),
            video=rng.normal(size=(n, DIMS["video"])) + centres[genre[i]],
            text=rng.normal(size=(nt, DIMS["text"])),
            text_spans=np.stack([a, a + 0.5], 1),
        )
    views = np.exp(11.76 + rng.normal(size=len(ids)))
    write_lvu_labels(root / "lvu", ids, genre, views, split_sizes=(36, 12, 12), extra_missing=())
    return root / "clips.zarr", root / "lvu"


def test_base_features_of_a_store_without_audio(vt_bench):
    from lmp_data import FeatureStore

    store = FeatureStore.open(vt_bench[0])
    f = base_features(store)
    assert set(f.arrays) == {"v_base"} and f.arrays["v_base"].shape == (60, DIMS["video"])
    res = evaluate_lvu(None, store, vt_bench[1], tasks="genre", seeds=1, no_pretrain="base")
    assert res.runs["features"].unique().to_list() == ["v_base"]
    with pytest.raises(ValueError, match=r"features \['a_base'\] need audio, which store .* does not have"):
        evaluate_lvu(
            None, store, vt_bench[1], features="v_base+a_base", tasks="genre", seeds=1, no_pretrain="base"
        )


def test_model_of_a_store_without_audio_offers_what_exists(vt_bench):
    from lmp_data import FeatureStore

    store = FeatureStore.open(vt_bench[0])
    m = random_model(store, tiny_model_config(), k=8)
    assert m.modalities == ("video", "text")
    assert model_default_features(m) == "v_ctx"
    feats = encode_clips(m, store, k=8)
    assert set(feats.arrays) == {"v_base", "v_ctx", "l_ctx", "l_shot"}
    with pytest.raises(ValueError) as e:
        check_model_features(m, ["v_ctx", "a_ctx", "v_cross_a"])
    msg = str(e.value)
    assert "\n" not in msg and "['a_ctx', 'v_cross_a']" in msg and "need audio" in msg
    assert "it provides v_base+v_ctx+l_ctx+l_shot" in msg
    # the no-pretraining random-init row with the default features probes what exists
    res = evaluate_lvu(
        None,
        store,
        vt_bench[1],
        tasks="genre",
        seeds=1,
        no_pretrain="random_init",
        model_config=tiny_model_config(),
        k=8,
    )
    assert res.runs["features"].unique().to_list() == ["v_ctx"]
