"""What every pretraining recipe is: a model that turns a window batch into named losses and features.

Contract (the same as `LMP`'s):
- `forward(batch, generator=None) -> LMPOutput(loss, terms, chance)`: the weighted total, each term
  (unweighted, named "<group>/<name>") and each term's chance level (the loss of a model that has learnt
  nothing, e.g. ln(candidates) for an InfoNCE). `generator` fixes the recipe's random draws (masks).
- `encode(batch) -> dict[str, Tensor]`: named per-shot features [N, k, D] (or per-token [N, T, D]) with
  their masks, padding zeroed; the caller sets eval() and no_grad().
- `features`: {feature name: name of its mask in `encode`'s output}; what probes may ask for.
  `provided_features()` is the same for one built model: less the features of a modality its store lacks.
- A store without some modality (e.g. no audio): the recipe reads only the configured modalities the
  store has (`modalities`), `missing` names the configured ones it lacks and `dropped_terms` the loss
  terms that fall with them (the pretraining logs both once).

The batch is `lmp_data.batch`'s window batch (video [N,k,Dv], audio [N,k,Da], shot_mask [N,k], text
[N,T,Dl], text_mask [N,T], token_shot [N,T,k], start [N], movie list[str]); a recipe may need more fields
(documented in its module) and names them in the error when they are missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lmp_data.batch import MODALITIES
from lmp_model.losses import language_per_shot
from lmp_model.model import LMPOutput

RecipeOutput = LMPOutput
"""(loss, terms, chance) of one training forward; the same dataclass as `LMP.forward` returns."""

LMP_FEATURES: dict[str, str] = {
    "v_base": "shot_mask",
    "a_base": "shot_mask",
    "v_ctx": "shot_mask",
    "a_ctx": "shot_mask",
    "l_ctx": "text_mask",
    "v_cross_a": "shot_mask",
    "v_cross_l": "v_cross_l_mask",
    "l_shot": "l_shot_mask",
}
"""The features `LMP.encode` returns (paper Table 3) and the mask each is averaged under."""


class Recipe(nn.Module):
    """Base class of the recipes written for this package (LMP keeps its own class; see `build_recipe`)."""

    name: ClassVar[str] = ""
    features: ClassVar[dict[str, str]] = {}
    missing: tuple[str, ...] = ()
    """Configured modalities the store lacks (left out of the model)."""

    @property
    def dropped_terms(self) -> tuple[str, ...]:
        """Loss terms left out because their modality is missing (none by default)."""
        return ()

    def provided_features(self) -> dict[str, str]:
        """`features`, less a_base when the store has no audio (v_base: no video never happens)."""
        dims = getattr(self, "dims", {})
        return {n: k for n, k in type(self).features.items() if n != "a_base" or "audio" in dims}

    def forward(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> LMPOutput:
        raise NotImplementedError

    def encode(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def _tensor(batch: Mapping[str, Any], key: str, who: str, device: torch.device) -> Tensor:
    if key not in batch:
        raise ValueError(f"{who} batch: missing field {key!r}")
    value = batch[key]
    if not isinstance(value, Tensor):
        raise ValueError(f"{who} batch field {key!r}: expected a torch.Tensor, got {type(value).__name__}")
    return value.to(device)


def shot_inputs(
    batch: Mapping[str, Any],
    modalities: tuple[str, ...] | list[str],
    dims: Mapping[str, int],
    device: torch.device,
    who: str,
    prefix: str = "",
) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
    """One base feature per shot for each modality: ({m: [N, k, D_m]}, {m: [N, k] valid}, shot_mask).

    video, audio: the batch's [N, k, D] features. text: the mean of the base language tokens overlapping
    each shot (Eq. 4 on base features); a shot without tokens is zeros and not valid for text. `prefix`
    reads the fields of a paired window (e.g. "pair_" -> pair_video, pair_shot_mask). Shapes are checked
    against `dims` and the error names the field.
    """
    shot_mask = _tensor(batch, prefix + "shot_mask", who, device).bool()
    if shot_mask.dim() != 2:
        raise ValueError(
            f"{who} batch field {prefix}shot_mask: expected [N, k], got {tuple(shot_mask.shape)}"
        )
    n, k = shot_mask.shape
    feats: dict[str, Tensor] = {}
    valid: dict[str, Tensor] = {}
    for m in modalities:
        if m == "text":
            text = _tensor(batch, prefix + "text", who, device)
            text_mask = _tensor(batch, prefix + "text_mask", who, device).bool()
            token_shot = _tensor(batch, prefix + "token_shot", who, device).bool()
            t = text.shape[1] if text.dim() == 3 else -1
            expect = {"text": (n, t, dims["text"]), "text_mask": (n, t), "token_shot": (n, t, k)}
            got = {"text": text, "text_mask": text_mask, "token_shot": token_shot}
            for key, shape in expect.items():
                if tuple(got[key].shape) != shape:
                    raise ValueError(
                        f"{who} batch field {prefix}{key}: expected shape {shape}, got {tuple(got[key].shape)}"
                    )
            feats[m], has = language_per_shot(text.float(), text_mask, token_shot)
            valid[m] = has & shot_mask
        else:
            x = _tensor(batch, prefix + m, who, device)
            if tuple(x.shape) != (n, k, dims[m]):
                raise ValueError(
                    f"{who} batch field {prefix}{m}: expected shape {(n, k, dims[m])}, got {tuple(x.shape)}"
                )
            feats[m], valid[m] = x, shot_mask
    return feats, valid, shot_mask


def present_modalities(
    dims: Mapping[str, int], modalities: tuple[str, ...] | list[str], who: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the configured `modalities` the store has, those it lacks): a recipe reads the first and drops
    what needs the second. ValueError when none of them is there."""
    have = tuple(m for m in modalities if int(dims.get(m, 0) or 0) > 0)
    lack = tuple(m for m in modalities if m not in have)
    if modalities and not have:
        raise ValueError(
            f"{who}.modalities {list(modalities)}: the store has none of them (it has {sorted(dims)})"
        )
    return have, lack


def check_dims(dims: Mapping[str, int], modalities: tuple[str, ...] | list[str], who: str) -> dict[str, int]:
    """Positive base widths for every modality the recipe reads."""
    bad = [m for m in modalities if m not in MODALITIES]
    if bad or not modalities:
        raise ValueError(
            f"{who}.modalities: expected a non-empty subset of {list(MODALITIES)}, got {modalities}"
        )
    missing = [m for m in modalities if int(dims.get(m, 0)) <= 0]
    if missing:
        raise ValueError(f"{who} dims: expected positive widths for {list(modalities)}, got {dict(dims)}")
    return {m: int(dims[m]) for m in dims}
