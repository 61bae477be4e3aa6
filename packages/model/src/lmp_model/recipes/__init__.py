"""Pretraining recipes compared under one protocol: LMP, Movies2Scenes (m2s), hierarchical SSL (hssl).

from lmp_model.recipes import build_recipe, load_recipe_config, recipe_features
cfg = load_recipe_config("hssl", None, ["alpha=0.5"])   # or a YAML of HSSLConfig's keys
# pretraining: `lmp-pretrain CONFIG recipe=hssl` (sections hssl: / m2s: of the pretrain YAML; docs/recipes.md)
model = build_recipe("hssl", cfg, dims={"video": Dv, "audio": Da, "text": Dl})
out = model(batch)          # LMPOutput(loss, terms, chance)
feats = model.encode(batch) # named per-shot features + masks; recipe_features(model) names them

The contract is in `lmp_model.recipes.base`; "lmp" builds the `LMP` class unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from lmp_model.config import ModelConfig, load_structured
from lmp_model.model import LMP
from lmp_model.recipes.base import LMP_FEATURES, Recipe, RecipeOutput
from lmp_model.recipes.hssl import HSSL, HSSLConfig
from lmp_model.recipes.m2s import M2S, M2SConfig


@dataclass(frozen=True)
class RecipeSpec:
    """A registered recipe: its config dataclass, its model builder and the features it provides."""

    config: type
    build: Callable[[Any, Mapping[str, int]], nn.Module]
    features: Mapping[str, str]
    default_features: str
    """What probes use unless told otherwise ('+'-joined): the recipe's own representation."""
    label: str
    """Row label in result tables."""


RECIPES: dict[str, RecipeSpec] = {
    "lmp": RecipeSpec(ModelConfig, LMP, LMP_FEATURES, "v_ctx+a_ctx+v_cross_a", "LMP"),  # paper Table 3's best
    "hssl": RecipeSpec(HSSLConfig, HSSL, HSSL.features, "v_ctx", "HSSL"),  # the contextualiser's output
    "m2s": RecipeSpec(M2SConfig, M2S, M2S.features, "v_scene", "M2S"),  # E_scene's [CLS] (paper Sec. 3.2)
}


def _spec(name: str) -> RecipeSpec:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {sorted(RECIPES)}")
    return RECIPES[name]


def build_recipe(name: str, cfg: Any, dims: Mapping[str, int]) -> nn.Module:
    """The recipe's model for base feature widths `dims`; `cfg` must be the recipe's config class."""
    spec = _spec(name)
    if not isinstance(cfg, spec.config):
        raise TypeError(f"recipe {name!r}: expected a {spec.config.__name__}, got {type(cfg).__name__}")
    return spec.build(cfg, dims)


def load_recipe_config(name: str, path: str | Path | None = None, overrides: Sequence[str] = ()) -> Any:
    """The recipe's typed config from an optional YAML plus `key=value` overrides (OmegaConf structured:
    unknown keys and wrong types raise naming the key; ranges are checked by the dataclass)."""
    return load_structured(_spec(name).config, path, overrides, name)


def recipe_config_to_dict(cfg: Any) -> dict:
    """Plain nested dict of any recipe config (checkpoints, MLflow params, exports)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def recipe_name(model: nn.Module) -> str:
    """The registered name of a recipe model."""
    for name, spec in RECIPES.items():
        if type(model) is spec.build:
            return name
    raise ValueError(f"{type(model).__name__} is not a registered recipe")


def recipe_features(model_or_name: nn.Module | str) -> dict[str, str]:
    """{feature: mask key} a recipe's `encode` provides (for probes). For a built model, what that model
    provides: a model of a store without audio (or language) has no feature that needs it."""
    name = model_or_name if isinstance(model_or_name, str) else recipe_name(model_or_name)
    provided = getattr(model_or_name, "provided_features", None)
    if callable(provided):
        return dict(provided())
    return dict(_spec(name).features)


def recipe_default_features(model_or_name: nn.Module | str) -> str:
    """What probes use unless told otherwise: the recipe's default ('+'-joined), less the features a built
    model does not provide (a store without audio: LMP's v_ctx+a_ctx+v_cross_a becomes v_ctx)."""
    spec = recipe_spec(model_or_name)
    have = recipe_features(model_or_name)
    names = [n for n in spec.default_features.split("+") if n in have]
    if not names:
        names = [next(n for n in have if n not in ("v_base", "a_base"))] if len(have) > 1 else list(have)
    return "+".join(names)


def recipe_spec(model_or_name: nn.Module | str) -> RecipeSpec:
    """The registry entry of a recipe model or name (ValueError for anything else)."""
    return _spec(model_or_name if isinstance(model_or_name, str) else recipe_name(model_or_name))


__all__ = [
    "HSSL",
    "M2S",
    "RECIPES",
    "HSSLConfig",
    "M2SConfig",
    "Recipe",
    "RecipeOutput",
    "RecipeSpec",
    "build_recipe",
    "load_recipe_config",
    "recipe_config_to_dict",
    "recipe_default_features",
    "recipe_features",
    "recipe_name",
    "recipe_spec",
]
