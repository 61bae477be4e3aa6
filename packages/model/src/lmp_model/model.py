"""The LMP model (paper Sec. 3): projections, contextual transformers, cross-modal transformer(s).

`LMP.forward(batch)` is the pretraining step's loss (Eq. 7, with masking); `LMP.encode(batch)` returns
every downstream feature of Table 3 by name, with masks, for probes. The batch is the window batch of
`lmp_data.batch` (video [N,k,Dv], audio [N,k,Da], shot_mask [N,k], text [N,T,Dl], text_mask [N,T],
token_shot [N,T,k]).

Missing modalities: `dims` may leave out audio and/or text (a store without them, e.g. MAD: video +
language). The model then builds no module for a missing modality (no projection, contextual encoder,
window head; no cross-modal transformer unless both audio and language are there, since Eq. 6 pairs
them), `forward` drops the loss terms that need it (`dropped_terms`; the pretraining logs them once), and
`encode` returns only the features that exist (`provided_features`). The batch may carry the missing
modality (zero-width, as `lmp_data` makes it, or real features from a fuller store): it is not read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lmp_model.config import MODALITIES, ModelConfig, term_modalities
from lmp_model.losses import language_per_shot
from lmp_model.modules import (
    VALID_KEY,
    ContextualEncoder,
    CrossModalTransformer,
    LossTerms,
    ModalityEmbedding,
    sample_replacement,
    sample_token_mask,
)

_CROSS_SOURCES = ("audio", "text")

FEATURE_MODALITIES: dict[str, tuple[str, ...]] = {
    "v_base": ("video",),
    "a_base": ("audio",),
    "v_ctx": ("video",),
    "a_ctx": ("audio",),
    "l_ctx": ("text",),
    "v_cross_a": MODALITIES,
    "v_cross_l": MODALITIES,
    "l_shot": ("text",),
}
"""The modalities each downstream feature (Table 3) needs; the cross-modal ones need the cross-modal
transformers, which exist only with both audio and language."""


@dataclass
class LMPOutput:
    """Result of a training forward: the weighted total (Eq. 7), each computed term (unweighted), and
    each term's chance level: ln of its candidate count, the loss of a model that has learnt nothing."""

    loss: Tensor
    terms: dict[str, Tensor]
    chance: dict[str, Tensor] = field(default_factory=dict)


def _head(d: int, kind: str) -> nn.Module:
    """A loss head on d-wide features: "linear" (d -> d) or "mlp" (d -> d -> d, GELU)."""
    if kind == "linear":
        return nn.Linear(d, d)
    return nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))


class LMP(LossTerms, nn.Module):
    """Long-range multimodal pretraining model.

    dims: base feature width per modality, {"video": Dv, "audio": Da, "text": Dl}; audio and/or text may
    be left out (or 0): a model without them (see the module docstring). Module names: `embed.<m>`
    (projection, position, [MASK]), `context.<m>` (contextual encoders), `cross.audio` and `cross.text`
    (two cross-modal transformers) or `cross.shared` (one, `cfg.cross.shared`). The loss groups that
    `forward` merges are `LossTerms`' methods (modules/terms.py).
    """

    def __init__(self, cfg: ModelConfig, dims: Mapping[str, int]):
        super().__init__()
        unknown = sorted(str(m) for m in dims if m not in MODALITIES)
        try:
            widths = {m: int(dims[m]) for m in MODALITIES if m in dims}
        except (TypeError, ValueError):
            widths = {"video": -1}
        if unknown or widths.get("video", 0) <= 0 or any(v < 0 for v in widths.values()):
            raise ValueError(
                f"LMP dims: expected a positive width for video and widths for audio and text where the "
                f"store has them (keys from {list(MODALITIES)}), got {dict(dims)}"
            )
        self.cfg = cfg
        self.modalities = tuple(m for m in MODALITIES if widths.get(m, 0) > 0)
        """The modalities the model reads (video, plus audio and/or text when the store has them)."""
        self.missing = tuple(m for m in MODALITIES if m not in self.modalities)
        self.dims = {m: widths[m] for m in self.modalities}
        d = cfg.d
        max_len = {"video": cfg.max_shots, "audio": cfg.max_shots, "text": cfg.max_tokens}
        self.embed = nn.ModuleDict(
            {m: ModalityEmbedding(self.dims[m], d, max_len[m], cfg.projection) for m in self.modalities}
        )
        self.context = nn.ModuleDict({m: ContextualEncoder(d, cfg.encoder) for m in self.modalities})
        if not self.has_cross:
            pass  # Eq. 6 pairs audio- and language-conditioned video: no transformer without both
        elif cfg.cross.shared:
            self.cross = nn.ModuleDict({"shared": CrossModalTransformer(d, cfg.cross, num_sources=2)})
        else:
            self.cross = nn.ModuleDict({m: CrossModalTransformer(d, cfg.cross) for m in _CROSS_SOURCES})
        if cfg.loss.recon > 0:  # the reconstruction term's heads: contextual output -> base features
            self.recon_head = nn.ModuleDict({m: nn.Linear(d, self.dims[m]) for m in self.modalities})
        if cfg.loss.window > 0 and cfg.loss.window_head != "none":
            self.window_head = nn.ModuleDict({m: _head(d, cfg.loss.window_head) for m in self.modalities})
        if cfg.loss.sync > 0 and self.has_cross:  # the synchrony term's per-shot logit
            self.sync_head = nn.Linear(d, 1)
        if cfg.loss.head != "none":  # SimCLR's projection heads: the terms read these, probes do not
            heads = [*self.modalities, *(f"cross_{m}" for m in _CROSS_SOURCES if self.has_cross)]
            self.loss_head = nn.ModuleDict({n: _head(d, cfg.loss.head) for n in heads})

    @property
    def has_cross(self) -> bool:
        """Whether the cross-modal transformers exist (both audio and language present)."""
        return all(m in self.modalities for m in _CROSS_SOURCES)

    @property
    def dropped_terms(self) -> tuple[str, ...]:
        """Loss terms the config turns on that need a modality this model lacks (not computed)."""
        return tuple(
            t
            for t in self.cfg.loss.enabled_terms()
            if any(m not in self.modalities for m in term_modalities(t))
        )

    def terms_on(self) -> tuple[str, ...]:
        """The loss terms `forward` computes: those the config turns on, less `dropped_terms`."""
        dropped = set(self.dropped_terms)
        return tuple(t for t in self.cfg.loss.enabled_terms() if t not in dropped)

    def provided_features(self) -> dict[str, str]:
        """{feature: its mask key in `encode`'s output} for the features this model provides (Table 3's,
        less those that need a missing modality)."""
        from lmp_model.recipes.base import LMP_FEATURES

        return {
            n: mask
            for n, mask in LMP_FEATURES.items()
            if all(m in self.modalities for m in FEATURE_MODALITIES[n])
        }

    # ----------------------------------------------------------------------------------------- input
    def check_batch(self, batch: Mapping[str, object]) -> dict[str, Tensor]:
        """Validate shapes against `dims`/config and move tensors to the model's device.

        Raises ValueError naming the field and what was expected. A batch with T = 0 gets one padded
        (masked) token so every sequence op has a length. Only the fields of the model's modalities are
        read and returned (a missing modality's fields may be absent or anything).
        """
        device = next(self.parameters()).device
        out: dict[str, Tensor] = {}
        has_text = "text" in self.dims
        keys = ["video", "shot_mask"] + (["audio"] if "audio" in self.dims else [])
        keys += ["text", "text_mask", "token_shot"] if has_text else []
        for key in keys:
            if key not in batch:
                raise ValueError(f"LMP batch: missing field {key!r}")
            value = batch[key]
            if not isinstance(value, Tensor):
                raise ValueError(
                    f"LMP batch field {key!r}: expected a torch.Tensor, got {type(value).__name__}"
                )
            out[key] = value.to(device)
        video = out["video"]
        if video.dim() != 3:
            raise ValueError(f"LMP batch field 'video': expected [N, k, Dv], got shape {tuple(video.shape)}")
        n, k = video.shape[:2]
        expect = {"video": (n, k, self.dims["video"]), "shot_mask": (n, k)}
        if "audio" in self.dims:
            expect["audio"] = (n, k, self.dims["audio"])
        t = 0
        if has_text:
            text = out["text"]
            if text.dim() != 3:
                raise ValueError(
                    f"LMP batch field 'text': expected [N, T, Dl], got shape {tuple(text.shape)}"
                )
            t = text.shape[1]
            expect |= {"text": (n, t, self.dims["text"]), "text_mask": (n, t), "token_shot": (n, t, k)}
        for key, shape in expect.items():
            if tuple(out[key].shape) != shape:
                raise ValueError(
                    f"LMP batch field {key!r}: expected shape {shape}, got {tuple(out[key].shape)}"
                )
        for key in ("shot_mask", "text_mask", "token_shot"):
            if key in out:
                out[key] = out[key].bool()
        if k > self.cfg.max_shots:
            raise ValueError(f"LMP batch: k={k} shots exceeds ModelConfig.max_shots={self.cfg.max_shots}")
        if t > self.cfg.max_tokens:
            raise ValueError(f"LMP batch: T={t} tokens exceeds ModelConfig.max_tokens={self.cfg.max_tokens}")
        if has_text and t == 0:
            out["text"] = text.new_zeros(n, 1, text.shape[2])
            out["text_mask"] = out["text_mask"].new_zeros(n, 1)
            out["token_shot"] = out["token_shot"].new_zeros(n, 1, k)
        return out

    def sample_masks(
        self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """The [MASK] positions of every modality: `masking.ratio` of each window's valid tokens."""
        return {
            m: sample_token_mask(batch[VALID_KEY[m]], self.cfg.masking.ratio, generator)
            for m in self.modalities
        }

    # ----------------------------------------------------------------------------------- internals
    def _contextual(
        self, m: str, b: Mapping[str, Tensor], masked: Tensor | None, swap: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        tokens, target = self.embed[m](b[m], masked, swap)
        return self.context[m](tokens, b[VALID_KEY[m]]), target

    def _cross(self, source: str, src: Tensor, b: Mapping[str, Tensor], v: Tensor) -> Tensor:
        """The cross-modal transformer of `source` ("audio" or "text") -> one output per shot [N, k, d].

        Decodes the contextual video `v` (cross.query "video", the paper) or the source's own per-shot
        summary (cross.query "source": contextual audio of the shot / mean of the shot's contextual
        language tokens, Eq. 4)."""
        shot_mask = b["shot_mask"]
        src_valid = shot_mask if source == "audio" else b["text_mask"]
        tgt = v
        if self.cfg.cross.query == "source":
            tgt = src if source == "audio" else language_per_shot(src, src_valid, b["token_shot"])[0]
        align = None
        if self.cfg.cross.align:
            k = shot_mask.shape[1]
            align = (
                torch.eye(k, dtype=torch.bool, device=src.device).expand(src.shape[0], k, k)
                if source == "audio"
                else b["token_shot"].transpose(1, 2)
            )
        if self.cfg.cross.shared:
            return self.cross["shared"](src, src_valid, tgt, shot_mask, _CROSS_SOURCES.index(source), align)
        return self.cross[source](src, src_valid, tgt, shot_mask, align=align)

    # ------------------------------------------------------------------------------------- training
    def forward(
        self,
        batch: Mapping[str, object],
        generator: torch.Generator | None = None,
        masked: Mapping[str, Tensor] | None = None,
    ) -> LMPOutput:
        """Training loss on one batch (Eq. 7): masking, then only the terms that are on.

        `masked` (optional) fixes the [MASK] positions per modality ([N, k] / [N, T] bool) instead of
        drawing them with `generator` / the torch RNG. Masking is applied only when an intra-modal term
        of that modality is on; terms that are off are not computed, so their modules get no gradient.
        The window terms (`loss.window`, not in the paper) group windows by the batch's `movie` field
        (ids, or ints) and are left out when the batch has none. Terms that need a modality the model
        lacks are not computed (`dropped_terms`).
        """
        terms_on = self.terms_on()
        if not terms_on:
            if self.dropped_terms:
                raise ValueError(
                    f"LMP.forward: every loss term that is on ({', '.join(self.dropped_terms)}) needs "
                    f"{'/'.join(self.missing)}, which this model (its store) lacks; nothing to train"
                )
            raise ValueError("LMP.forward: every loss term is off (ModelConfig.loss); nothing to train")
        b = self.check_batch(batch)
        intra_mods = [t.split("/")[1] for t in terms_on if t.startswith("intra/")]
        recon_mods = [t.split("/")[1] for t in terms_on if t.startswith("recon/")]
        mask_mods = [m for m in self.modalities if m in intra_mods or m in recon_mods]
        inter = tuple(t.split("/")[1] for t in terms_on if t.startswith("inter/"))
        cross = tuple(t.split("/")[1] for t in terms_on if t.startswith("cross/"))
        group = self._window_groups(batch.get("movie"), b["video"].device)
        window = [t.split("/")[1] for t in terms_on if t.startswith("window/")] if group is not None else []
        sync = "sync/audio" in terms_on
        if not (mask_mods or inter or cross or window or sync):
            raise ValueError(
                "LMP.forward: the only terms on are window terms and the batch has no 'movie' field to "
                "group windows by"
            )
        need = self._needed(mask_mods, window, inter, cross, sync)
        masked, ctx, tgt, tokens = self._encode_masked(b, mask_mods, need, masked, generator)

        neg_group = self._negative_groups(b, group)  # {m: [N, L] ints} or None (`loss.negatives`)
        head = self.loss_head if hasattr(self, "loss_head") else None
        out = {m: head[m](x) for m, x in ctx.items()} if head is not None else ctx  # what Eq. 1-5 read
        shot_group = neg_group["video"] if neg_group is not None else None
        parts = [
            self._intra_terms(intra_mods, out, tgt, masked, neg_group),
            self._inter_terms(inter, b, out, masked, shot_group),
        ]
        *cross_part, v_a = self._cross_terms(cross, b, ctx, masked, shot_group, head)  # v_a: for sync
        parts += [
            cross_part,
            self._window_terms(window, b, ctx, tokens, group, generator),
            self._recon_terms(recon_mods, b, ctx, masked),
            self._sync_terms(sync, b, ctx, v_a, head, generator),
        ]
        terms = {name: value for part, _ in parts for name, value in part.items()}
        chance = {name: value for _, part in parts for name, value in part.items()}
        weight = self.cfg.loss.weights()
        loss = sum(weight[name.split("/")[0]] * value for name, value in terms.items())
        return LMPOutput(loss=loss, terms=terms, chance=chance)

    def _encode_masked(
        self,
        b: Mapping[str, Tensor],
        mask_mods: list[str],
        need: set[str],
        masked: Mapping[str, Tensor] | None,
        generator: torch.Generator | None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """The [MASK] positions of `mask_mods` (given, else drawn) and BERT's replacements there, then the
        input tokens, masking targets and contextual outputs of the modalities in `need`:
        (masked, ctx, tgt, tokens)."""
        if masked is None:
            masked = self.sample_masks(b, generator) if mask_mods else {}
        masked = {m: masked[m].to(b[VALID_KEY[m]].device).bool() & b[VALID_KEY[m]] for m in mask_mods}
        mcfg = self.cfg.masking
        replace = {
            m: sample_replacement(masked[m], b[VALID_KEY[m]], mcfg.random_ratio, mcfg.keep_ratio, generator)
            for m in mask_mods
        }

        ctx, tgt, tokens = {}, {}, {}
        for m in self.modalities:
            if m in need:
                to_mask, swap = replace.get(m, (None, None))
                tokens[m], tgt[m] = self.embed[m](b[m], to_mask, swap)
                ctx[m] = self.context[m](tokens[m], b[VALID_KEY[m]])
        return masked, ctx, tgt, tokens

    # ------------------------------------------------------------------------------------- features
    def encode(self, batch: Mapping[str, object]) -> dict[str, Tensor]:
        """Every downstream feature (Table 3) of a batch, unmasked; padding positions are zeros.

        Returns v_base [N,k,Dv], a_base [N,k,Da] (the base features as given), v_ctx, a_ctx [N,k,d],
        l_ctx [N,T,d], v_cross_a, v_cross_l [N,k,d], l_shot [N,k,d] (Eq. 4) and the masks shot_mask
        [N,k], text_mask [N,T], l_shot_mask [N,k] (shot has language tokens), v_cross_l_mask [N,k]
        (valid shot of a window with language; elsewhere v_cross_l, conditioned on no language, is zeroed).
        The caller wraps it in torch.no_grad() and sets eval() as needed.
        A model without audio or language returns only what exists (`provided_features`, and the masks
        of those: no text_mask / l_shot_mask without language, no v_cross_* without both).
        """
        b = self.check_batch(batch)
        shot_mask = b["shot_mask"]
        ctx = {m: self._contextual(m, b, None)[0] for m in self.modalities}
        s = shot_mask.unsqueeze(-1)
        out = {"v_base": b["video"] * s, "v_ctx": ctx["video"] * s, "shot_mask": shot_mask}
        if "audio" in ctx:
            out |= {"a_base": b["audio"] * s, "a_ctx": ctx["audio"] * s}
        if "text" in ctx:
            text_mask = b["text_mask"]
            l_shot, l_shot_mask = language_per_shot(ctx["text"], text_mask, b["token_shot"])
            out |= {
                "l_ctx": ctx["text"] * text_mask.unsqueeze(-1),
                "l_shot": l_shot,
                "text_mask": text_mask,
                "l_shot_mask": l_shot_mask & shot_mask,
            }
        if self.has_cross:
            v_a = self._cross("audio", ctx["audio"], b, ctx["video"])
            v_l = self._cross("text", ctx["text"], b, ctx["video"])
            has_text = b["text_mask"].any(dim=1, keepdim=True)
            out |= {
                "v_cross_a": v_a * s,
                "v_cross_l": v_l * (shot_mask & has_text).unsqueeze(-1),
                "v_cross_l_mask": shot_mask & has_text,
            }
        return out
