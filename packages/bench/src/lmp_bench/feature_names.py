"""Which named features a model provides (`lmp_bench.features`), and which of them read language.

LMP's feature names (`FEATURES`) and every recipe's own (`lmp_model.recipes`: the recipe declares its
features and the mask each is averaged under, `model_features`); parsing a `v_ctx+a_ctx` combination;
one-line errors for a feature the model or store lacks (naming the missing modality); and which features
do not depend on the language tokens (`text_free`, `needs_text`: those are encoded without them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

FEATURES = ("v_base", "a_base", "v_ctx", "a_ctx", "l_ctx", "v_cross_a", "v_cross_l", "l_shot")
BASE_FEATURES = ("v_base", "a_base")
TEXT_FREE = ("v_base", "a_base", "v_ctx", "a_ctx", "v_cross_a")
"""Features that do not depend on the language tokens (the video and audio encoders, audio->video)."""
_MASK = {"v_cross_l": "v_cross_l_mask", "l_shot": "l_shot_mask", "l_ctx": "text_mask"}
DEFAULT_FEATURES = "v_ctx+a_ctx+v_cross_a"  # the paper's best combination (Table 3)


def _recipes():
    from lmp_model.recipes import RECIPES

    return RECIPES


def all_features() -> tuple[str, ...]:
    """Every feature name some recipe provides (LMP's first)."""
    out = list(FEATURES)
    for spec in _recipes().values():
        out += [n for n in spec.features if n not in out]
    return tuple(out)


def model_features(model) -> dict[str, str]:
    """{feature: mask key in `model.encode`'s output} the model provides: its recipe's declaration
    (`lmp_model.recipes.recipe_features`); LMP's for a model of no registered recipe."""
    from lmp_model.recipes import recipe_features

    try:
        return recipe_features(model)
    except ValueError:
        return {n: _MASK.get(n, "shot_mask") for n in FEATURES}


def model_default_features(model) -> str:
    """The features a model is probed with unless told otherwise (its recipe's; LMP: DEFAULT_FEATURES),
    less those it does not provide (a model without audio: LMP's default becomes v_ctx)."""
    from lmp_model.recipes import recipe_default_features

    try:
        return recipe_default_features(model)
    except ValueError:
        return DEFAULT_FEATURES


FEATURE_NEEDS = {
    "v_base": ("video",),
    "a_base": ("audio",),
    "v_ctx": ("video",),
    "a_ctx": ("audio",),
    "l_ctx": ("text",),
    "v_cross_a": ("audio", "text"),
    "v_cross_l": ("audio", "text"),
    "l_shot": ("text",),
}
"""The modalities each of LMP's features needs beyond video (the cross-modal ones need the cross-modal
transformers, which exist only with both audio and language)."""


def _missing_why(model, names: Sequence[str]) -> str:
    """ ", which need audio (the model was pretrained without it)" for features a model lacks because
    of a missing modality; "" when that is not the reason."""
    lacks = tuple(getattr(model, "missing", ()))
    need = sorted({m for n in names for m in FEATURE_NEEDS.get(n, ()) if m in lacks})
    if not need:
        return ""
    return f", which need {'/'.join(need)} (the model was pretrained on a store without it)"


def model_label(model) -> str:
    """Row label of a model's results: its recipe's ("LMP", "HSSL", "M2S"); "LMP" otherwise."""
    from lmp_model.recipes import recipe_spec

    try:
        return recipe_spec(model).label
    except ValueError:
        return "LMP"


def check_model_features(model, names: Sequence[str]) -> None:
    """ValueError naming the recipe and what it provides when it lacks one of `names`."""
    have = model_features(model)
    missing = [n for n in names if n not in have]
    if missing:
        raise ValueError(
            f"features {missing} are not provided by the {model_label(model)} model"
            f"{_missing_why(model, missing)} (it provides {'+'.join(have)}; default "
            f"{model_default_features(model)})"
        )


def store_base_features(store) -> tuple[str, ...]:
    """The base features a store can give: v_base, and a_base when it has audio."""
    dims = getattr(store, "dims", {})
    return tuple(n for n in BASE_FEATURES if n == "v_base" or "audio" in dims)


def check_store_features(store, names: Sequence[str]) -> None:
    """ValueError (one line) when a base feature of `names` needs a modality `store` does not have."""
    have = store_base_features(store)
    bad = [n for n in names if n in BASE_FEATURES and n not in have]
    if bad:
        mods = getattr(store, "modalities", ())
        raise ValueError(
            f"features {bad} need audio, which store {_store_key(store)} does not have "
            f"(its modalities: {', '.join(mods)}; base features it gives: {'+'.join(have)})"
        )


def parse_features(spec: str | Sequence[str]) -> tuple[str, ...]:
    """ "v_ctx+a_ctx" or ["v_ctx", "a_ctx"] -> ("v_ctx", "a_ctx"), validated, order kept."""
    known = all_features()
    names = [s.strip() for s in spec.split("+")] if isinstance(spec, str) else [str(s) for s in spec]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"no features given; expected names from {known} joined by '+'")
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(f"unknown feature(s) {bad}; expected names from {known} joined by '+'")
    if len(set(names)) != len(names):
        raise ValueError(f"feature listed twice in {'+'.join(names)}")
    return tuple(names)


def _store_key(store) -> str:
    path = getattr(store, "path", None)
    return str(Path(path).resolve()) if path is not None else f"id:{id(store)}"


def text_free(model=None) -> tuple[str, ...]:
    """Features of `model` that do not depend on the language tokens: LMP's `TEXT_FREE`; for another
    recipe all of its features when it reads no language (`model.modalities`), else the base ones."""
    have = model_features(model) if model is not None else dict.fromkeys(FEATURES)
    if model is None or set(have) == set(FEATURES) or model_label(model) == "LMP":
        return tuple(n for n in TEXT_FREE if n in have)  # LMP's (a model without audio has fewer)
    if "text" in tuple(getattr(model, "modalities", ("text",))):
        return tuple(n for n in have if n in BASE_FEATURES)
    return tuple(have)


def needs_text(names: Sequence[str], model=None) -> bool:
    """Whether any of these features (of `model`; default LMP) depends on the language tokens."""
    free = text_free(model)
    return any(n not in free for n in names)
