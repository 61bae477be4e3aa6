"""Sec. 3.2: choose which valid tokens are replaced by [MASK]."""

from __future__ import annotations

import torch
from torch import Tensor


def sample_token_mask(valid: Tensor, ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """Pick floor(ratio * n_valid + 0.5) valid positions per row, uniformly, without Python loops.

    valid [N, L] bool -> masked [N, L] bool (subset of valid). Draws from `generator` (on its own
    device) or the global torch RNG, so a seed fixes the choice.
    """
    if ratio <= 0:
        return torch.zeros_like(valid)
    device = generator.device if generator is not None else valid.device
    scores = torch.rand(valid.shape, generator=generator, device=device).to(valid.device)
    scores = scores.masked_fill(~valid, 2.0)  # padding sorts last
    ranks = scores.argsort(dim=1).argsort(dim=1)
    count = torch.floor(valid.sum(dim=1) * ratio + 0.5).long()
    return (ranks < count.unsqueeze(1)) & valid


def sample_replacement(
    selected: Tensor,
    valid: Tensor,
    random_ratio: float,
    keep_ratio: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's split of the selected positions: [MASK], a random token, or the input kept.

    selected, valid [N, L] bool -> (to_mask [N, L] bool, swap [N, L] long): each selected position is
    kept with probability `keep_ratio`, takes a random valid token of the batch (its flat index in
    `swap`, else -1) with probability `random_ratio`, and is replaced by [MASK] otherwise.
    """
    if random_ratio <= 0 and keep_ratio <= 0:
        return selected, torch.full(selected.shape, -1, dtype=torch.long, device=selected.device)
    device = generator.device if generator is not None else selected.device
    u = torch.rand(selected.shape, generator=generator, device=device).to(selected.device)
    to_random = selected & (u < random_ratio)
    to_mask = selected & (u >= random_ratio + keep_ratio)
    pool = valid.flatten().nonzero().flatten()
    swap = torch.full(selected.shape, -1, dtype=torch.long, device=selected.device)
    if len(pool) and to_random.any():
        pick = torch.randint(len(pool), selected.shape, generator=generator, device=device).to(pool.device)
        swap = torch.where(to_random, pool[pick], swap)
    return to_mask, swap
