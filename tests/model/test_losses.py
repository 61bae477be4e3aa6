"""The LMP losses against brute-force loop references, closed forms, symmetry and padding rules."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmp_model.losses import (
    cross_modal_loss,
    info_nce,
    inter_modal_loss,
    intra_modal_loss,
    language_per_shot,
    masked_token_loss,
    reconstruction_loss,
)

TAU = 0.3


# ------------------------------------------------------------------------------- loop references
def _cos(x, y):
    dot = sum(float(p) * float(q) for p, q in zip(x, y))
    nx = math.sqrt(sum(float(p) ** 2 for p in x))
    ny = math.sqrt(sum(float(q) ** 2 for q in y))
    return dot / (nx * ny)


def ref_info_nce(a, b, tau):
    n = len(a)
    total = 0.0
    for i in range(n):
        logits = [_cos(a[i], b[j]) / tau for j in range(n)]
        total += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
    return total / n


def ref_masked(pred, target, temperature=1.0, normalize=False):
    n = len(pred)
    total = 0.0
    for i in range(n):
        logits = []
        for j in range(n):
            dot = sum(float(p) * float(q) for p, q in zip(pred[i], target[j]))
            if normalize:
                dot = _cos(pred[i], target[j])
            logits.append(dot / temperature)
        total += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
    return total / n


def ref_language_per_shot(l_ctx, text_mask, token_shot):
    n, t, _ = l_ctx.shape
    k = token_shot.shape[2]
    out, has = {}, {}
    for j in range(n):
        for i in range(k):
            members = [l_ctx[j, c] for c in range(t) if text_mask[j, c] and token_shot[j, c, i]]
            has[j, i] = bool(members)
            if members:
                out[j, i] = sum(members) / len(members)
    return out, has


def _pairs(x, y, keep):
    n, k = keep.shape
    xs = [x[j, i] for j in range(n) for i in range(k) if keep[j, i]]
    ys = [y[j, i] for j in range(n) for i in range(k) if keep[j, i]]
    return xs, ys


# ------------------------------------------------------------------------------------ info_nce
def test_info_nce_matches_loop_reference():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    assert info_nce(a, b, TAU).item() == pytest.approx(ref_info_nce(a, b, TAU), rel=1e-5)
    assert info_nce(b, a, TAU).item() == pytest.approx(ref_info_nce(b, a, TAU), rel=1e-5)
    assert info_nce(a, b, TAU).item() != pytest.approx(info_nce(b, a, TAU).item(), rel=1e-3)


def test_info_nce_closed_forms():
    n = 6
    eye = torch.eye(n)
    # identical pairs, orthogonal negatives: -log(e^{1/tau} / (e^{1/tau} + n - 1))
    expected = math.log(1 + (n - 1) * math.exp(-1 / TAU))
    assert info_nce(eye, eye, TAU).item() == pytest.approx(expected, rel=1e-6)
    # cosine: scale of either side does not matter
    assert info_nce(3 * eye, 0.5 * eye, TAU).item() == pytest.approx(expected, rel=1e-6)
    # all-equal inputs: every logit equal -> log n
    same = torch.ones(n, 4)
    assert info_nce(same, same, TAU).item() == pytest.approx(math.log(n), rel=1e-6)
    # one pair: nothing to contrast -> 0
    assert info_nce(torch.randn(1, 3), torch.randn(1, 3), TAU).item() == pytest.approx(0.0, abs=1e-7)


def test_info_nce_symmetric_and_permutation_invariant():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(9, 4, generator=g)
    # a symmetric similarity matrix gives the same loss both ways
    assert info_nce(a, a, TAU).item() == pytest.approx(info_nce(a, a, TAU).item())
    b = torch.randn(9, 4, generator=g)
    perm = torch.randperm(9, generator=g)
    assert info_nce(a[perm], b[perm], TAU).item() == pytest.approx(info_nce(a, b, TAU).item(), rel=1e-6)


def test_info_nce_empty_is_zero_with_grad_and_bad_shapes_raise():
    a = torch.zeros(0, 4, requires_grad=True)
    loss = info_nce(a, torch.zeros(0, 4), TAU)
    assert loss.item() == 0.0
    loss.backward()
    assert a.grad is not None and torch.equal(a.grad, torch.zeros(0, 4))
    with pytest.raises(ValueError, match="same shape"):
        info_nce(torch.zeros(3, 4), torch.zeros(2, 4), TAU)


# --------------------------------------------------------------------------- masked token loss
@pytest.mark.parametrize("normalize,temperature", [(False, 1.0), (True, 0.5), (False, 2.0)])
def test_masked_token_loss_matches_loop_reference(normalize, temperature):
    g = torch.Generator().manual_seed(2)
    pred, target = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    got = masked_token_loss(pred, target, temperature=temperature, normalize=normalize).item()
    assert got == pytest.approx(ref_masked(pred, target, temperature, normalize), rel=1e-5)


def test_masked_token_loss_uses_raw_dot_product_by_default():
    n = 5
    eye = torch.eye(n)
    # Eq. 1 dot product: identical orthonormal pairs give log(1 + (n-1) e^{-1}); scaling matters
    assert masked_token_loss(eye, eye).item() == pytest.approx(math.log(1 + (n - 1) * math.exp(-1)), rel=1e-6)
    assert masked_token_loss(2 * eye, 2 * eye).item() == pytest.approx(
        math.log(1 + (n - 1) * math.exp(-4)), rel=1e-4
    )
    same = torch.ones(n, 3)
    assert masked_token_loss(same, same).item() == pytest.approx(math.log(n), rel=1e-6)
    assert masked_token_loss(torch.zeros(0, 3), torch.zeros(0, 3)).item() == 0.0


def test_intra_modal_loss_selects_masked_tokens_across_the_batch():
    g = torch.Generator().manual_seed(3)
    out, tgt = torch.randn(3, 4, 6, generator=g), torch.randn(3, 4, 6, generator=g)
    sel = torch.tensor([[1, 0, 0, 1], [0, 0, 0, 0], [0, 1, 1, 0]], dtype=torch.bool)
    got = intra_modal_loss({"video": out}, {"video": tgt}, {"video": sel})["video"].item()
    preds = [out[j, i] for j in range(3) for i in range(4) if sel[j, i]]
    targets = [tgt[j, i] for j in range(3) for i in range(4) if sel[j, i]]
    assert got == pytest.approx(ref_masked(preds, targets), rel=1e-5)


# ---------------------------------------------------------------------------- language per shot
def test_language_per_shot_matches_loop_reference():
    g = torch.Generator().manual_seed(4)
    n, t, k, d = 3, 7, 5, 4
    l_ctx = torch.randn(n, t, d, generator=g)
    text_mask = torch.rand(n, t, generator=g) > 0.3
    token_shot = torch.rand(n, t, k, generator=g) > 0.6
    l_bar, has = language_per_shot(l_ctx, text_mask, token_shot)
    ref, ref_has = ref_language_per_shot(l_ctx, text_mask, token_shot)
    for j in range(n):
        for i in range(k):
            assert bool(has[j, i]) == ref_has[j, i]
            if ref_has[j, i]:
                torch.testing.assert_close(l_bar[j, i], ref[j, i])
            else:
                assert torch.equal(l_bar[j, i], torch.zeros(d))
    assert has.any() and not has.all()


# --------------------------------------------------------------------------- inter / cross terms
def _inter_inputs(seed=5, n=3, k=5, d=4, t=8):
    g = torch.Generator().manual_seed(seed)
    v, a = torch.randn(n, k, d, generator=g), torch.randn(n, k, d, generator=g)
    shot_mask = torch.ones(n, k, dtype=torch.bool)
    shot_mask[1, 3:] = False
    l_ctx = torch.randn(n, t, d, generator=g)
    text_mask = torch.rand(n, t, generator=g) > 0.2
    token_shot = torch.rand(n, t, k, generator=g) > 0.7
    return v, a, shot_mask, l_ctx, text_mask, token_shot


def test_inter_modal_loss_matches_loop_reference():
    v, a, shot_mask, l_ctx, text_mask, token_shot = _inter_inputs()
    l_bar, has = language_per_shot(l_ctx, text_mask, token_shot)
    got = inter_modal_loss(v, a, shot_mask, l_bar, has, temperature=TAU)
    vs, as_ = _pairs(v, a, shot_mask)
    assert len(vs) == 13  # all valid N*k shots, padding left out
    assert got["v2a"].item() == pytest.approx(ref_info_nce(vs, as_, TAU), rel=1e-5)
    assert got["a2v"].item() == pytest.approx(ref_info_nce(as_, vs, TAU), rel=1e-5)
    ref, ref_has = ref_language_per_shot(l_ctx, text_mask, token_shot)
    keep = [(j, i) for j in range(3) for i in range(5) if shot_mask[j, i] and ref_has[j, i]]
    assert 0 < len(keep) < 13  # some shots have no token and are left out
    vl = [v[j, i] for j, i in keep]
    ll = [ref[j, i] for j, i in keep]
    assert got["v2l"].item() == pytest.approx(ref_info_nce(vl, ll, TAU), rel=1e-5)
    assert got["l2v"].item() == pytest.approx(ref_info_nce(ll, vl, TAU), rel=1e-5)


def test_inter_modal_loss_symmetry_and_term_selection():
    v, a, shot_mask, *_ = _inter_inputs(6)
    fwd = inter_modal_loss(v, a, shot_mask, terms=("v2a", "a2v"))
    swapped = inter_modal_loss(a, v, shot_mask, terms=("v2a", "a2v"))
    assert fwd["v2a"].item() == pytest.approx(swapped["a2v"].item(), rel=1e-6)
    assert fwd["a2v"].item() == pytest.approx(swapped["v2a"].item(), rel=1e-6)
    assert set(inter_modal_loss(v, a, shot_mask, terms=("a2v",))) == {"a2v"}
    with pytest.raises(ValueError, match="l_shot"):
        inter_modal_loss(v, a, shot_mask, terms=("v2l",))


def test_inter_modal_loss_padding_invariant():
    v, a, shot_mask, l_ctx, text_mask, token_shot = _inter_inputs(7)
    n, k, d = v.shape
    t = l_ctx.shape[1]
    before = inter_modal_loss(v, a, shot_mask, *language_per_shot(l_ctx, text_mask, token_shot), TAU)
    # two padded shots and three padded tokens full of garbage, plus a fully padded window
    g = torch.Generator().manual_seed(8)
    v2 = torch.cat([v, 100 * torch.randn(n, 2, d, generator=g)], 1)
    a2 = torch.cat([a, 100 * torch.randn(n, 2, d, generator=g)], 1)
    v2 = torch.cat([v2, torch.randn(1, k + 2, d, generator=g)], 0)
    a2 = torch.cat([a2, torch.randn(1, k + 2, d, generator=g)], 0)
    sm2 = torch.zeros(n + 1, k + 2, dtype=torch.bool)
    sm2[:n, :k] = shot_mask
    l2 = torch.cat([l_ctx, 100 * torch.randn(n, 3, d, generator=g)], 1)
    l2 = torch.cat([l2, torch.randn(1, t + 3, d, generator=g)], 0)
    tm2 = torch.zeros(n + 1, t + 3, dtype=torch.bool)
    tm2[:n, :t] = text_mask
    ts2 = torch.ones(n + 1, t + 3, k + 2, dtype=torch.bool)  # padded tokens claim every shot
    ts2[:n, :t, :k] = token_shot
    ts2[:n, :t, k:] = False
    after = inter_modal_loss(v2, a2, sm2, *language_per_shot(l2, tm2, ts2), TAU)
    for name in before:
        assert after[name].item() == pytest.approx(before[name].item(), rel=1e-6), name


def test_cross_modal_loss_matches_reference_and_is_symmetric():
    v, a, shot_mask, *_ = _inter_inputs(9)
    got = cross_modal_loss(v, a, shot_mask, TAU)
    xs, ys = _pairs(v, a, shot_mask)
    assert got["a2l"].item() == pytest.approx(ref_info_nce(xs, ys, TAU), rel=1e-5)
    assert got["l2a"].item() == pytest.approx(ref_info_nce(ys, xs, TAU), rel=1e-5)
    swapped = cross_modal_loss(a, v, shot_mask, TAU)
    assert got["a2l"].item() == pytest.approx(swapped["l2a"].item(), rel=1e-6)
    # identical conditioned features with orthogonal directions: the analytic value
    eye = torch.eye(6).reshape(2, 3, 6)
    mask = torch.ones(2, 3, dtype=torch.bool)
    value = math.log(1 + 5 * math.exp(-1 / TAU))
    assert cross_modal_loss(eye, eye, mask, TAU)["l2a"].item() == pytest.approx(value, rel=1e-6)


def test_losses_are_float32_from_bf16_inputs():
    a = torch.randn(4, 8).bfloat16()
    loss = info_nce(a, a, TAU)
    assert loss.dtype == torch.float32
    ref = F.cross_entropy(
        F.normalize(a.float(), dim=-1) @ F.normalize(a.float(), dim=-1).T / TAU, torch.arange(4)
    )
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)


def test_reconstruction_loss_matches_loop_reference():
    """Each masked token's base features standardised on their own, squared error per feature; chance =
    the error of predicting the set's mean standardised target for every token."""
    g = torch.Generator().manual_seed(3)
    base = torch.randn(7, 5, generator=g) * 3 + 1
    pred = torch.randn(7, 5, generator=g)
    loss, chance = reconstruction_loss(pred, base)
    targets = []
    for row in base.tolist():
        mu = sum(row) / len(row)
        var = sum((x - mu) ** 2 for x in row) / len(row)
        targets.append([(x - mu) / math.sqrt(var + 1e-5) for x in row])
    err = sum((p - t) ** 2 for prow, trow in zip(pred.tolist(), targets) for p, t in zip(prow, trow))
    assert loss.item() == pytest.approx(err / 35, rel=1e-5)
    mean = [sum(trow[j] for trow in targets) / 7 for j in range(5)]
    ch = sum((t - mean[j]) ** 2 for trow in targets for j, t in enumerate(trow))
    assert chance.item() == pytest.approx(ch / 35, rel=1e-5)
    # the perfect prediction reaches 0; the set's mean reaches chance
    t = torch.tensor(targets)
    assert reconstruction_loss(t, base)[0].item() == pytest.approx(0.0, abs=1e-6)
    assert reconstruction_loss(t.mean(0).expand(7, 5), base)[0].item() == pytest.approx(ch / 35, rel=1e-5)


def test_reconstruction_loss_empty_and_bad_shapes():
    empty = torch.zeros(0, 4, requires_grad=True)
    loss, chance = reconstruction_loss(empty, torch.zeros(0, 4))
    assert loss.item() == 0.0 and chance.item() == 0.0
    loss.backward()
    with pytest.raises(ValueError, match=r"same shape \[W, D\]"):
        reconstruction_loss(torch.zeros(3, 4), torch.zeros(3, 5))


# ------------------------------------------------------------------- LossConfig.negatives (groups)
def ref_grouped_nce(a, b, group, tau, normalize=True):
    """Loop reference: candidates of anchor i are b_i and every b_j of another group."""
    n = len(a)
    total = 0.0
    for i in range(n):
        cands = [j for j in range(n) if j == i or group[j] != group[i]]
        score = {}
        for j in cands:
            dot = sum(float(p) * float(q) for p, q in zip(a[i], b[j]))
            score[j] = (_cos(a[i], b[j]) if normalize else dot) / tau
        total += -(score[i] - math.log(sum(math.exp(x) for x in score.values())))
    return total / n


def test_grouped_info_nce_and_masked_loss_match_loop_reference():
    torch.manual_seed(3)
    a, b = torch.randn(9, 4), torch.randn(9, 4)
    group = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    assert info_nce(a, b, TAU, group).item() == pytest.approx(ref_grouped_nce(a, b, group, TAU), rel=1e-5)
    got = masked_token_loss(a, b, 0.5, normalize=False, group=group).item()
    assert got == pytest.approx(ref_grouped_nce(a, b, group, 0.5, normalize=False), rel=1e-5)
    # one group per anchor: the ungrouped loss; every anchor alone in the batch of its group: zero
    assert info_nce(a, b, TAU, torch.arange(9)).item() == pytest.approx(info_nce(a, b, TAU).item(), rel=1e-6)
    assert info_nce(a, b, TAU, torch.zeros(9, dtype=torch.long)).item() == pytest.approx(0.0, abs=1e-6)


def test_group_chance_counts_the_candidates():
    from lmp_model.losses import group_chance

    group = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    # candidates: 9 - 3 + 1 = 7 (x3), 9 - 2 + 1 = 8 (x2), 9 - 4 + 1 = 6 (x4)
    expected = (3 * math.log(7) + 2 * math.log(8) + 4 * math.log(6)) / 9
    assert group_chance(group, 9).item() == pytest.approx(expected, rel=1e-6)
    assert group_chance(None, 9).item() == pytest.approx(math.log(9), rel=1e-6)


def test_inter_and_cross_terms_drop_same_window_candidates():
    torch.manual_seed(4)
    n, k, d = 3, 4, 5
    v, a = torch.randn(n, k, d), torch.randn(n, k, d)
    mask = torch.rand(n, k) > 0.2
    win = torch.arange(n)[:, None].expand(n, k)
    vs, as_ = _pairs(v, a, mask)
    gs = [int(win[j, i]) for j in range(n) for i in range(k) if mask[j, i]]
    got = inter_modal_loss(v, a, mask, temperature=TAU, terms=("v2a", "a2v"), group=win)
    assert got["v2a"].item() == pytest.approx(ref_grouped_nce(vs, as_, gs, TAU), rel=1e-5)
    assert got["a2v"].item() == pytest.approx(ref_grouped_nce(as_, vs, gs, TAU), rel=1e-5)
    cm = cross_modal_loss(v, a, mask, temperature=TAU, terms=("a2l",), group=win)
    assert cm["a2l"].item() == pytest.approx(ref_grouped_nce(vs, as_, gs, TAU), rel=1e-5)


def test_sync_loss_is_the_binary_cross_entropy_of_own_vs_shuffled():
    from lmp_model.losses import sync_loss

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.3, -2.0, 1.0]])
    own = [math.log1p(math.exp(-x)) for x in logits[0].tolist()]  # -log sigmoid(x)
    other = [math.log1p(math.exp(x)) for x in logits[1].tolist()]  # -log (1 - sigmoid(x))
    loss, chance = sync_loss(logits)
    assert loss.item() == pytest.approx(sum(own + other) / 6, rel=1e-6)
    assert chance.item() == pytest.approx(math.log(2))
    assert sync_loss(torch.zeros(2, 5))[0].item() == pytest.approx(math.log(2), rel=1e-6)
    assert sync_loss(torch.zeros(2, 0))[0].item() == 0.0
