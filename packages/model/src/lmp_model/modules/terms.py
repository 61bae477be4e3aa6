"""The loss groups of `LMP.forward` (Eq. 7), one method each, named after the paper's terms.

intra (Eq. 1-2), inter (Eq. 3-5), cross (Eq. 6), and the terms beyond the paper: window, recon, sync
(`LossConfig`). Each returns (terms, chance): the group's unweighted terms by name and each one's chance
level, the loss of a model that has learnt nothing (ln of the candidate count for an InfoNCE, less the
candidates `LossConfig.negatives` leaves out: `_chance`). `LMP.forward` merges them in this order.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from lmp_model.config import MODALITIES, ModelConfig
from lmp_model.losses import (
    chance_level,
    cross_modal_loss,
    group_chance,
    inter_modal_loss,
    intra_modal_loss,
    language_per_shot,
    reconstruction_loss,
    shuffle_within,
    sync_loss,
    time_average,
    window_loss,
)

VALID_KEY = {"video": "shot_mask", "audio": "shot_mask", "text": "text_mask"}
"""The batch field that marks each modality's valid positions (shots, or language tokens)."""


def _unmasked(masked: Mapping[str, Tensor], shot_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Shots whose video is not [MASK]ed, and shots whose video and audio both are not ([N, k] bool)."""
    no_mask = torch.zeros_like(shot_mask)
    unmasked_v = ~masked.get("video", no_mask)
    return unmasked_v, unmasked_v & ~masked.get("audio", no_mask)


def _chance(sel: Tensor, group: Tensor | None) -> Tensor:
    """The chance level of an InfoNCE term over the pairs `sel` [N, L] bool selects: ln of their count,
    or with grouped negatives (`LossConfig.negatives`, `group` [N, L] ints) the mean ln of the candidates
    an anchor keeps (`group_chance`)."""
    return group_chance(group[sel] if group is not None else None, sel.sum())


class LossTerms:
    """The loss groups as methods of `LMP`, which mixes this class in: they read its config, its
    contextual encoders (`context`), its heads (`window_head`, `recon_head`, `sync_head`, where the
    config builds them) and its cross-modal transformers (`LMP._cross`)."""

    cfg: ModelConfig
    context: nn.ModuleDict
    modalities: tuple[str, ...]

    @staticmethod
    def _window_groups(movies: object, device: torch.device) -> Tensor | None:
        """The batch's `movie` field (ids, one per window) as group ints for the window term, or None."""
        if movies is None:
            return None
        if isinstance(movies, Tensor):
            return movies.to(device).long().reshape(-1)
        index: dict[object, int] = {}
        return torch.tensor(
            [index.setdefault(m, len(index)) for m in movies], dtype=torch.long, device=device
        )

    @staticmethod
    def _needed(
        mask_mods: list[str], window: list[str], inter: tuple[str, ...], cross: tuple[str, ...], sync: bool
    ) -> set[str]:
        """The modalities whose contextual outputs the terms that are on read (the others are not encoded)."""
        need = set(mask_mods) | set(window)
        if {"v2a", "a2v"} & set(inter):
            need |= {"video", "audio"}
        if {"v2l", "l2v"} & set(inter):
            need |= {"video", "text"}
        if cross or sync:
            need |= set(MODALITIES)
        return need

    def _negative_groups(self, b: Mapping[str, Tensor], movie: Tensor | None) -> dict[str, Tensor] | None:
        """{m: [N, L] ints}: the group of every shot / token whose members are not each other's negatives
        (`LossConfig.negatives`): its window, or its window's movie; None for "batch" (the paper)."""
        how = self.cfg.loss.negatives
        if how == "batch":
            return None
        n = b["video"].shape[0]
        win = torch.arange(n, device=b["video"].device)
        if how == "other_movies" and movie is not None:
            win = movie
        return {m: win[:, None].expand(b[VALID_KEY[m]].shape) for m in self.modalities}

    def _intra_terms(
        self,
        mods: list[str],
        out: Mapping[str, Tensor],
        tgt: Mapping[str, Tensor],
        masked: Mapping[str, Tensor],
        neg_group: Mapping[str, Tensor] | None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Eq. 1-2, intra/<m> for m in `mods`: each [MASK]ed token's output must pick its own input token
        among the masked tokens of its modality. Returns (terms, chance)."""
        if not mods:
            return {}, {}
        cfg = self.cfg
        targets = {m: tgt[m].detach() if cfg.masking.stop_gradient else tgt[m] for m in mods}
        intra = intra_modal_loss(
            out, targets, masked, temperature=cfg.masking.temperature, normalize=cfg.masking.normalize,
            groups=neg_group,
        )  # fmt: skip
        terms = {f"intra/{m}": intra[m] for m in mods}
        return terms, {f"intra/{m}": _chance(masked[m], (neg_group or {}).get(m)) for m in mods}

    def _inter_terms(
        self,
        inter: tuple[str, ...],
        b: Mapping[str, Tensor],
        out: Mapping[str, Tensor],
        masked: Mapping[str, Tensor],
        shot_group: Tensor | None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Eq. 3-5, inter/<v2a, a2v, v2l, l2v> as in `inter`: each shot's video must pick its own audio /
        language (Eq. 4's per-shot mean) among the batch's shots, and back. Returns (terms, chance)."""
        if not inter:
            return {}, {}
        shot_mask, tau = b["shot_mask"], self.cfg.loss.temperature
        unmasked_v, unmasked_va = _unmasked(masked, shot_mask)
        contrast_all = self.cfg.loss.contrast_masked
        l_shot = l_shot_mask = None
        if {"v2l", "l2v"} & set(inter):
            text_valid = b["text_mask"]
            if not contrast_all and "text" in masked:
                text_valid = text_valid & ~masked["text"]
            l_shot, l_shot_mask = language_per_shot(out["text"], text_valid, b["token_shot"])
        va = inter_modal_loss(
            out.get("video"), out.get("audio"), shot_mask, temperature=tau,
            terms=tuple(t for t in inter if t in ("v2a", "a2v")),
            pair_mask=None if contrast_all else unmasked_va, group=shot_group,
        )  # fmt: skip
        vl = inter_modal_loss(
            out.get("video"), None, shot_mask, l_shot, l_shot_mask, temperature=tau,
            terms=tuple(t for t in inter if t in ("v2l", "l2v")),
            pair_mask=None if contrast_all else unmasked_v, group=shot_group,
        )  # fmt: skip
        terms = {f"inter/{name}": va.get(name, vl.get(name)) for name in inter}
        sel_va = shot_mask if contrast_all else shot_mask & unmasked_va
        sel_vl = shot_mask & (True if contrast_all else unmasked_v)
        if l_shot_mask is not None:
            sel_vl = sel_vl & l_shot_mask
        sel = {n: sel_va if n in ("v2a", "a2v") else sel_vl for n in inter}
        return terms, {f"inter/{n}": _chance(sel[n], shot_group) for n in inter}

    def _cross_terms(
        self,
        cross: tuple[str, ...],
        b: Mapping[str, Tensor],
        ctx: Mapping[str, Tensor],
        masked: Mapping[str, Tensor],
        shot_group: Tensor | None,
        head: nn.ModuleDict | None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor | None]:
        """Eq. 6, cross/<a2l, l2a> as in `cross`: each shot's audio-conditioned video must pick its own
        language-conditioned video among the batch's shots of windows with language, and back. Returns
        (terms, chance, the audio-conditioned video or None), the last for the synchrony term."""
        if not cross:
            return {}, {}, None
        shot_mask, tau = b["shot_mask"], self.cfg.loss.temperature
        _, unmasked_va = _unmasked(masked, shot_mask)
        v_a = self._cross("audio", ctx["audio"], b, ctx["video"])
        v_l = self._cross("text", ctx["text"], b, ctx["video"])
        if head is not None:
            v_a, v_l = head["cross_audio"](v_a), head["cross_text"](v_l)
        has_text = b["text_mask"].any(dim=1, keepdim=True)
        contrast_all = self.cfg.loss.contrast_masked
        pairs = shot_mask & has_text if contrast_all else shot_mask & has_text & unmasked_va
        cm = cross_modal_loss(v_a, v_l, pairs, temperature=tau, terms=cross, group=shot_group)
        terms = {f"cross/{name}": cm[name] for name in cross}
        return terms, {f"cross/{name}": _chance(pairs, shot_group) for name in cross}, v_a

    def _window_terms(
        self,
        mods: list[str],
        b: Mapping[str, Tensor],
        ctx: Mapping[str, Tensor],
        tokens: Mapping[str, Tensor],
        group: Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """window/<m> for m in `mods` (`LossConfig.window`, not in the paper): a window's time-averaged
        contextual features must pick out another window of its movie (`group`). Returns (terms, chance)."""
        cfg, tau = self.cfg, self.cfg.loss.temperature
        terms: dict[str, Tensor] = {}
        chance: dict[str, Tensor] = {}
        for m in mods:
            valid = b["shot_mask"] if m != "text" else b["text_mask"]
            z = time_average(ctx[m], valid)
            if hasattr(self, "window_head"):
                z = self.window_head[m](z)
            rows = valid.any(dim=1)  # windows with no language take no part in the text term
            neg = None
            if cfg.loss.window_shuffled and m != "text":
                # the same input tokens ([MASK]s included) in another order: only order tells them apart
                x, ok = shuffle_within(tokens[m], valid, generator)
                neg = time_average(self.context[m](x, ok), ok)
                if hasattr(self, "window_head"):
                    neg = self.window_head[m](neg)
                neg = neg[rows]
            terms[f"window/{m}"], count = window_loss(z[rows], group[rows], tau, neg)
            chance[f"window/{m}"] = chance_level(count)
        return terms, chance

    def _recon_terms(
        self,
        mods: list[str],
        b: Mapping[str, Tensor],
        ctx: Mapping[str, Tensor],
        masked: Mapping[str, Tensor],
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """recon/<m> for m in `mods`: the hidden shot's base features from its context (LossConfig.recon).
        Returns (terms, chance)."""
        terms: dict[str, Tensor] = {}
        chance: dict[str, Tensor] = {}
        for m in mods:
            pred = self.recon_head[m](ctx[m][masked[m]])
            terms[f"recon/{m}"], chance[f"recon/{m}"] = reconstruction_loss(pred, b[m][masked[m]])
        return terms, chance

    def _sync_terms(
        self,
        on: bool,
        b: Mapping[str, Tensor],
        ctx: Mapping[str, Tensor],
        v_a: Tensor | None,
        head: nn.ModuleDict | None,
        generator: torch.Generator | None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """sync/audio when `on`: own vs shot-shuffled audio, per shot (LossConfig.sync); reuses the cross
        term's audio-conditioned video `v_a` when no loss head was applied to it. Returns (terms, chance)."""
        if not on:
            return {}, {}
        shot_mask = b["shot_mask"]
        own = v_a if v_a is not None and head is None else self._cross("audio", ctx["audio"], b, ctx["video"])
        shuffled_audio, _ = shuffle_within(ctx["audio"], shot_mask, generator)
        other = self._cross("audio", shuffled_audio, b, ctx["video"])
        logits = self.sync_head(torch.stack([own, other])[:, shot_mask]).squeeze(-1)
        loss, chance = sync_loss(logits)
        return {"sync/audio": loss}, {"sync/audio": chance}
