"""The three LMP losses (paper Sec. 3.2-3.3, Eq. 1-6) as pure functions of tensors.

Conventions: every function takes the valid elements only, or a boolean mask saying which are valid,
so padding and left-out positions never count. Losses are computed in float32. An empty set of pairs
gives a zero that stays connected to the graph (never NaN), so a batch without text still trains.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor


def _zero(*like: Tensor) -> Tensor:
    """A float32 zero connected to the inputs' graph (so backward works and gives zero grads)."""
    return sum((t.sum() * 0.0 for t in like), torch.zeros((), device=like[0].device)).float()


def chance_level(candidates: Tensor | int) -> Tensor:
    """ln(n): the InfoNCE loss of a model that ranks all n candidates alike (0 when n <= 1).

    Every LMP term is a softmax over its candidate set (Eq. 1: the masked tokens of the modality in the
    batch; Eq. 3-6: the valid pairs), so ln(n) is the level a term must go well below to show learning.
    """
    n = torch.as_tensor(candidates, dtype=torch.float32)
    return torch.log(n.clamp(min=1.0))


def exclude_group(logits: Tensor, group: Tensor | None) -> Tensor:
    """logits [n, n] with candidate j of anchor i set to -inf where group_j == group_i and j != i.

    The `LossConfig.negatives` switch: shots of the anchor's own window (or movie) are then neither
    positives nor negatives. group None returns the logits unchanged."""
    if group is None:
        return logits
    same = group[:, None] == group[None, :]
    same.fill_diagonal_(False)
    return logits.masked_fill(same, float("-inf"))


def group_chance(group: Tensor | None, n: int) -> Tensor:
    """Chance level of an InfoNCE over n pairs whose same-group candidates are excluded: the mean over
    anchors of ln(its candidates) (ln n without groups, `chance_level`)."""
    if group is None or n == 0:
        return chance_level(n)
    same = (group[:, None] == group[None, :]).sum(dim=1)
    return torch.log((n - same + 1).float()).mean()


def info_nce(a: Tensor, b: Tensor, temperature: float, group: Tensor | None = None) -> Tensor:
    """InfoNCE in one direction a -> b over n pairs (a_i, b_i) with all b_j (j != i) as negatives.

    Returns mean_i -log softmax_j(cos(a_i, b_j) / temperature)[i]; a, b are [n, d]; n = 0 gives 0.
    group [n] ints (optional): b_j with group_j == group_i, j != i, is not a candidate of a_i.
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(
            f"info_nce: expected a and b of the same shape [n, d], got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    if a.shape[0] == 0:
        return _zero(a, b)
    logits = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T / temperature
    return F.cross_entropy(exclude_group(logits, group), torch.arange(a.shape[0], device=a.device))


def masked_token_loss(
    pred: Tensor,
    target: Tensor,
    temperature: float = 1.0,
    normalize: bool = False,
    group: Tensor | None = None,
) -> Tensor:
    """Eq. 1 over the W masked tokens of one modality: each prediction must pick its own target.

    pred, target: [W, d], row w = the contextual output at a masked position and the projected input
    token there. Loss = mean_w -log softmax_{w'}(pred_w . target_{w'} / temperature)[w]. The paper's
    dot product is the default (normalize=False, temperature=1); `normalize` switches to cosine.
    group [W] ints (optional): targets of the same group as w (other than its own) are not candidates.
    """
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(
            f"masked_token_loss: expected pred and target of the same shape [W, d], got "
            f"{tuple(pred.shape)}, {tuple(target.shape)}"
        )
    if pred.shape[0] == 0:
        return _zero(pred, target)
    p, t = pred.float(), target.float()
    if normalize:
        p, t = F.normalize(p, dim=-1), F.normalize(t, dim=-1)
    logits = exclude_group(p @ t.T / temperature, group)
    return F.cross_entropy(logits, torch.arange(p.shape[0], device=p.device))


def intra_modal_loss(
    outputs: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    masked: Mapping[str, Tensor],
    temperature: float = 1.0,
    normalize: bool = False,
    groups: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Eq. 2, one `masked_token_loss` per modality.

    For each modality m: outputs[m] [N, L, d] contextual outputs, targets[m] [N, L, d] projected input
    tokens, masked[m] [N, L] bool, True at the [MASK]-replaced (valid) positions. The negatives of a
    token are all masked tokens of that modality in the batch, less those of the same group when
    groups[m] [N, L] ints is given (`exclude_group`). Returns {m: loss}.
    """
    losses = {}
    for m, sel in masked.items():
        group = groups[m][sel] if groups is not None else None
        losses[m] = masked_token_loss(outputs[m][sel], targets[m][sel], temperature, normalize, group)
    return losses


def language_per_shot(l_ctx: Tensor, text_mask: Tensor, token_shot: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. 4: l_bar_i = mean of the valid language tokens whose span overlaps shot i.

    l_ctx [N, T, d], text_mask [N, T], token_shot [N, T, k] -> (l_bar [N, k, d], has_tokens [N, k]).
    Shots without a token get zeros and has_tokens False.
    """
    member = (token_shot & text_mask.unsqueeze(-1)).to(l_ctx.dtype)  # [N, T, k]
    counts = member.sum(dim=1)  # [N, k]
    l_bar = torch.einsum("ntk,ntd->nkd", member, l_ctx) / counts.clamp(min=1).unsqueeze(-1)
    return l_bar, counts > 0


def inter_modal_loss(
    v: Tensor,
    a: Tensor,
    shot_mask: Tensor,
    l_shot: Tensor | None = None,
    l_shot_mask: Tensor | None = None,
    temperature: float = 0.3,
    terms: tuple[str, ...] = ("v2a", "a2v", "v2l", "l2v"),
    pair_mask: Tensor | None = None,
    group: Tensor | None = None,
) -> dict[str, Tensor]:
    """Eq. 3-5, video as the anchor.

    video <-> audio is one-to-one: every valid (window j, shot i) is a positive pair, all other valid
    N*k shots of the batch are the negatives. video <-> language pairs v_i with l_bar_i (Eq. 4, from
    `language_per_shot`), over the valid shots that have language tokens. v, a, l_shot: [N, k, d];
    shot_mask, l_shot_mask, pair_mask (extra restriction, e.g. unmasked shots): [N, k] bool; group
    [N, k] ints (optional): shots of the anchor's group are not its candidates (`exclude_group`).
    Returns the requested directions among v2a, a2v, v2l, l2v.
    """
    valid = shot_mask if pair_mask is None else shot_mask & pair_mask
    out = {}
    if "v2a" in terms or "a2v" in terms:
        vv, aa = v[valid], a[valid]
        g = group[valid] if group is not None else None
        if "v2a" in terms:
            out["v2a"] = info_nce(vv, aa, temperature, g)
        if "a2v" in terms:
            out["a2v"] = info_nce(aa, vv, temperature, g)
    if "v2l" in terms or "l2v" in terms:
        if l_shot is None or l_shot_mask is None:
            raise ValueError("inter_modal_loss: v2l/l2v need l_shot and l_shot_mask")
        sel = valid & l_shot_mask
        vv, ll = v[sel], l_shot[sel]
        g = group[sel] if group is not None else None
        if "v2l" in terms:
            out["v2l"] = info_nce(vv, ll, temperature, g)
        if "l2v" in terms:
            out["l2v"] = info_nce(ll, vv, temperature, g)
    return out


def cross_modal_loss(
    v_a: Tensor,
    v_l: Tensor,
    mask: Tensor,
    temperature: float = 0.3,
    terms: tuple[str, ...] = ("a2l", "l2a"),
    group: Tensor | None = None,
) -> dict[str, Tensor]:
    """Eq. 6: InfoNCE between audio-conditioned and language-conditioned video, both directions.

    v_a, v_l [N, k, d]; mask [N, k] bool selects the pairs (valid shots of windows with language);
    group [N, k] ints (optional) as in `inter_modal_loss`.
    Returns {"a2l": L(v_a -> v_l), "l2a": L(v_l -> v_a)} (the requested ones).
    """
    va, vl = v_a[mask], v_l[mask]
    g = group[mask] if group is not None else None
    out = {}
    if "a2l" in terms:
        out["a2l"] = info_nce(va, vl, temperature, g)
    if "l2a" in terms:
        out["l2a"] = info_nce(vl, va, temperature, g)
    return out


def shuffle_within(
    x: Tensor, valid: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Each window's valid positions in a random order: x [N, L, D], valid [N, L] -> (x', valid'),
    the valid tokens first (shuffled), then the padding."""
    keys = torch.rand(valid.shape, generator=generator, device="cpu").to(valid.device)
    pos = torch.arange(valid.shape[1], device=valid.device, dtype=keys.dtype)
    order = torch.where(valid, keys, 2.0 + pos).argsort(dim=1)
    return x.gather(1, order.unsqueeze(-1).expand_as(x)), valid.gather(1, order)


def time_average(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over the valid positions of each window: x [N, L, d], mask [N, L] -> [N, d] (zeros if none)."""
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp(min=1)


def window_loss(
    z: Tensor, group: Tensor, temperature: float = 0.1, negatives: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The window term: each window must pick out the other windows of its group (its movie).

    z [N, d] one embedding per window, group [N] ints (windows of one movie share a value), negatives
    [M, d] extra candidates that are never positive (e.g. the windows with their shots shuffled). For
    every anchor i with at least one positive P_i = {j != i: group_j = group_i}:
    loss_i = -mean_{p in P_i} log softmax_{c}(cos(z_i, c) / temperature)[p] over the candidates c = z_j
    (j != i) and all negatives (the multi-positive InfoNCE of SupCon), averaged over those anchors.
    Returns (loss, candidates per anchor = N - 1 + M, or 0 when no window has a positive: the loss is
    then a zero connected to the graph).
    """
    if z.dim() != 2 or group.shape != z.shape[:1]:
        raise ValueError(
            f"window_loss: expected z [N, d] and group [N], got {tuple(z.shape)}, {tuple(group.shape)}"
        )
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    pos = (group[:, None] == group[None, :]) & ~eye
    anchors = pos.any(dim=1)
    if n < 2 or not anchors.any():
        return _zero(z), z.new_zeros((), dtype=torch.long)
    zn = F.normalize(z.float(), dim=-1)
    logits = (zn @ zn.T / temperature).masked_fill(eye, float("-inf"))
    m = 0
    if negatives is not None and negatives.shape[0]:
        m = negatives.shape[0]
        logits = torch.cat([logits, zn @ F.normalize(negatives.float(), dim=-1).T / temperature], dim=1)
    logp = logits.log_softmax(dim=1)[:, :n].masked_fill(eye, 0.0)
    per_anchor = -(logp * pos).sum(dim=1) / pos.sum(dim=1).clamp(min=1)
    return per_anchor[anchors].mean(), torch.as_tensor(n - 1 + m, device=z.device)


def reconstruction_loss(pred: Tensor, base: Tensor) -> tuple[Tensor, Tensor]:
    """The reconstruction term (`LossConfig.recon`) over the W masked tokens of one modality.

    pred [W, D]: the head's estimate of each masked token's base features; base [W, D]: those features.
    The target is each token LayerNorm-standardised (zero mean, unit variance over its D features, no
    affine), so a movie's gain and the encoder's scale do not set the loss. Returns (mean squared error
    per feature, chance): chance = the same error for predicting the masked set's mean target for every
    token, the level of a model that ignores the context. W = 0 gives zeros connected to the graph.
    """
    if pred.shape != base.shape or pred.dim() != 2:
        raise ValueError(
            f"reconstruction_loss: expected pred and base of the same shape [W, D], got "
            f"{tuple(pred.shape)}, {tuple(base.shape)}"
        )
    if pred.shape[0] == 0:
        zero = _zero(pred)
        return zero, zero.detach()
    t = F.layer_norm(base.float(), base.shape[-1:])
    loss = (pred.float() - t).pow(2).mean()
    chance = (t - t.mean(0, keepdim=True)).pow(2).mean()
    return loss, chance.detach()


def sync_loss(logits: Tensor) -> tuple[Tensor, Tensor]:
    """The synchrony term: logits [2, n], row 0 for shots with their own audio (label 1), row 1 for the
    same shots reading shuffled audio (label 0); mean binary cross-entropy and its chance level ln 2."""
    if logits.numel() == 0:
        return _zero(logits), torch.log(torch.tensor(2.0, device=logits.device))
    target = torch.zeros_like(logits, dtype=torch.float32)
    target[0] = 1.0
    loss = F.binary_cross_entropy_with_logits(logits.float(), target)
    return loss, torch.log(torch.tensor(2.0, device=logits.device))
