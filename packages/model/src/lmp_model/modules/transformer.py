"""Sec. 3.2-3.3: contextual Transformer encoders and the cross-modal encoder-decoder transformer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lmp_model.config import CrossModalConfig, EncoderConfig


def attention_padding_mask(valid: Tensor) -> Tensor:
    """key_padding_mask (True = ignore) from a validity mask, safe for rows with no valid token.

    A row with nothing valid would make every attention weight -inf (NaN softmax); such rows keep
    position 0 visible instead. Their outputs are meaningless and are masked out downstream.
    """
    empty = ~valid.any(dim=1, keepdim=True)
    first = torch.zeros_like(valid)
    first[:, :1] = True
    return ~(valid | (empty & first))


def _encoder(d: int, cfg: EncoderConfig | CrossModalConfig) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        d,
        cfg.heads,
        cfg.ff_mult * d,
        cfg.dropout,
        cfg.activation,
        batch_first=True,
        norm_first=cfg.norm_first,
    )
    layer.self_attn.dropout = cfg.attn_dropout
    norm = nn.LayerNorm(d) if cfg.norm_first else None
    return nn.TransformerEncoder(layer, cfg.layers, norm=norm, enable_nested_tensor=False)


class ContextualEncoder(nn.Module):
    """One modality's contextual transformer: every token attends to the whole (valid) sequence."""

    def __init__(self, d: int, cfg: EncoderConfig):
        super().__init__()
        self.encoder = _encoder(d, cfg)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        return self.encoder(x, src_key_padding_mask=attention_padding_mask(valid))


class CrossModalTransformer(nn.Module):
    """Encoder-decoder transformer (Eq. 6): source = contextual audio or language, target = video.

    The decoder has no causal mask: every video shot sees all others and the whole source. With
    `num_sources` > 1 (the shared variant) a learned source-type embedding is added to the source.
    """

    def __init__(self, d: int, cfg: CrossModalConfig, num_sources: int = 1):
        super().__init__()
        self.encoder = _encoder(d, cfg)
        layer = nn.TransformerDecoderLayer(
            d,
            cfg.heads,
            cfg.ff_mult * d,
            cfg.dropout,
            cfg.activation,
            batch_first=True,
            norm_first=cfg.norm_first,
        )
        layer.self_attn.dropout = layer.multihead_attn.dropout = cfg.attn_dropout
        self.decoder = nn.TransformerDecoder(
            layer, cfg.layers, norm=nn.LayerNorm(d) if cfg.norm_first else None
        )
        self.source_type = nn.Parameter(torch.zeros(num_sources, d)) if num_sources > 1 else None

    def forward(
        self, src: Tensor, src_valid: Tensor, tgt: Tensor, tgt_valid: Tensor, source_index: int = 0
    ) -> Tensor:
        if self.source_type is not None:
            src = src + self.source_type[source_index]
        src_pad = attention_padding_mask(src_valid)
        memory = self.encoder(src, src_key_padding_mask=src_pad)
        return self.decoder(
            tgt,
            memory,
            tgt_key_padding_mask=attention_padding_mask(tgt_valid),
            memory_key_padding_mask=src_pad,
        )
