"""Table 2 fixed: the export records k and the data config, and each model is probed with its own k."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lmp_bench import api, evaluate_lvu
from lmp_bench.features import TEXT_FREE, clear_cache, encode_clips

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "model"))


def _cfg(tiny_cfg, max_shots=64):
    import dataclasses

    return dataclasses.replace(tiny_cfg, max_shots=max_shots)


def _pretrain_yaml(k: int) -> str:
    """What the trainer passes to save_pretrained: the resolved pretraining config."""
    from lmp_model.pretrain import load_pretrain_config
    from lmp_model.pretrain.config import config_to_yaml

    cfg = load_pretrain_config(
        REPO / "experiments" / "configs" / "pretrain" / "tiny.yaml",
        [f"data.k={k}", "data.store=/somewhere/store.zarr", "model.max_shots=64"],
    )
    return config_to_yaml(cfg)


@pytest.fixture(scope="module")
def exports(tiny_bench, tiny_cfg, tmp_path_factory):
    """{k: export folder} for k = 10 and 60, saved the way the trainer saves them."""
    from lmp_data import FeatureStore
    from lmp_model.export import save_pretrained
    from lmp_model.model import LMP

    root = tmp_path_factory.mktemp("k_exports")
    store = FeatureStore.open(tiny_bench[0])
    out = {}
    for k in (10, 60):
        torch.manual_seed(k)
        model = LMP(_cfg(tiny_cfg), store.dims)
        out[k] = save_pretrained(
            root / f"k{k}", model, encoders=store.encoders, pretrain_yaml=_pretrain_yaml(k), meta={"steps": 1}
        )
    return out


def test_lmp_json_holds_k_and_data_config(exports):
    from lmp_model.export import load_pretrained

    for k, folder in exports.items():
        meta = json.loads((folder / "lmp.json").read_text())["meta"]
        assert meta["k"] == k and meta["steps"] == 1
        assert meta["data"]["k"] == k and meta["data"]["store"] == "/somewhere/store.zarr"
        assert {"windows_per_epoch", "demo", "memory_dtype", "split", "movies"} <= set(meta["data"])
        model = load_pretrained(folder)
        assert model.pretrained_meta["k"] == k and model.pretrained_meta["data"] == meta["data"]


def test_old_export_k_from_pretrain_yaml_or_warned_default(tiny_bench, tiny_cfg, tmp_path, caplog):
    from lmp_data import FeatureStore
    from lmp_model.export import load_pretrained, save_pretrained
    from lmp_model.model import LMP

    store = FeatureStore.open(tiny_bench[0])
    model = LMP(tiny_cfg, store.dims)
    # an export written before k was recorded: meta without k, but a pretrain.yaml
    old = save_pretrained(tmp_path / "old", model, pretrain_yaml=_pretrain_yaml(10))
    info = json.loads((old / "lmp.json").read_text())
    info["meta"] = {}
    (old / "lmp.json").write_text(json.dumps(info))
    assert load_pretrained(old).pretrained_meta["k"] == 10
    # nothing recorded at all: 30 (capped at max_shots=16 here), with a warning
    bare = load_pretrained(save_pretrained(tmp_path / "bare", model))
    assert "k" not in bare.pretrained_meta
    with caplog.at_level(logging.WARNING, logger="lmp_bench.api"):
        assert api._window_k(bare, None) == 16
    assert "records no pretraining window length" in caplog.text
    assert api._window_k(bare, 7) == 7  # the caller's k wins


@pytest.fixture
def spy_k(monkeypatch):
    """The k (and windows) every encode_clips call of lmp_bench.api used."""
    seen = []

    def spy(model, store, *a, k=30, **kw):
        res = encode_clips(model, store, *a, k=k, **kw)
        seen.append(k)
        return res

    monkeypatch.setattr(api, "encode_clips", spy)
    return seen


def test_each_model_probed_with_its_own_k(tiny_bench, exports, spy_k):
    from lmp_model.export import load_pretrained

    store, labels, _, _ = tiny_bench
    kw = dict(features="v_ctx", tasks="genre", seeds=1, probe=api.ProbeConfig(epochs=2))
    for folder in exports.values():
        evaluate_lvu(str(folder), store, labels, **kw)  # through the export folder
        evaluate_lvu(load_pretrained(folder), store, labels, **kw)  # in memory
    assert spy_k == [10, 10, 60, 60]
    evaluate_lvu(str(exports[60]), store, labels, k=10, **kw)  # told otherwise
    assert spy_k[-1] == 10


def test_sweep_models_carry_their_k(tiny_bench, tiny_cfg, spy_k):
    """The no-pretraining model the sweep builds (in memory) is probed with the pretraining config's k."""
    store, labels, _, _ = tiny_bench
    for k in (10, 60):
        model = api.random_model(store, _cfg(tiny_cfg), seed=0, k=k)
        assert model.pretrained_meta["k"] == k
        evaluate_lvu(
            model, store, labels, features="v_ctx", tasks="genre", seeds=1, probe=api.ProbeConfig(epochs=2)
        )
    assert spy_k == [10, 60]


def test_windows_counted_per_k(tiny_bench, tiny_cfg):
    """k changes the windows: k=10 cuts the 3..13-shot clips into more windows than k=60."""
    from lmp_bench.features import _load, clip_windows
    from lmp_data import FeatureStore

    store = FeatureStore.open(tiny_bench[0])
    ids = store.movies()["movie_id"].to_list()
    mem, ids, _ = _load(store, ids)
    n10, n60 = len(clip_windows(mem, ids, 10)), len(clip_windows(mem, ids, 60))
    assert n60 == len(ids) and n10 > n60


def test_text_free_features_encoded_without_language_are_equal(tiny_bench, tiny_cfg):
    """encode_clips skips the language branch for TEXT_FREE features: the values must not change."""
    from lmp_data import FeatureStore

    store = FeatureStore.open(tiny_bench[0])
    clear_cache()
    model = api.random_model(store, tiny_cfg, seed=3)
    full = encode_clips(model, store, k=5, cache=False)
    fast = encode_clips(model, store, k=5, cache=False, features="v_ctx+a_ctx+v_cross_a")
    assert set(fast.arrays) == set(TEXT_FREE)
    for name in TEXT_FREE:
        np.testing.assert_allclose(fast.arrays[name], full.arrays[name], atol=1e-5)
