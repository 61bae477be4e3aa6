"""Sec. 3.2-3.3: contextual Transformer encoders and the cross-modal encoder-decoder transformer.

Standard Transformer [45] layers written batch-first on `F.scaled_dot_product_attention` with a fused
QKV projection: unlike `nn.MultiheadAttention` (which transposes to sequence-first and copies q/k/v)
this keeps PyTorch's fused flash-attention kernel on CPU and GPU without layout copies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmp_model.config import CrossModalConfig, EncoderConfig

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


def attention_mask(valid: Tensor) -> Tensor:
    """[N, 1, 1, S] bool attention mask (True = may attend) from a [N, S] validity mask.

    A row with nothing valid would make every attention weight -inf (NaN softmax); such rows keep
    position 0 visible instead. Their outputs are meaningless and are masked out downstream.
    """
    empty = ~valid.any(dim=1, keepdim=True)
    first = torch.zeros_like(valid)
    first[:, :1] = True
    return (valid | (empty & first))[:, None, None, :]


class Attention(nn.Module):
    """Multi-head attention, batch-first; self-attention (fused QKV) or attention to a memory."""

    def __init__(
        self, d: int, heads: int, dropout: float, cross: bool = False, rel_pos: int = 0, align: bool = False
    ):
        super().__init__()
        self.heads, self.dropout, self.cross = heads, dropout, cross
        self.rel_pos = rel_pos
        # cross-attention only: a learned bias per head on the memory elements aligned with the query
        # (same shot), started at 4, 2, 1, ... so some heads read their own shot and others everything
        self.align_bias = (
            nn.Parameter(2.0 ** (2 - torch.arange(heads, dtype=torch.float32))) if cross and align else None
        )
        # learned bias per head and clipped offset j - i (T5-style relative position; self-attention only)
        self.rel_bias = None
        if rel_pos and not cross:
            # ALiBi-style start (Press et al. 2022): head h sees offset o at bias -|o| / 2^h, so some heads
            # begin local (the neighbouring shots) and others global; the biases are learnt from there.
            slopes = 2.0 ** -torch.arange(heads, dtype=torch.float32)
            offsets = torch.arange(-rel_pos, rel_pos + 1, dtype=torch.float32).abs()
            self.rel_bias = nn.Parameter(-slopes[:, None] * offsets[None, :])
        if cross:
            self.q = nn.Linear(d, d)
            self.kv = nn.Linear(d, 2 * d)
        else:
            self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(
        self, x: Tensor, mask: Tensor, memory: Tensor | None = None, align: Tensor | None = None
    ) -> Tensor:
        """align [N, L, S] (cross-attention with `align`): 1 where memory element s belongs to query l's shot."""
        n, length, d = x.shape
        h = self.heads
        if self.cross:
            q = self.q(x).view(n, length, h, d // h).transpose(1, 2)
            k, v = self.kv(memory).view(n, memory.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = self.qkv(x).view(n, length, 3, h, d // h).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        if self.rel_bias is not None:
            pos = torch.arange(length, device=x.device)
            offset = (pos[None, :] - pos[:, None]).clamp(-self.rel_pos, self.rel_pos) + self.rel_pos
            bias = self.rel_bias[:, offset].to(q.dtype)  # [h, L, L]
            mask = bias.unsqueeze(0).masked_fill(~mask, float("-inf"))
        if self.align_bias is not None and align is not None:
            bias = self.align_bias.to(q.dtype)[None, :, None, None] * align.to(q.dtype)[:, None]
            mask = bias.masked_fill(~mask, float("-inf"))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.out(o.transpose(1, 2).reshape(n, length, d))


class Block(nn.Module):
    """One Transformer layer: self-attention, optional cross-attention to a memory, feed-forward."""

    def __init__(self, d: int, cfg: EncoderConfig | CrossModalConfig, cross: bool = False):
        super().__init__()
        self.norm_first = cfg.norm_first
        self.self_attn = Attention(d, cfg.heads, cfg.attn_dropout, rel_pos=cfg.rel_pos)
        self.norm1 = nn.LayerNorm(d)
        align = bool(getattr(cfg, "align", False))
        self.cross_attn = (
            Attention(d, cfg.heads, cfg.attn_dropout, cross=True, align=align) if cross else None
        )
        self.norm_cross = nn.LayerNorm(d) if cross else None
        self.ff = nn.Sequential(
            nn.Linear(d, cfg.ff_mult * d),
            _ACTIVATIONS[cfg.activation](),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.ff_mult * d, d),
        )
        self.norm2 = nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        ls = float(getattr(cfg, "layer_scale", 0.0))  # LayerScale (CaiT): per-channel branch gains
        self.scale = nn.Parameter(torch.full((3 if cross else 2, d), ls)) if ls > 0 else None

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        align: Tensor | None = None,
    ):
        sublayers = [(self.norm1, lambda y: self.self_attn(y, mask))]
        if self.cross_attn is not None:
            sublayers.append((self.norm_cross, lambda y: self.cross_attn(y, memory_mask, memory, align)))
        sublayers.append((self.norm2, self.ff))
        for i, (norm, f) in enumerate(sublayers):
            y = f(norm(x) if self.norm_first else x)
            if self.scale is not None:
                y = y * self.scale[i]
            x = x + self.drop(y) if self.norm_first else norm(x + self.drop(y))
        return x


class Stack(nn.Module):
    """`layers` blocks, plus a final LayerNorm in the pre-LN arrangement."""

    def __init__(self, d: int, cfg: EncoderConfig | CrossModalConfig, cross: bool = False):
        super().__init__()
        if cfg.activation not in _ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(_ACTIVATIONS)}, got {cfg.activation!r}")
        self.layers = nn.ModuleList(Block(d, cfg, cross) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(d) if cfg.norm_first else nn.Identity()

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        align: Tensor | None = None,
    ):
        for layer in self.layers:
            x = layer(x, mask, memory, memory_mask, align)
        return self.norm(x)


class ContextualEncoder(nn.Module):
    """One modality's contextual transformer: every token attends to the whole (valid) sequence."""

    def __init__(self, d: int, cfg: EncoderConfig):
        super().__init__()
        self.encoder = Stack(d, cfg)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        return self.encoder(x, attention_mask(valid))


class CrossModalTransformer(nn.Module):
    """Encoder-decoder transformer (Eq. 6): source = contextual audio or language, target = one per shot.

    The decoder has no causal mask: every shot sees all others and the whole source. With
    `num_sources` > 1 (the shared variant) a learned source-type embedding is added to the source. What
    the decoder decodes (contextual video, or the source's own per-shot summary) is the caller's choice
    (`CrossModalConfig.query`).
    """

    def __init__(self, d: int, cfg: CrossModalConfig, num_sources: int = 1):
        super().__init__()
        self.encoder = Stack(d, cfg)
        self.decoder = Stack(d, cfg, cross=True)
        self.source_type = nn.Parameter(torch.zeros(num_sources, d)) if num_sources > 1 else None

    def forward(
        self,
        src: Tensor,
        src_valid: Tensor,
        tgt: Tensor,
        tgt_valid: Tensor,
        source_index: int = 0,
        align: Tensor | None = None,
    ) -> Tensor:
        """align [N, k, S]: which source elements belong to each target shot (`CrossModalConfig.align`)."""
        if self.source_type is not None:
            src = src + self.source_type[source_index]
        src_mask = attention_mask(src_valid)
        memory = self.encoder(src, src_mask)
        return self.decoder(tgt, attention_mask(tgt_valid), memory, src_mask, align)
