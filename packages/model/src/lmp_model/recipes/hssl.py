"""Hierarchical SSL's contextualiser pretraining: event mask prediction (Xiao et al., Sec. 3.3).

Paper -> our store:
- The backbone (Sec. 3.2) is our frozen base encoder; its per-clip features v_t are our shots' base
  features. Tokens are shots: video by default, `modalities` adds audio and/or language (the mean of the
  base language tokens over the shot); a shot token is the sum of its modalities' projections.
- Span masking: per window of N valid shots, a size m uniform in {1..floor(alpha N)} (capped at N - 1,
  so a token of context is left; windows of one shot are not masked) and a start uniform in
  {1..N - m + 1}; all modalities of the masked shots become their [MASK] vectors (`sample_span_mask`).
- TxE: `lmp_model.modules.ContextualEncoder` (3 layers as the paper; width/heads from `encoder`, by
  default LMP's 512/8 rather than the paper's 1024/16, so both recipes spend the same budget).
- Eq. 1: the L2-normalised output at a masked shot, through a linear head to the target's width, must
  pick its target among itself and K distractors of a FIFO queue (tau 0.1, K 65536, alpha 0.6: the
  paper's values). Targets (`target`): "base" (default) = the shot's base feature, the fixed backbone
  output the paper predicts (a fixed target keeps the queue consistent without a momentum encoder);
  "projected" = the shot's projected input token, detached (its queue goes stale as the projection learns).
- Distractors are the targets of earlier batches' masked shots; slots holding the query's own shot
  (a store smaller than K) are left out (ids from the batch's `movie`/`start`). Chance = mean ln(1 + valid
  distractors). The queue starts empty, so the first step has no distractors (loss 0).
- `loss: l2`: the paper's L2 variant, ||v_hat - v||^2 of normalised vectors, no queue; its chance level is
  the loss of predicting the normalised mean target of the batch.
- `sampling: max_discrepancy` (Sec. 4.1, Table 2): discrepancy of shot i = ||v_hat_i - v_hat'_i|| between
  the L2-normalised TxE outputs at i without masking and with only shot i masked (eval mode, no grad); the
  span of the sampled size with the largest summed discrepancy is masked (for m = 1: the max-discrepancy
  shot). The paper names the token rule only; the span extension is ours.
Features for probes: v_base, a_base (as given) and v_ctx (TxE output of the unmasked window).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmp_model.config import EncoderConfig, ProjectionConfig
from lmp_model.model import LMPOutput
from lmp_model.modules import ContextualEncoder, ModalityEmbedding
from lmp_model.recipes.base import Recipe, check_dims, present_modalities, shot_inputs
from lmp_model.recipes.queue import FeatureQueue, exclude_same, l2_prediction_loss, queue_info_nce, shot_ids


@dataclass
class HSSLConfig:
    """Event mask prediction over shot tokens; paper values as defaults where they apply."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """TxE (3 layers as the paper)."""
    projection: ProjectionConfig = field(default_factory=lambda: ProjectionConfig(absolute_position=True))
    """Per-modality linear projection; the paper appends a learned position embedding (on here)."""
    modalities: list[str] = field(default_factory=lambda: ["video"])
    """Which base features make a shot token (and get a prediction term each)."""
    alpha: float = 0.6
    """Max span size as a fraction of the window's valid shots."""
    sampling: str = "uniform"
    """"uniform" span start, or "max_discrepancy" (Table 2)."""
    loss: str = "infonce"
    """"infonce" (Eq. 1) or "l2" (the paper's ablation)."""
    target: str = "base"
    """"base": predict the shot's base feature; "projected": its projected input token (detached)."""
    temperature: float = 0.1
    queue_size: int = 65536
    """K distractors (paper 65536; more than a small store's shots is harmless: own shots are left out)."""
    max_shots: int = 64
    """Size of the position embedding; must be >= the window length k."""

    def __post_init__(self) -> None:
        checks = [
            (0.0 < self.alpha <= 1.0, "alpha", f"in (0, 1], got {self.alpha}"),
            (self.sampling in ("uniform", "max_discrepancy"), "sampling", f"'uniform' or 'max_discrepancy', got {self.sampling!r}"),
            (self.loss in ("infonce", "l2"), "loss", f"'infonce' or 'l2', got {self.loss!r}"),
            (self.target in ("base", "projected"), "target", f"'base' or 'projected', got {self.target!r}"),
            (self.temperature > 0, "temperature", f"> 0, got {self.temperature}"),
            (self.queue_size >= 1, "queue_size", f">= 1, got {self.queue_size}"),
            (self.max_shots >= 1, "max_shots", f">= 1, got {self.max_shots}"),
            (self.encoder.d % self.encoder.heads == 0, "encoder.heads", f"a divisor of d={self.encoder.d}"),
            (len(set(self.modalities)) == len(self.modalities) > 0, "modalities", "distinct names"),
        ]  # fmt: skip
        for ok, name, expected in checks:
            if not ok:
                raise ValueError(f"HSSLConfig.{name}: expected {expected}")


# --------------------------------------------------------------------------------------- masking
def max_span(n_valid: Tensor, alpha: float) -> Tensor:
    """Largest span size per window: floor(alpha * N), at least 1, at most N - 1; 0 when N < 2."""
    m = torch.floor(n_valid.double() * alpha + 1e-9).long()
    m = torch.minimum(m.clamp(min=1), n_valid - 1)
    return m.clamp(min=0)


def sample_span_mask(
    valid: Tensor,
    alpha: float,
    generator: torch.Generator | None = None,
    discrepancy: Tensor | None = None,
) -> Tensor:
    """One contiguous span of [MASK] shots per window (over its valid shots, in order).

    valid [N, k] bool -> masked [N, k] bool. Size m uniform in {1..max_span}; start uniform in
    {0..N_valid - m} or, given `discrepancy` [N, k], the start whose span has the largest summed
    discrepancy. Draws from `generator` (or the global RNG).
    """
    n_rows, k = valid.shape
    dev = valid.device
    gdev = generator.device if generator is not None else dev
    n = valid.sum(1)
    mmax = max_span(n, alpha)
    u = torch.rand(2, n_rows, generator=generator, device=gdev, dtype=torch.float64).to(dev)
    m = (1 + torch.floor(u[0] * mmax.double()).long()).clamp(max=mmax.clamp(min=1))
    rank = valid.long().cumsum(1) - 1  # position of each valid shot among the window's valid shots
    if discrepancy is None:
        start = torch.floor(u[1] * (n - m + 1).clamp(min=1).double()).long()
    else:
        order = torch.argsort((~valid).long() * k + torch.arange(k, device=dev), dim=1)
        d = discrepancy.float().masked_fill(~valid, 0.0).gather(1, order)  # in rank order
        csum = F.pad(d.cumsum(1), (1, 0))
        pos = torch.arange(k, device=dev).expand(n_rows, k)
        score = csum.gather(1, (pos + m[:, None]).clamp(max=k)) - csum[:, :k]
        score = score.masked_fill(pos > (n - m)[:, None], float("-inf"))
        start = score.argmax(1)
    hit = (rank >= start[:, None]) & (rank < (start + m)[:, None])
    return hit & valid & (mmax > 0)[:, None]


@contextmanager
def _eval_mode(module: nn.Module):
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


# ----------------------------------------------------------------------------------------- model
class HSSL(Recipe):
    """Mask prediction over shot tokens. Modules: `embed.<m>`, `context` (TxE), `head.<m>`, `queue.<m>`."""

    name = "hssl"
    features = {"v_base": "shot_mask", "a_base": "shot_mask", "v_ctx": "shot_mask"}

    def __init__(self, cfg: HSSLConfig, dims: Mapping[str, int]):
        super().__init__()
        self.cfg = cfg
        self.modalities, self.missing = present_modalities(dims, tuple(cfg.modalities), "HSSL")
        self.dims = check_dims(dims, self.modalities, "HSSL")
        d = cfg.encoder.d
        self.embed = nn.ModuleDict(
            {m: ModalityEmbedding(self.dims[m], d, cfg.max_shots, cfg.projection) for m in self.modalities}
        )
        self.context = ContextualEncoder(d, cfg.encoder)
        width = {m: self.dims[m] if cfg.target == "base" else d for m in self.modalities}
        self.head = nn.ModuleDict({m: nn.Linear(d, width[m]) for m in self.modalities})
        self.queue = (
            nn.ModuleDict({m: FeatureQueue(cfg.queue_size, width[m]) for m in self.modalities})
            if cfg.loss == "infonce"
            else None
        )

    @property
    def dropped_terms(self) -> tuple[str, ...]:
        """mp/<m> of each configured modality the store lacks."""
        return tuple(f"mp/{m}" for m in self.missing)

    # ----------------------------------------------------------------------------------- internals
    def _inputs(self, batch: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
        feats, valid, shot_mask = shot_inputs(batch, self.modalities, self.dims, self.device, "HSSL")
        if shot_mask.shape[1] > self.cfg.max_shots:
            raise ValueError(
                f"HSSL batch: k={shot_mask.shape[1]} exceeds HSSLConfig.max_shots={self.cfg.max_shots}"
            )
        return feats, valid, shot_mask

    def _contextual(
        self,
        feats: Mapping[str, Tensor],
        valid: Mapping[str, Tensor],
        shot_mask: Tensor,
        masked: Tensor | None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """TxE output [N, k, d] and the projected input tokens {m: [N, k, d]} (no position)."""
        tokens, projected = None, {}
        for m in self.modalities:
            x = feats[m] * valid[m].unsqueeze(-1).to(feats[m].dtype)
            h, projected[m] = self.embed[m](x, masked)
            tokens = h if tokens is None else tokens + h
        return self.context(tokens, shot_mask), projected

    @torch.no_grad()
    def discrepancy(
        self, feats: Mapping[str, Tensor], valid: Mapping[str, Tensor], shot_mask: Tensor
    ) -> Tensor:
        """[N, k] ||v_hat_i - v_hat'_i||: normalised TxE output at shot i, unmasked vs only shot i masked.

        All k single-shot maskings run as one batch of k * N windows, in eval mode (no dropout)."""
        n, k = shot_mask.shape
        with _eval_mode(self):
            full = F.normalize(self._contextual(feats, valid, shot_mask, None)[0].float(), dim=-1)
            eye = torch.eye(k, dtype=torch.bool, device=shot_mask.device)
            masked = (eye[:, None, :] & shot_mask[None]).reshape(k * n, k)
            rep = {m: feats[m].repeat(k, 1, 1) for m in self.modalities}
            rep_valid = {m: valid[m].repeat(k, 1) for m in self.modalities}
            out = self._contextual(rep, rep_valid, shot_mask.repeat(k, 1), masked)[0]
            out = F.normalize(out.float(), dim=-1).view(k, n, k, -1)
            one = out.diagonal(dim1=0, dim2=2).permute(0, 2, 1)  # [N, k, d]: masked-at-i output at i
        return (one - full).norm(dim=-1).masked_fill(~shot_mask, 0.0)

    def sample_masks(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> Tensor:
        """The [MASK] span of every window ([N, k] bool), by `cfg.sampling`."""
        feats, valid, shot_mask = self._inputs(batch)
        disc = self.discrepancy(feats, valid, shot_mask) if self.cfg.sampling == "max_discrepancy" else None
        return sample_span_mask(shot_mask, self.cfg.alpha, generator, disc)

    # ------------------------------------------------------------------------------------ training
    def forward(
        self,
        batch: Mapping[str, Any],
        generator: torch.Generator | None = None,
        masked: Tensor | None = None,
    ) -> LMPOutput:
        """Eq. 1 (or the L2 variant) per modality over the masked shots; `masked` [N, k] fixes the span.

        In training mode the masked targets are enqueued after the loss (MoCo's order)."""
        cfg = self.cfg
        feats, valid, shot_mask = self._inputs(batch)
        if masked is None:
            disc = self.discrepancy(feats, valid, shot_mask) if cfg.sampling == "max_discrepancy" else None
            masked = sample_span_mask(shot_mask, cfg.alpha, generator, disc)
        masked = masked.to(shot_mask.device).bool() & shot_mask
        ctx, projected = self._contextual(feats, valid, shot_mask, masked)
        ids = shot_ids(dict(batch), shot_mask)
        terms, chance = {}, {}
        for m in self.modalities:
            sel = masked & valid[m]
            target = feats[m] if cfg.target == "base" else projected[m].detach()
            pred, tgt = self.head[m](ctx[sel]), target[sel].detach()
            if cfg.loss == "l2":
                terms[f"mp/{m}"], chance[f"mp/{m}"] = l2_prediction_loss(pred, tgt)
                continue
            q = self.queue[m]
            neg_valid = exclude_same(ids[sel], q.ids)
            terms[f"mp/{m}"], chance[f"mp/{m}"] = queue_info_nce(
                pred, tgt, q.keys, cfg.temperature, neg_valid
            )
            if self.training:
                q.enqueue(F.normalize(tgt.float(), dim=-1), ids[sel])
        loss = sum(terms.values())
        return LMPOutput(loss=loss, terms=terms, chance=chance)

    # ------------------------------------------------------------------------------------ features
    def encode(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """v_base, a_base [N, k, D] (as given), v_ctx [N, k, d] (TxE output, unmasked), shot_mask."""
        feats, valid, shot_mask = self._inputs(batch)
        ctx, _ = self._contextual(feats, valid, shot_mask, None)
        s = shot_mask.unsqueeze(-1)
        out = {"v_ctx": ctx * s, "shot_mask": shot_mask}
        for m, name in (("video", "v_base"), ("audio", "a_base")):
            if m in batch and m in self.dims:
                out[name] = batch[m].to(ctx.device) * s
        return out
