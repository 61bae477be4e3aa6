"""Pretrained weights of any recipe (LMP, HSSL, M2S) on disk, without pickle: `save_pretrained` /
`load_pretrained`.

A pretrained folder holds
- `model.safetensors`: consolidated fp32 weights (the module's state_dict, less the recipes' negative
  queues: training state, up to 65536 keys each, which a loaded model starts empty),
- `lmp.json`: format, `recipe` (its registered name; absent in exports older than the recipes: "lmp"),
  `model` (the recipe's config), base feature dims, the store's encoders, pretrain meta,
- `pretrain.yaml` (optional): the resolved pretraining config that produced it.

The meta records the pretraining window length `k` and the whole `data` section of the pretraining
config whenever `save_pretrained` is given the pretraining config (`pretrain_yaml`), so evaluation can
probe with the model's own k (`lmp_bench`); `load_pretrained` fills `k` from `pretrain.yaml` for older
exports whose meta lacks it. A model with no recorded k (no meta, no pretrain.yaml) has `meta["k"]` unset.
`load_pretrained` also takes an MLflow run: "runs:/<run id>" (its `export/` artifact folder),
"runs:/<run id>/<artifact path>", or a bare 32-hex run id.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from lmp_model.config import model_config_to_dict
from lmp_model.recipes import RECIPES, build_recipe, recipe_config_to_dict, recipe_name

FORMAT = "lmp-pretrained"
VERSION = 1
WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "lmp.json"
PRETRAIN_FILE = "pretrain.yaml"
EXPORT_ARTIFACT = "export"
"""Artifact folder of a pretraining MLflow run that holds the export."""

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def _recipe_of_config(cfg: Any) -> str:
    for name, spec in RECIPES.items():
        if type(cfg) is spec.config:
            return name
    raise TypeError(f"save_pretrained: cfg is a {type(cfg).__name__}, not a recipe config ({list(RECIPES)})")


def load_weights(model: Any, state: dict) -> str:
    """Load `state` into `model` (its queues excepted, see `_is_queue_state`); "" if every weight
    matched, else what is missing and unexpected (the caller names the file)."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not _is_queue_state(k)]
    return f"missing {missing[:5]}, unexpected {unexpected[:5]}" if missing or unexpected else ""


def _is_queue_state(key: str) -> bool:
    """A `FeatureQueue` buffer (keys / ids / ptr of a module named queue...): not exported."""
    parts = key.split(".")
    return parts[-1] in ("keys", "ids", "ptr") and "queue" in parts[:-1]


def save_pretrained(
    out_dir: str | os.PathLike,
    weights: torch.nn.Module | Mapping[str, torch.Tensor],
    *,
    cfg: Any | None = None,
    dims: Mapping[str, int] | None = None,
    encoders: Mapping[str, Any] | None = None,
    pretrain_yaml: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write a pretrained folder atomically (built beside `out_dir`, then renamed into place).

    `weights` is a recipe model (`LMP`, `HSSL`, `M2S`: cfg and dims taken from it) or a state_dict (then
    `cfg`, the recipe's config: `ModelConfig`, `HSSLConfig`, `M2SConfig`, and `dims` are required; the
    recipe is told by the config's type). Floating tensors are stored as fp32; queue buffers are dropped.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    if isinstance(weights, torch.nn.Module):
        recipe = recipe_name(weights)
        cfg, dims, state = weights.cfg, weights.dims, weights.state_dict()
    else:
        state = dict(weights)
        if cfg is None or dims is None:
            raise ValueError("save_pretrained: a state_dict needs cfg= and dims=")
        recipe = _recipe_of_config(cfg)
    tensors = {
        k: (v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu())
        .contiguous()
        .clone()
        for k, v in state.items()
        if not _is_queue_state(k)
    }
    info = {
        "format": FORMAT,
        "version": VERSION,
        "recipe": recipe,
        "model": model_config_to_dict(cfg) if recipe == "lmp" else recipe_config_to_dict(cfg),
        "dims": {m: int(d) for m, d in dims.items()},
        "encoders": dict(encoders) if encoders is not None else None,
        "meta": _with_data_meta(dict(meta or {}), pretrain_yaml),
    }
    tmp = out.parent / f".tmp-{out.name}.{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, default=str))
        if pretrain_yaml is not None:
            (tmp / PRETRAIN_FILE).write_text(pretrain_yaml)
        if out.exists():
            old = out.parent / f".old-{out.name}.{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _data_section(pretrain_yaml: str | None) -> dict[str, Any] | None:
    """The `data:` section of a pretraining config's YAML text, as a plain dict (None: none there)."""
    if not pretrain_yaml:
        return None
    data = OmegaConf.select(OmegaConf.create(pretrain_yaml), "data", default=None)
    if data is None or not OmegaConf.is_dict(data):
        return None
    return OmegaConf.to_container(data, resolve=True)


def _with_data_meta(meta: dict[str, Any], pretrain_yaml: str | None) -> dict[str, Any]:
    """`meta` plus `k` and `data` from the pretraining config (keys already in `meta` win)."""
    data = _data_section(pretrain_yaml)
    if data is not None:
        meta.setdefault("data", data)
        if data.get("k") is not None:
            meta.setdefault("k", int(data["k"]))
    return meta


def resolve_pretrained(path: str | os.PathLike, tracking_uri: str | None = None) -> Path:
    """A local pretrained folder for `path`: a folder, or an MLflow run (downloaded)."""
    s = str(path)
    local = Path(s)
    if local.exists() or not (s.startswith("runs:/") or _RUN_ID.match(s)):
        return local
    from mlflow.artifacts import download_artifacts

    from lmp_model.tracking import default_tracking_uri

    uri = s if s.startswith("runs:/") else f"runs:/{s}"
    if uri.rstrip("/").count("/") == 1:  # runs:/<id> -> its export folder
        uri = f"{uri.rstrip('/')}/{EXPORT_ARTIFACT}"
    return Path(download_artifacts(artifact_uri=uri, tracking_uri=tracking_uri or default_tracking_uri()))


def load_info(path: str | os.PathLike) -> dict[str, Any]:
    """The `lmp.json` of a pretrained folder, checked."""
    p = Path(path) / INFO_FILE
    if not p.is_file():
        raise FileNotFoundError(f"pretrained weights {path}: no {INFO_FILE} (not an LMP export folder)")
    info = json.loads(p.read_text())
    if info.get("format") != FORMAT or info.get("version") != VERSION:
        raise ValueError(
            f"{p}: format {info.get('format')!r} version {info.get('version')!r}, expected {FORMAT!r} {VERSION}"
        )
    for key in ("model", "dims"):
        if not isinstance(info.get(key), dict):
            raise ValueError(f"{p}: field {key!r} missing or not an object")
    return info


def load_pretrained(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu", tracking_uri: str | None = None
) -> torch.nn.Module:
    """The recipe model (`LMP`, `HSSL` or `M2S`, as `lmp.json`'s `recipe` says) with the exported weights
    (eval mode; queues empty). `path`: folder, "runs:/<id>[/path]" or run id.

    The returned model carries `.encoders` (the store's encoders it was trained on) and `.pretrained_meta`
    (the export's meta; `k` and `data` filled from `pretrain.yaml` when the meta lacks them).
    """
    from safetensors.torch import load_file

    folder = resolve_pretrained(path, tracking_uri)
    info = load_info(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"pretrained weights {folder}: no {WEIGHTS_FILE}")
    model = build_from_info(info, folder / INFO_FILE)
    state = load_file(str(weights), device=str(map_location))
    bad = load_weights(model, state)
    if bad:
        raise ValueError(f"{weights}: weights do not match the model config in {INFO_FILE}: {bad}")
    model.to(map_location).eval()
    model.encoders = info.get("encoders")
    meta = dict(info.get("meta") or {})
    yaml = folder / PRETRAIN_FILE
    if ("k" not in meta or "data" not in meta) and yaml.is_file():
        meta = _with_data_meta(meta, yaml.read_text())
    model.pretrained_meta = meta
    return model


def build_from_info(info: Mapping[str, Any], source: Any = INFO_FILE) -> torch.nn.Module:
    """The recipe model an export's `lmp.json` describes, at its initialisation (no weights loaded)."""
    recipe = info.get("recipe", "lmp")
    if recipe not in RECIPES:
        raise ValueError(f"{source}: recipe {recipe!r} unknown; known: {sorted(RECIPES)}")
    model_cfg = _with_legacy(info["model"]) if recipe == "lmp" else info["model"]
    try:
        cfg = OmegaConf.to_object(
            OmegaConf.merge(OmegaConf.structured(RECIPES[recipe].config), OmegaConf.create(model_cfg))
        )
    except Exception as e:  # noqa: BLE001 - name the file: an export from another version of the code
        raise ValueError(f"{source}: field 'model' is not a valid {recipe} config: {e}") from e
    return build_recipe(recipe, cfg, info["dims"])


# Options added with later defaults: an export written before them has no such key and was trained with
# the old behaviour, so a missing key means the value below (not today's default).
_LEGACY = {
    ("projection", "token_norm"): False,
    ("projection", "absolute_position"): True,
    ("projection", "position_std"): 0.02,
    ("encoder", "rel_pos"): 0,
    ("cross", "rel_pos"): 0,
    ("cross", "query"): "video",
    ("masking", "random_ratio"): 0.0,
    ("masking", "keep_ratio"): 0.0,
    ("loss", "window"): 0.0,
    ("loss", "recon"): 0.0,
}


def _with_legacy(model: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in model.items()}
    for (section, key), value in _LEGACY.items():
        if isinstance(out.get(section), dict) and key not in out[section]:
            out[section][key] = value
    return out


def check_store_encoders(model: torch.nn.Module, store_encoders: Mapping[str, Any]) -> None:
    """Refuse a store whose encoders (name, dim) differ from those the model was pretrained on. A store
    with a modality the model was pretrained without (e.g. audio, for a model of a MAD import) is fine:
    the model does not read it; a store without one the model reads is refused."""
    mine = getattr(model, "encoders", None)
    if not mine:
        return
    reads = tuple(getattr(model, "modalities", mine))
    for m, spec in mine.items():
        if m not in store_encoders and m not in reads:
            continue
        if m not in store_encoders:
            raise ValueError(
                f"encoders.{m}: model was pretrained with {m} ({spec.get('name')!r}, dim {spec.get('dim')}), "
                f"the store has no {m} (it has {', '.join(store_encoders)})"
            )
        other = store_encoders.get(m, {})
        if (spec.get("name"), spec.get("dim")) != (other.get("name"), other.get("dim")):
            raise ValueError(
                f"encoders.{m}: model was pretrained on {spec.get('name')!r} (dim {spec.get('dim')}), "
                f"store has {other.get('name')!r} (dim {other.get('dim')})"
            )
