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
