"""Models of a store without some modality (MAD: video + language, no audio): no module for it, the loss
terms that need it dropped (and named), only the features that exist, exports that round-trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmp_model.config import CrossModalConfig, EncoderConfig, ModelConfig, term_modalities
from lmp_model.export import check_store_encoders, load_pretrained, save_pretrained
from lmp_model.model import LMP
from lmp_model.pretrain.train import missing_modalities_note
from lmp_model.recipes import (
    HSSLConfig,
    M2SConfig,
    build_recipe,
    recipe_default_features,
    recipe_features,
)

DIMS = {"video": 12, "text": 10}
N, K, T = 4, 6, 5


def cfg(**loss) -> ModelConfig:
    c = ModelConfig(
        encoder=EncoderConfig(d=16, layers=1, heads=2, ff_mult=2, dropout=0.0),
        cross=CrossModalConfig(layers=1, heads=2, ff_mult=2, dropout=0.0),
        max_shots=16,
        max_tokens=32,
    )
    for k, v in loss.items():
        setattr(c.loss, k, v)
    return c


def batch(audio_dim: int = 0, text_dim: int = 10, seed: int = 0) -> dict:
    """A window batch as lmp_data makes it for a store without audio (audio [N, k, 0])."""
    g = torch.Generator().manual_seed(seed)
    token_shot = torch.zeros(N, T, K, dtype=torch.bool)
    token_shot[:, torch.arange(T), torch.arange(T) % K] = True
    return {
        "video": torch.randn(N, K, 12, generator=g),
        "audio": torch.randn(N, K, audio_dim, generator=g),
        "shot_mask": torch.ones(N, K, dtype=torch.bool),
        "text": torch.randn(N, T, text_dim, generator=g),
        "text_mask": torch.ones(N, T, dtype=torch.bool) if text_dim else torch.zeros(N, T, dtype=torch.bool),
        "token_shot": token_shot,
        "start": torch.zeros(N, dtype=torch.long),
        "movie": ["a", "a", "b", "b"],
    }


def test_video_text_model_builds_nothing_for_audio_and_drops_its_terms():
    m = LMP(cfg(), DIMS)
    assert m.modalities == ("video", "text") and m.missing == ("audio",)
    names = [n for n, _ in m.named_parameters()]
    assert not [n for n in names if "audio" in n or n.startswith("cross.")]
    assert set(m.embed) == set(m.context) == set(m.window_head) == {"video", "text"}
    assert m.dropped_terms == (
        "intra/audio",
        "inter/v2a",
        "inter/a2v",
        "cross/a2l",
        "cross/l2a",
        "window/audio",
    )
    out = m(batch())
    assert set(out.terms) == {
        "intra/video",
        "intra/text",
        "inter/v2l",
        "inter/l2v",
        "window/video",
        "window/text",
    }
    assert set(out.chance) == set(out.terms)
    out.loss.backward()
    assert all(
        p.grad is not None for n, p in m.named_parameters() if n.startswith(("embed.video", "context.video"))
    )
    m.eval()
    with torch.no_grad():
        enc = m.encode(batch())
    assert set(enc) == {"v_base", "v_ctx", "l_ctx", "l_shot", "shot_mask", "text_mask", "l_shot_mask"}
    assert set(m.provided_features()) == {"v_base", "v_ctx", "l_ctx", "l_shot"}
    assert set(recipe_features(m)) == set(m.provided_features())
    assert recipe_default_features(m) == "v_ctx"  # the paper's v_ctx+a_ctx+v_cross_a, less what needs audio
    assert recipe_default_features("lmp") == "v_ctx+a_ctx+v_cross_a"


def test_the_batch_may_carry_the_missing_modality_or_not():
    m = LMP(cfg(), DIMS).eval()
    full = batch(audio_dim=7)  # e.g. a fuller clip store: its audio is not read
    no_audio = {k: v for k, v in full.items() if k != "audio"}
    with torch.no_grad():
        a, b = m.encode(full), m.encode(no_audio)
    torch.testing.assert_close(a["v_ctx"], b["v_ctx"])


def test_video_audio_model_and_video_only_model():
    va = LMP(cfg(), {"video": 12, "audio": 8})
    assert va.missing == ("text",) and not hasattr(va, "cross")
    out = va(batch(audio_dim=8, text_dim=0))
    assert set(out.terms) == {
        "intra/video",
        "intra/audio",
        "inter/v2a",
        "inter/a2v",
        "window/video",
        "window/audio",
    }
    v = LMP(cfg(), {"video": 12, "audio": 0})  # a width of 0 means missing, like an absent key
    assert v.modalities == ("video",)
    assert set(v(batch(text_dim=0)).terms) == {"intra/video", "window/video"}
    only_audio_terms = cfg(intra=0, window=0, disabled=["inter/v2l", "inter/l2v"])
    with pytest.raises(ValueError, match="needs audio, which this model"):
        LMP(only_audio_terms, DIMS)(batch())
    with pytest.raises(ValueError, match="positive width for video"):
        LMP(cfg(), {"audio": 8, "text": 10})
    with pytest.raises(ValueError, match="keys from"):
        LMP(cfg(), {"video": 12, "depth": 3})


def test_term_modalities():
    assert term_modalities("inter/v2l") == ("video", "text")
    assert term_modalities("cross/a2l") == ("video", "audio", "text")
    assert term_modalities("window/audio") == ("audio",)


def test_export_round_trip_and_store_checks(tmp_path):
    m = LMP(cfg(), DIMS)
    enc = {"video": {"name": "mad:clip", "dim": 12}, "text": {"name": "mad:tok", "dim": 10}}
    save_pretrained(tmp_path / "export", m, encoders=enc, meta={"k": K})
    back = load_pretrained(tmp_path / "export")
    assert back.modalities == ("video", "text") and back.dims == DIMS
    b = batch()
    with torch.no_grad():
        torch.testing.assert_close(back.encode(b)["v_ctx"], m.eval().encode(b)["v_ctx"])
    check_store_encoders(back, enc)
    check_store_encoders(back, {**enc, "audio": {"name": "vggish", "dim": 128}})  # not read: fine
    full = LMP(cfg(), {**DIMS, "audio": 8})
    full.encoders = {**enc, "audio": {"name": "vggish", "dim": 8}}
    with pytest.raises(
        ValueError, match=r"encoders\.audio: model was pretrained with audio .* the store has no audio"
    ):
        check_store_encoders(full, enc)


def test_other_recipes_drop_the_missing_modality():
    h = build_recipe(
        "hssl",
        HSSLConfig(
            encoder=EncoderConfig(d=16, layers=1, heads=2), modalities=["video", "audio"], queue_size=64
        ),
        DIMS,
    )
    assert h.modalities == ("video",) and h.missing == ("audio",) and h.dropped_terms == ("mp/audio",)
    assert not [n for n, _ in h.named_parameters() if "audio" in n]
    assert set(h(batch()).terms) == {"mp/video"}
    assert "a_base" not in recipe_features(h)
    m2s = build_recipe("m2s", M2SConfig(), DIMS)
    assert m2s.missing == () and "a_base" not in recipe_features(m2s)
    with pytest.raises(ValueError, match=r"HSSL\.modalities \['audio'\]: the store has none"):
        build_recipe("hssl", HSSLConfig(modalities=["audio"]), DIMS)


def test_pretraining_note_names_the_dropped_terms():
    note = missing_modalities_note(LMP(cfg(), DIMS), "/data/mad.zarr")
    assert note.startswith("store /data/mad.zarr has no audio: dropping loss terms intra/audio, inter/v2a")
    assert "window/audio" in note
    assert missing_modalities_note(LMP(cfg(), {**DIMS, "audio": 8}), "x") == ""
    assert np.isfinite(float(LMP(cfg(), DIMS)(batch()).loss.detach()))
