"""What makes the LMP terms learn: chance levels, BERT-style replacement, relative positions, the
cross-modal queries; and a short pretraining on a store with cross-shot structure that beats chance."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lmp_model.losses import chance_level, info_nce, masked_token_loss
from lmp_model.modules import sample_replacement, sample_token_mask

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_helpers import build, make_batch, tiny  # noqa: E402


# ---------------------------------------------------------------------------------- chance levels
def test_chance_level_is_the_loss_of_a_model_that_ranks_all_candidates_alike():
    for n in (1, 2, 7, 192):
        a = torch.randn(1, 8).expand(n, 8)  # every candidate identical: a uniform softmax
        assert info_nce(a, a.clone(), 0.3).item() == pytest.approx(math.log(n), abs=1e-5)
        assert masked_token_loss(a, a.clone()).item() == pytest.approx(math.log(n), abs=1e-5)
        assert chance_level(n).item() == pytest.approx(math.log(n), abs=1e-6)
    assert chance_level(0).item() == 0.0


@pytest.mark.parametrize("contrast_masked", [True, False])
def test_chance_levels_match_brute_force_candidate_counts(contrast_masked):
    """ln of the candidate count of every term, counted by loops over the batch."""
    model = build(tiny(f"loss.contrast_masked={contrast_masked}"))
    b = make_batch(n=4, k=8, t=12, seed=3)
    b["shot_mask"][1, 6:] = False  # a short window
    b["text_mask"][2, :] = False  # a window without language
    masked = {
        m: sample_token_mask(b["shot_mask"] if m != "text" else b["text_mask"], 0.25, torch.Generator().manual_seed(1))
        for m in ("video", "audio", "text")
    }  # fmt: skip
    out = model(b, masked=masked)
    n, k = b["shot_mask"].shape
    count: dict[str, int] = {}
    for m in ("video", "audio", "text"):
        count[f"intra/{m}"] = sum(bool(masked[m][j, i]) for j in range(n) for i in range(masked[m].shape[1]))
    va = vl = cross = 0
    for j in range(n):
        has_text = any(bool(b["text_mask"][j, t]) for t in range(b["text_mask"].shape[1]))
        for i in range(k):
            if not b["shot_mask"][j, i]:
                continue
            free_v = not masked["video"][j, i]
            free_va = free_v and not masked["audio"][j, i]
            words = [
                t
                for t in range(b["text_mask"].shape[1])
                if b["text_mask"][j, t]
                and b["token_shot"][j, t, i]
                and (contrast_masked or not masked["text"][j, t])
            ]
            va += contrast_masked or free_va
            vl += bool(words) and (contrast_masked or free_v)
            cross += has_text and (contrast_masked or free_va)
    count |= {"inter/v2a": va, "inter/a2v": va, "inter/v2l": vl, "inter/l2v": vl}
    count |= {"cross/a2l": cross, "cross/l2a": cross}
    windows = {"video": n, "audio": n, "text": sum(bool(b["text_mask"][j].any()) for j in range(n))}
    count |= {f"window/{m}": c - 1 + (c if m != "text" else 0) for m, c in windows.items()}  # + shuffled
    assert set(out.chance) == set(out.terms) == set(count)
    for name, c in count.items():
        assert c > 1, name
        assert out.chance[name].item() == pytest.approx(math.log(c), abs=1e-5), name


# ---------------------------------------------------------------------------------- replacement
def test_bert_replacement_splits_selected_positions_and_draws_valid_tokens():
    g = torch.Generator().manual_seed(0)
    valid = torch.rand(64, 50, generator=g) < 0.8
    selected = sample_token_mask(valid, 0.5, g)
    to_mask, swap = sample_replacement(selected, valid, 0.1, 0.1, g)
    n = selected.sum().item()
    random = (swap >= 0).sum().item()
    assert not (to_mask & ~selected).any() and not ((swap >= 0) & ~selected).any()
    assert not (to_mask & (swap >= 0)).any()
    assert to_mask.sum().item() / n == pytest.approx(0.8, abs=0.03)
    assert random / n == pytest.approx(0.1, abs=0.02)
    assert valid.flatten()[swap[swap >= 0]].all()  # random tokens are real tokens of the batch
    # no replacement asked: every selected position is [MASK]ed
    to_mask, swap = sample_replacement(selected, valid, 0.0, 0.0, g)
    assert torch.equal(to_mask, selected) and (swap == -1).all()


def test_random_and_kept_positions_are_predicted_too():
    """The masking term counts every selected position, whatever replaced its input."""
    model = build(tiny("masking.random_ratio=0.5", "masking.keep_ratio=0.5", "loss.inter=0", "loss.cross=0"))
    b = make_batch(seed=1)
    masked = {m: sample_token_mask(b["shot_mask"], 0.3, torch.Generator().manual_seed(2)) for m in ("video",)}
    masked["audio"] = masked["video"].clone()
    masked["text"] = sample_token_mask(b["text_mask"], 0.3, torch.Generator().manual_seed(3))
    out = model(b, masked=masked)
    assert out.chance["intra/video"].item() == pytest.approx(math.log(masked["video"].sum().item()), abs=1e-5)


# ---------------------------------------------------------------------------------- positions
def test_relative_position_bias_is_added_to_the_attention_logits():
    from lmp_model.modules.transformer import Attention, attention_mask

    torch.manual_seed(0)
    d, h, r, length = 16, 4, 3, 9
    att = Attention(d, h, 0.0, rel_pos=r)
    with torch.no_grad():
        att.rel_bias.normal_()
    x = torch.randn(2, length, d)
    valid = torch.ones(2, length, dtype=torch.bool)
    valid[1, 6:] = False
    got = att(x, attention_mask(valid))
    q, k, v = att.qkv(x).view(2, length, 3, h, d // h).permute(2, 0, 3, 1, 4)
    want = torch.zeros(2, h, length, d // h)
    for n in range(2):
        for head in range(h):
            for i in range(length):
                logits = torch.full((length,), float("-inf"))
                for j in range(length):
                    if valid[n, j]:
                        off = max(-r, min(r, j - i)) + r
                        logits[j] = (
                            q[n, head, i] @ k[n, head, j] / math.sqrt(d // h) + att.rel_bias[head, off]
                        )
                want[n, head, i] = torch.softmax(logits, 0) @ v[n, head]
    want = att.out(want.transpose(1, 2).reshape(2, length, d))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_alibi_start_makes_some_heads_local():
    from lmp_model.modules.transformer import Attention

    att = Attention(16, 4, 0.0, rel_pos=4)
    bias = att.rel_bias.detach()
    assert bias[:, 4].abs().max() == 0  # offset 0
    assert bias[0, 5] == -1.0 and bias[3, 5] == pytest.approx(-1 / 8)  # head 0 local, head 3 broad
    assert torch.equal(bias[:, :4].flip(1), bias[:, 5:])  # symmetric


def test_source_queries_decode_from_the_source_alone():
    """cross.query=source: v_cross_a depends on audio, not on the video (no shortcut via the residual)."""
    model = build(tiny("cross.query=source")).eval()
    b = make_batch(seed=4)
    e = model.encode(b)
    b2 = dict(b, video=b["video"] + torch.randn_like(b["video"]))
    e2 = model.encode(b2)
    torch.testing.assert_close(e["v_cross_a"], e2["v_cross_a"])
    torch.testing.assert_close(e["v_cross_l"], e2["v_cross_l"])
    assert not torch.allclose(e["v_ctx"], e2["v_ctx"])
    b3 = dict(b, audio=b["audio"] + torch.randn_like(b["audio"]))
    assert not torch.allclose(model.encode(b3)["v_cross_a"], e["v_cross_a"])
    # the paper's variant decodes the video
    paper = build(tiny("cross.query=video")).eval()
    assert not torch.allclose(paper.encode(b)["v_cross_a"], paper.encode(b2)["v_cross_a"])


def test_language_queries_are_the_shots_mean_words():
    """The language branch decodes Eq. 4's per-shot mean of the contextual language tokens."""
    from lmp_model.losses import language_per_shot

    model = build(tiny("cross.query=source")).eval()
    b = make_batch(seed=5)
    seen = {}

    def spy(module, args):
        seen["src"], seen["src_valid"], seen["tgt"] = args[0], args[1], args[2]

    handle = model.cross["text"].register_forward_pre_hook(spy)
    with torch.no_grad():
        e = model.encode(b)
    handle.remove()
    torch.testing.assert_close(seen["src"] * b["text_mask"].unsqueeze(-1), e["l_ctx"])
    want, _ = language_per_shot(seen["src"], b["text_mask"], b["token_shot"])
    torch.testing.assert_close(seen["tgt"], want)
    torch.testing.assert_close(
        seen["tgt"] * e["l_shot_mask"].unsqueeze(-1), e["l_shot"] * e["l_shot_mask"].unsqueeze(-1)
    )


def test_no_absolute_position_by_default_but_order_still_matters():
    """Without absolute positions the relative bias still makes the outputs depend on shot order."""
    model = build(tiny()).eval()
    assert model.embed["video"].pos is None
    b = make_batch(seed=6)
    perm = torch.tensor([1, 0, 2, 3, 4, 5, 6, 7])
    b2 = dict(b, video=b["video"][:, perm])
    out, out2 = model.encode(b)["v_ctx"], model.encode(b2)["v_ctx"][:, perm]
    assert not torch.allclose(out[0], out2[0], atol=1e-4)
    flat = build(tiny("encoder.rel_pos=0")).eval()  # a bag of shots: permuting permutes the outputs
    torch.testing.assert_close(flat.encode(b)["v_ctx"][0], flat.encode(b2)["v_ctx"][:, perm][0])


def test_token_norm_makes_projected_tokens_unit_scale():
    model = build(tiny())
    x = 50 * torch.randn(3, 8, model.dims["video"])
    _, target = model.embed["video"](x)
    assert target.std(-1).mean().item() == pytest.approx(1.0, abs=0.05)
    assert F.normalize(target, dim=-1).shape == target.shape


def test_exports_written_before_the_new_options_load_with_their_old_behaviour(tmp_path):
    """An lmp.json without the options added since (relative positions, source queries, ...) means the
    model was trained with the old behaviour: it loads as such, weights and outputs unchanged."""
    import json

    from model_helpers import CONFIGS

    from lmp_model import load_model_config
    from lmp_model.export import INFO_FILE, load_pretrained, save_pretrained

    old = build(
        load_model_config(
            CONFIGS / "paper_literal.yaml", ["encoder.d=32", "encoder.heads=2", "cross.heads=2"]
        )
    )
    folder = save_pretrained(tmp_path / "old", old, encoders=None)
    info = json.loads((folder / INFO_FILE).read_text())
    for section, key in [("projection", "token_norm"), ("projection", "absolute_position"),
                         ("projection", "position_std"), ("encoder", "rel_pos"), ("cross", "rel_pos"),
                         ("cross", "query"), ("masking", "random_ratio"), ("masking", "keep_ratio")]:  # fmt: skip
        del info["model"][section][key]
    (folder / INFO_FILE).write_text(json.dumps(info))
    loaded = load_pretrained(folder)
    assert loaded.cfg.cross.query == "video" and loaded.cfg.encoder.rel_pos == 0
    b = make_batch(seed=7)
    torch.testing.assert_close(loaded.encode(b)["v_ctx"], old.eval().encode(b)["v_ctx"])


# ------------------------------------------------------------------------------------ window term
def test_window_loss_matches_a_loop_reference():
    from lmp_model.losses import window_loss

    torch.manual_seed(0)
    z = torch.randn(7, 5)
    group = torch.tensor([0, 0, 1, 1, 1, 2, 3])  # 2 and 3: no positive (negatives only)
    loss, candidates = window_loss(z, group, 0.2)
    zn = F.normalize(z, dim=-1)
    per = []
    for i in range(7):
        pos = [j for j in range(7) if j != i and group[j] == group[i]]
        if not pos:
            continue
        den = sum(math.exp(float(zn[i] @ zn[j]) / 0.2) for j in range(7) if j != i)
        per.append(sum(-math.log(math.exp(float(zn[i] @ zn[p]) / 0.2) / den) for p in pos) / len(pos))
    assert loss.item() == pytest.approx(sum(per) / len(per), rel=1e-5)
    assert int(candidates) == 6
    same = torch.ones(4, 5)  # identical embeddings: the chance level ln(N - 1)
    assert window_loss(same, torch.tensor([0, 0, 1, 1]))[0].item() == pytest.approx(math.log(3), abs=1e-5)
    lonely, n = window_loss(torch.randn(3, 5, requires_grad=True), torch.tensor([0, 1, 2]))
    assert lonely.item() == 0.0 and int(n) == 0


def test_window_term_groups_windows_by_movie_and_reads_the_time_average():
    model = build(tiny())
    b = make_batch(n=4, k=8, t=12, seed=1)
    b["movie"] = ["a", "a", "b", "b"]
    out = model(b)
    for m, others in (("video", 7), ("audio", 7), ("text", 2)):  # 3 + 4 shuffled; window 2 has no language
        assert out.chance[f"window/{m}"].item() == pytest.approx(math.log(others), abs=1e-6)
        assert 0 < out.terms[f"window/{m}"].item() < 10
    b["movie"] = ["a", "b", "c", "d"]  # no two windows of one movie: no positives, a zero term
    out = model(b)
    assert out.terms["window/video"].item() == 0.0 and out.chance["window/video"].item() == 0.0
    off = build(tiny("loss.window=0"))
    assert not any(t.startswith("window/") for t in off(b).terms) and not hasattr(off, "window_head")


def test_shuffled_windows_hold_the_same_valid_tokens_in_another_order():
    from lmp_model.losses import shuffle_within

    x = torch.arange(2 * 6, dtype=torch.float32).view(2, 6, 1).expand(2, 6, 3).clone()
    valid = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    y, ok = shuffle_within(x, valid, torch.Generator().manual_seed(0))
    assert ok.tolist() == valid.tolist()  # valid first, padding after
    for j in range(2):
        assert sorted(y[j][ok[j], 0].tolist()) == x[j][valid[j], 0].tolist()
        assert (y[j, ~ok[j]] == x[j, ~valid[j]]).all()
    orders = {tuple(shuffle_within(x, valid)[0][0, :, 0].tolist()) for _ in range(20)}
    assert len(orders) > 10  # really another order, not a fixed one


def test_aligned_cross_attention_reads_the_query_shots_own_source():
    """cross.align: with the per-head bias raised, query shot i reads only memory shot i; without the
    option there is no such bias (a shot finds its source shot by content alone)."""
    from lmp_model.modules.transformer import attention_mask

    model = build(tiny("cross.align=true", "cross.query=video")).eval()
    attn = model.cross["audio"].decoder.layers[0].cross_attn
    attn.align_bias.data.fill_(30.0)
    d = attn.out.in_features
    x, mem = torch.randn(1, 8, d), torch.randn(1, 8, d)
    got = attn(
        x, attention_mask(torch.ones(1, 8, dtype=torch.bool)), mem, torch.eye(8, dtype=torch.bool)[None]
    )
    v = attn.kv(mem).view(1, 8, 2, attn.heads, -1)[0, :, 1]  # values [8, h, d/h]
    torch.testing.assert_close(got[0], attn.out(v.reshape(8, -1)), rtol=1e-3, atol=1e-3)
    b = make_batch(seed=4)
    base = model.encode(b)["v_cross_a"]
    poked = dict(b, audio=b["audio"] * 2.0)
    assert not torch.allclose(model.encode(poked)["v_cross_a"], base)  # the audio is read
    off = build(tiny("cross.query=video", "cross.align=false"))
    assert all(getattr(m, "align_bias", None) is None for m in off.modules())
