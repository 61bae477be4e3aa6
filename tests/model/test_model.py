"""The LMP model: terms, gradient routing, padding invariance, masking, encode, configs."""

import math
import sys
from pathlib import Path

import pytest
import torch
from omegaconf.errors import ConfigKeyError, ValidationError

from lmp_model import LMP, ModelConfig, load_model_config
from lmp_model.config import ALL_TERMS, model_config_to_dict
from lmp_model.losses import info_nce, masked_token_loss
from lmp_model.modules import sample_token_mask

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_helpers import CONFIGS, DIMS, build, make_batch, tiny  # noqa: E402

MODULES = [f"embed.{m}.{p}" for m in ("video", "audio", "text") for p in ("proj", "mask_token")]
MODULES += [f"context.{m}" for m in ("video", "audio", "text")] + ["cross.audio", "cross.text"]


def grads_by_module(model):
    """Module name -> True if some parameter under it got a non-zero gradient."""
    params = dict(model.named_parameters())
    return {
        mod: any(
            p.grad is not None and p.grad.abs().sum() > 0 for n, p in params.items() if n.startswith(mod)
        )
        for mod in MODULES
    }


def capture_features(model):
    """{"v", "a": the last contextual video / audio outputs, "v_target": the projected video tokens},
    filled by forward hooks on every call."""
    captured = {}
    model.context["video"].register_forward_hook(lambda m, i, o: captured.__setitem__("v", o))
    model.context["audio"].register_forward_hook(lambda m, i, o: captured.__setitem__("a", o))
    model.embed["video"].register_forward_hook(lambda m, i, o: captured.__setitem__("v_target", o[1]))
    return captured


# --------------------------------------------------------------------------------------- forward
def test_forward_returns_every_term_and_the_weighted_total():
    model = build(
        tiny("loss.intra=0.5", "loss.cross=2.0", "loss.recon=0.25", "loss.sync=0.5", "cross.query=video")
    )
    out = model(make_batch(), generator=torch.Generator().manual_seed(0))
    assert tuple(out.terms) == ALL_TERMS
    assert all(torch.isfinite(v) and v.item() > 0 for v in out.terms.values())
    w = {"intra": 0.5, "inter": 1.0, "cross": 2.0, "window": 1.0, "recon": 0.25, "sync": 0.5}
    total = sum(w[name.split("/")[0]] * v.item() for name, v in out.terms.items())
    assert out.loss.item() == pytest.approx(total, rel=1e-6)


def test_terms_are_the_losses_of_the_internal_features():
    """intra/video = Eq. 1 over the masked video tokens; inter/v2a = InfoNCE over all valid shots."""
    model = build(tiny("loss.window=0"))  # the hooks below capture the last call (the window term's is a 2nd)
    batch = make_batch()
    captured = capture_features(model)
    masked = model.sample_masks(batch, torch.Generator().manual_seed(3))
    out = model(batch, masked=masked)
    sel = masked["video"]
    assert sel.sum() == sum(math.floor(0.2 * n + 0.5) for n in batch["shot_mask"].sum(1).tolist())
    mc = model.cfg.masking
    ref = masked_token_loss(captured["v"][sel], captured["v_target"][sel], mc.temperature, mc.normalize)
    assert out.terms["intra/video"].item() == pytest.approx(ref.item(), rel=1e-6)
    sm = batch["shot_mask"]
    assert out.terms["inter/v2a"].item() == pytest.approx(
        info_nce(captured["v"][sm], captured["a"][sm], model.cfg.loss.temperature).item()
    )


@pytest.mark.parametrize("how", ["other_windows", "other_movies"])
def test_negatives_leave_out_the_anchors_window_or_movie(how):
    """loss.negatives: inter/v2a and intra/video are the grouped InfoNCE (loop-tested in test_losses)
    with one group per window, or per movie; the chance level counts the candidates left."""
    from lmp_model.losses import group_chance

    model = build(tiny("loss.window=0", f"loss.negatives={how}"))
    batch = make_batch()
    n, k = batch["shot_mask"].shape
    batch["movie"] = [f"m{j // 2}" for j in range(n)]
    captured = capture_features(model)
    masked = model.sample_masks(batch, torch.Generator().manual_seed(3))
    out = model(batch, masked=masked)
    per_window = torch.arange(n) // 2 if how == "other_movies" else torch.arange(n)
    group = per_window[:, None].expand(n, k)
    sm, sel, tau = batch["shot_mask"], masked["video"], model.cfg.loss.temperature
    ref = info_nce(captured["v"][sm], captured["a"][sm], tau, group[sm])
    assert out.terms["inter/v2a"].item() == pytest.approx(ref.item(), rel=1e-6)
    assert ref.item() != pytest.approx(info_nce(captured["v"][sm], captured["a"][sm], tau).item(), rel=1e-3)
    assert out.chance["inter/v2a"].item() == pytest.approx(group_chance(group[sm], int(sm.sum())).item())
    mc = model.cfg.masking
    ref = masked_token_loss(
        captured["v"][sel], captured["v_target"][sel], mc.temperature, mc.normalize, group[sel]
    )
    assert out.terms["intra/video"].item() == pytest.approx(ref.item(), rel=1e-6)


def test_masked_inputs_are_replaced_by_the_mask_token():
    """Changing a base feature at a [MASK] position changes only the masking targets, not the context."""
    model = build(tiny("masking.random_ratio=0", "masking.keep_ratio=0", "loss.recon=1.0"))  # all [MASK]ed
    batch = make_batch()
    masked = model.sample_masks(batch, torch.Generator().manual_seed(1))
    torch.manual_seed(0)  # the window term's shuffled negatives draw from the global RNG
    out1 = model(batch, masked=masked)
    noise = torch.randn(batch["video"].shape, generator=torch.Generator().manual_seed(2))
    changed = dict(batch, video=batch["video"] + 3.0 * noise * masked["video"].unsqueeze(-1))
    torch.manual_seed(0)
    out2 = model(changed, masked=masked)
    for name in ALL_TERMS[:-1]:  # every term but sync/audio (off: it needs cross.query=video)
        if name in ("intra/video", "recon/video"):  # their targets are the masked inputs
            assert out1.terms[name].item() != pytest.approx(out2.terms[name].item(), rel=1e-4)
        else:
            assert out1.terms[name].item() == pytest.approx(out2.terms[name].item(), rel=1e-5), name


# ------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize(
    "overrides,expect_off",
    [
        ([], set()),
        (["loss.cross=0"], {"cross.audio", "cross.text"}),
        (["loss.intra=0"], {"embed.video.mask_token", "embed.audio.mask_token", "embed.text.mask_token"}),
        (
            ["loss.intra=0", "loss.cross=0", "loss.window=0", "loss.disabled=[inter/v2l,inter/l2v]"],
            {"embed.video.mask_token", "embed.audio.mask_token", "cross.audio", "cross.text"}
            | {"embed.text.proj", "embed.text.mask_token", "context.text"},
        ),
        (
            ["loss.inter=0", "loss.cross=0", "loss.window=0", "loss.disabled=[intra/audio]"],
            {"embed.audio.proj", "embed.audio.mask_token", "context.audio"} | {"cross.audio", "cross.text"},
        ),
        (
            ["loss.intra=0", "loss.inter=0", "loss.cross=0"],
            {
                "embed.video.mask_token",
                "embed.audio.mask_token",
                "embed.text.mask_token",
                "cross.audio",
                "cross.text",
            },
        ),
    ],
    ids=["all", "no-cross", "no-intra", "v2a-only", "intra-video-text", "window-only"],
)
def test_gradients_reach_exactly_the_modules_whose_loss_is_on(overrides, expect_off):
    model = build(tiny(*overrides))
    out = model(make_batch(), generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    got = grads_by_module(model)
    assert {m for m, on in got.items() if not on} == expect_off
    for name, p in model.named_parameters():
        if any(name.startswith(m) for m in expect_off):
            assert p.grad is None, name  # not even computed


def test_every_term_off_is_an_error_and_unknown_term_names_are_refused():
    with pytest.raises(ValueError, match="every loss term is off"):
        build(tiny("loss.intra=0", "loss.inter=0", "loss.cross=0", "loss.window=0"))(make_batch())
    with pytest.raises(ValueError, match="loss.disabled"):
        tiny("loss.disabled=[inter/v2x]")


def test_shared_cross_modal_transformer_gets_gradients():
    model = build(tiny("cross.shared=true"))
    assert "cross.shared" in dict(model.named_modules()) and "cross.audio" not in dict(model.named_modules())
    model(make_batch()).loss.backward()
    assert model.cross["shared"].source_type.grad.abs().sum() > 0


# ------------------------------------------------------------------------------ padding & masks
def _pad(batch, masked, extra_shots=3, extra_tokens=4):
    """Add padded shots, padded tokens (garbage features) and one fully padded window."""
    n, k, _ = batch["video"].shape
    t = batch["text"].shape[1]
    g = torch.Generator().manual_seed(9)

    def grow(x, shape, fill_random):
        out = torch.randn(shape, generator=g) * 10 if fill_random else torch.zeros(shape, dtype=x.dtype)
        out[tuple(slice(0, s) for s in x.shape)] = x
        return out

    padded = {
        "video": grow(batch["video"], (n + 1, k + extra_shots, DIMS["video"]), True),
        "audio": grow(batch["audio"], (n + 1, k + extra_shots, DIMS["audio"]), True),
        "text": grow(batch["text"], (n + 1, t + extra_tokens, DIMS["text"]), True),
        "shot_mask": grow(batch["shot_mask"], (n + 1, k + extra_shots), False),
        "text_mask": grow(batch["text_mask"], (n + 1, t + extra_tokens), False),
        "token_shot": grow(batch["token_shot"], (n + 1, t + extra_tokens, k + extra_shots), False),
    }
    pm = {
        "video": grow(masked["video"], (n + 1, k + extra_shots), False),
        "audio": grow(masked["audio"], (n + 1, k + extra_shots), False),
        "text": grow(masked["text"], (n + 1, t + extra_tokens), False),
    }
    return padded, pm


@pytest.mark.parametrize("shared", [False, True])
def test_padding_does_not_change_the_loss(shared):
    # plain [MASK] replacement: BERT's random tokens are drawn from the batch, whose padding differs here
    # no shuffled negatives either: their random order depends on the padded length
    model = build(
        tiny(
            f"cross.shared={shared}",
            "masking.random_ratio=0",
            "masking.keep_ratio=0",
            "loss.window_shuffled=false",
            "loss.recon=1.0",
        )
    ).eval()
    batch = make_batch()
    masked = model.sample_masks(batch, torch.Generator().manual_seed(4))
    padded, pmasked = _pad(batch, masked)
    padded["movie"] = batch["movie"] + ["nothing"]  # the fully padded window takes no part
    out, out_p = model(batch, masked=masked), model(padded, masked=pmasked)
    for name in ALL_TERMS[:-1]:  # sync/audio is off (its shuffle draws differ with the padded window)
        assert out_p.terms[name].item() == pytest.approx(out.terms[name].item(), rel=1e-4, abs=1e-5), name
    f, fp = model.encode(batch), model.encode(padded)
    n, k = batch["shot_mask"].shape
    sm = batch["shot_mask"]
    for key in ("v_ctx", "a_ctx", "v_cross_a", "v_cross_l", "l_shot"):
        torch.testing.assert_close(fp[key][:n, :k][sm], f[key][sm], rtol=1e-4, atol=1e-5)


def test_masking_ratio_and_uniformity():
    g = torch.Generator().manual_seed(0)
    valid = torch.rand(64, 50, generator=g) > 0.3
    valid[0] = False
    valid[1, :3] = True
    valid[1, 3:] = False
    masked = sample_token_mask(valid, 0.2, g)
    assert not (masked & ~valid).any()
    counts = masked.sum(1)
    expected = torch.floor(valid.sum(1) * 0.2 + 0.5).long()
    assert torch.equal(counts, expected)
    assert counts[0] == 0 and counts[1] == 1
    assert masked.sum() / valid.sum() == pytest.approx(0.2, abs=0.01)
    # uniform over positions: every valid position of a full row is hit ~20% of the time
    full = torch.ones(4000, 30, dtype=torch.bool)
    freq = sample_token_mask(full, 0.2, g).float().mean(0)
    assert freq.min() > 0.17 and freq.max() < 0.23
    assert not sample_token_mask(full, 0.0, g).any()


def test_deterministic_given_a_seed():
    model = build()
    batch = make_batch()
    a = model(batch, generator=torch.Generator().manual_seed(7)).loss.item()
    b = model(batch, generator=torch.Generator().manual_seed(7)).loss.item()
    c = model(batch, generator=torch.Generator().manual_seed(8)).loss.item()
    assert a == b and a != c
    torch.manual_seed(5)
    d = model(batch).loss.item()
    torch.manual_seed(5)
    assert model(batch).loss.item() == d
    # same seed -> same initial weights
    w1, w2 = build(seed=3).state_dict(), build(seed=3).state_dict()
    assert all(torch.equal(w1[key], w2[key]) for key in w1)


def test_batches_without_text_or_shots_stay_finite():
    model = build()
    batch = make_batch()
    empty_text = dict(batch, text_mask=torch.zeros_like(batch["text_mask"]))
    empty_text["token_shot"] = torch.zeros_like(batch["token_shot"])
    out = model(empty_text)
    assert torch.isfinite(out.loss)
    for name in ("inter/v2l", "inter/l2v", "cross/a2l", "cross/l2a", "intra/text"):
        assert out.terms[name].item() == 0.0
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    no_tokens = dict(batch, text=batch["text"][:, :0], text_mask=batch["text_mask"][:, :0])
    no_tokens["token_shot"] = batch["token_shot"][:, :0]
    assert torch.isfinite(model(no_tokens).loss)
    feats = model.encode(no_tokens)
    assert feats["l_ctx"].shape == (4, 1, 32) and not feats["text_mask"].any()
    nothing = dict(empty_text, shot_mask=torch.zeros_like(batch["shot_mask"]))
    out = model(nothing)
    assert out.loss.item() == 0.0
    assert all(torch.isfinite(v).all() for v in model.encode(nothing).values() if v.is_floating_point())


# ---------------------------------------------------------------------------------------- encode
def test_encode_shapes_keys_and_masks():
    model = build().eval()
    batch = make_batch()
    with torch.no_grad():
        f = model.encode(batch)
    n, k, t, d = 4, 8, 12, 32
    shapes = {
        "v_base": (n, k, DIMS["video"]),
        "a_base": (n, k, DIMS["audio"]),
        "v_ctx": (n, k, d),
        "a_ctx": (n, k, d),
        "l_ctx": (n, t, d),
        "v_cross_a": (n, k, d),
        "v_cross_l": (n, k, d),
        "l_shot": (n, k, d),
        "shot_mask": (n, k),
        "text_mask": (n, t),
        "l_shot_mask": (n, k),
        "v_cross_l_mask": (n, k),
    }
    assert {key: tuple(v.shape) for key, v in f.items()} == shapes
    assert torch.equal(f["v_base"], batch["video"]) and torch.equal(f["shot_mask"], batch["shot_mask"])
    assert (f["v_ctx"][1, 5:] == 0).all() and (f["v_ctx"][1, :5] != 0).any()
    assert (f["l_ctx"][2] == 0).all() and not f["v_cross_l_mask"][2].any() and (f["v_cross_l"][2] == 0).all()
    assert f["l_shot_mask"][3].all() and not f["l_shot_mask"][2].any()
    assert f["l_shot_mask"][0, :6].all() and not f["l_shot_mask"][0, 6:].any()  # no token after shot 5
    # encode is deterministic in eval and does no masking: equal to a forward with nothing masked
    with torch.no_grad():
        assert torch.equal(model.encode(batch)["v_cross_a"], f["v_cross_a"])


def test_bad_batches_name_the_field():
    model = build()
    batch = make_batch()
    with pytest.raises(ValueError, match="'audio'.*expected shape"):
        model(dict(batch, audio=batch["audio"][..., :5]))
    with pytest.raises(ValueError, match="missing field 'token_shot'"):
        model({key: v for key, v in batch.items() if key != "token_shot"})
    with pytest.raises(ValueError, match="max_shots"):
        model(make_batch(k=20))
    with pytest.raises(ValueError, match="dims"):  # audio/text may be missing (a MAD store), video not
        LMP(tiny(), {"audio": 4, "text": 4})
    with pytest.raises(ValueError, match="dims"):
        LMP(tiny(), {"video": 4, "audio": -1})


# --------------------------------------------------------------------------------------- configs
def test_yaml_configs_load_with_overrides():
    paper = load_model_config(CONFIGS / "paper.yaml")
    assert (paper.encoder.layers, paper.cross.layers, paper.loss.temperature, paper.masking.ratio) == (
        3,
        3,
        0.1,
        0.2,
    )
    literal = load_model_config(CONFIGS / "paper_literal.yaml")  # the paper's choices, read literally
    assert (literal.loss.temperature, literal.masking.normalize, literal.cross.query) == (0.3, False, "video")
    assert (literal.encoder.rel_pos, literal.projection.absolute_position, literal.masking.random_ratio) == (
        0,
        True,
        0.0,
    )
    assert paper.max_shots >= 60
    demo = load_model_config(CONFIGS / "demo.yaml", ["encoder.d=64", "loss.intra=0"])
    assert demo.d == 64 and demo.loss.enabled_terms() == tuple(t for t in ALL_TERMS[3:-1] if "recon" not in t)
    assert ModelConfig().encoder.layers == 3 and ModelConfig().loss.temperature == 0.1
    assert model_config_to_dict(demo)["encoder"]["d"] == 64
    with pytest.raises(ConfigKeyError):
        load_model_config(CONFIGS / "tiny.yaml", ["encoder.depth=2"])
    with pytest.raises(ValidationError):
        load_model_config(CONFIGS / "tiny.yaml", ["encoder.d=wide"])
    with pytest.raises(ValueError, match="encoder.heads"):
        load_model_config(CONFIGS / "tiny.yaml", ["encoder.heads=5"])
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_model_config(CONFIGS / "nope.yaml")


def test_stop_gradient_option_changes_only_the_target_path():
    batch = make_batch()
    masked = build().sample_masks(batch, torch.Generator().manual_seed(2))
    grads = {}
    for sg in (False, True):
        model = build(tiny("loss.inter=0", "loss.cross=0", f"masking.stop_gradient={sg}"))
        out = model(batch, masked=masked)
        out.loss.backward()
        grads[sg] = (out.loss.item(), model.embed["video"].proj.weight.grad.clone())
    assert grads[False][0] == pytest.approx(grads[True][0])
    assert not torch.allclose(grads[False][1], grads[True][1])


# ---------------------------------------------------------------------------------- transformer
@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("cross", [False, True])
def test_block_equals_torch_transformer_layer(norm_first, cross):
    """Our batch-first SDPA layer computes exactly what nn.Transformer{Encoder,Decoder}Layer computes."""
    from lmp_model.config import EncoderConfig
    from lmp_model.modules.transformer import Block, attention_mask

    torch.manual_seed(0)
    d, heads = 16, 4
    cfg = EncoderConfig(d=d, heads=heads, ff_mult=2, dropout=0.0, norm_first=norm_first, rel_pos=0)
    ours = Block(d, cfg, cross)
    kind = torch.nn.TransformerDecoderLayer if cross else torch.nn.TransformerEncoderLayer
    ref = kind(d, heads, 2 * d, 0.0, "gelu", batch_first=True, norm_first=norm_first)
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(ours.self_attn.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(ours.self_attn.qkv.bias)
        ref.self_attn.out_proj.load_state_dict(ours.self_attn.out.state_dict())
        ref.linear1.load_state_dict(ours.ff[0].state_dict())
        ref.linear2.load_state_dict(ours.ff[3].state_dict())
        ref.norm1.load_state_dict(ours.norm1.state_dict())
        if cross:
            ref.multihead_attn.in_proj_weight.copy_(
                torch.cat([ours.cross_attn.q.weight, ours.cross_attn.kv.weight])
            )
            ref.multihead_attn.in_proj_bias.copy_(
                torch.cat([ours.cross_attn.q.bias, ours.cross_attn.kv.bias])
            )
            ref.multihead_attn.out_proj.load_state_dict(ours.cross_attn.out.state_dict())
            ref.norm2.load_state_dict(ours.norm_cross.state_dict())
            ref.norm3.load_state_dict(ours.norm2.state_dict())
        else:
            ref.norm2.load_state_dict(ours.norm2.state_dict())
    x, mem = torch.randn(3, 7, d), torch.randn(3, 5, d)
    valid = torch.ones(3, 7, dtype=torch.bool)
    valid[1, 4:] = False
    mem_valid = torch.ones(3, 5, dtype=torch.bool)
    mem_valid[2, 2:] = False
    ours.eval(), ref.eval()
    if cross:
        got = ours(x, attention_mask(valid), mem, attention_mask(mem_valid))
        want = ref(x, mem, tgt_key_padding_mask=~valid, memory_key_padding_mask=~mem_valid)
    else:
        got = ours(x, attention_mask(valid))
        want = ref(x, src_key_padding_mask=~valid)
    torch.testing.assert_close(got[valid], want[valid], rtol=1e-5, atol=1e-5)


def test_contrast_masked_false_leaves_masked_shots_out_of_the_contrastive_terms():
    model = build(tiny("loss.contrast_masked=false", "loss.window=0"))  # hooks capture the last call
    batch = make_batch()
    captured = {}
    model.context["video"].register_forward_hook(lambda m, i, o: captured.__setitem__("v", o))
    model.context["audio"].register_forward_hook(lambda m, i, o: captured.__setitem__("a", o))
    masked = model.sample_masks(batch, torch.Generator().manual_seed(5))
    out = model(batch, masked=masked)
    keep = batch["shot_mask"] & ~masked["video"] & ~masked["audio"]
    assert keep.sum() < batch["shot_mask"].sum()
    ref = info_nce(captured["v"][keep], captured["a"][keep], model.cfg.loss.temperature)
    assert out.terms["inter/v2a"].item() == pytest.approx(ref.item(), rel=1e-6)


def test_sync_term_needs_the_video_query_and_cannot_beat_chance_without_synchrony():
    """loss.sync: own vs shot-shuffled audio read by the video-queried decoder. With every shot's audio
    alike (and no masking), the shuffled window is the window itself: the BCE is >= ln 2."""
    with pytest.raises(ValueError, match="loss.sync"):
        tiny("loss.sync=1.0", "cross.query=source")
    cfg = ("loss.sync=1.0", "cross.query=video", "cross.align=true", "loss.window=0")
    model = build(tiny(*cfg))
    batch = make_batch()
    out = model(batch, generator=torch.Generator().manual_seed(0))
    assert out.chance["sync/audio"].item() == pytest.approx(math.log(2))
    out.loss.backward()
    assert model.sync_head.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.cross["audio"].parameters())
    flat = dict(batch, audio=batch["audio"][:, :1].expand_as(batch["audio"]).clone())
    only = build(tiny(*cfg, "loss.intra=0", "loss.inter=0", "loss.cross=0"))
    assert (
        only(flat, generator=torch.Generator().manual_seed(0)).terms["sync/audio"].item()
        >= math.log(2) - 1e-6
    )
