"""Sec. 3.1: projection of one modality's base features to width d, position embedding, [MASK]."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lmp_model.config import ProjectionConfig


class ModalityEmbedding(nn.Module):
    """Linear projection + learned position embedding + a learned [MASK] vector for one modality.

    `forward` returns (tokens, targets): tokens = input to the contextual transformer (projected,
    [MASK] where `masked`, plus position), targets = the projected input tokens without position,
    which are the targets of the masking loss (Eq. 1); leaving the position out keeps the loss from
    being solved by a masked output that merely encodes where it sits.
    """

    def __init__(self, dim_in: int, d: int, max_len: int, cfg: ProjectionConfig):
        super().__init__()
        self.max_len = max_len
        self.norm = nn.LayerNorm(dim_in) if cfg.input_norm else nn.Identity()
        self.proj = nn.Linear(dim_in, d)
        if cfg.init == "orthogonal":  # an isometry of the base features (ProjectionConfig.init)
            nn.init.orthogonal_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)
        self.token_norm = nn.LayerNorm(d) if cfg.token_norm else nn.Identity()
        self.pos = nn.Embedding(max_len, d) if cfg.absolute_position else None
        self.mask_token = nn.Parameter(torch.empty(d))
        self.drop = nn.Dropout(cfg.dropout)
        if self.pos is not None:
            nn.init.normal_(self.pos.weight, std=cfg.position_std)
        nn.init.normal_(self.mask_token, std=cfg.position_std)

    def forward(
        self, x: Tensor, masked: Tensor | None = None, swap: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """x [N, L, dim_in]; masked [N, L] bool: positions replaced by [MASK]; swap [N, L] long: where
        >= 0, the position takes the projected token at that flat index of [N * L] instead (BERT's
        random-token replacement)."""
        length = x.shape[1]
        if length > self.max_len:
            raise ValueError(
                f"sequence of {length} tokens exceeds the position embedding size {self.max_len}"
            )
        target = self.token_norm(self.proj(self.norm(x.to(self.proj.weight.dtype))))
        h = target
        if swap is not None:
            src = target.reshape(-1, target.shape[-1])[swap.clamp(min=0)]
            h = torch.where((swap >= 0).unsqueeze(-1), src, h)
        if masked is not None:
            h = torch.where(masked.unsqueeze(-1), self.mask_token.to(h.dtype), h)
        if self.pos is not None:
            h = h + self.pos(torch.arange(length, device=h.device))  # module call: ZeRO-3 gathers it
        return self.drop(h), target
