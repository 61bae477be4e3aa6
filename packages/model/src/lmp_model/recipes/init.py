"""`train.init_from`: start a pretraining run from the weights of an earlier export.

Movies2Scenes trains in stages (shot -> movie -> scene, `M2SConfig.stage`), each a run of its own whose
model holds every stage's modules under the same names, so a stage loads the previous stage's export
strictly. Any recipe may start this way (e.g. continue an LMP export on another store with a new
schedule). The negative queues are not exported (`lmp_model.export`): they start empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn


def init_from_export(
    model: nn.Module, path: str, recipe: str, encoders: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Load export `path` (folder, "runs:/<id>[/path]" or run id) into `model` (in place); return its meta.

    The export must be of `recipe`, for the same base encoders (name, dim) as the store's `encoders`, and
    hold exactly the model's weights (queue buffers excepted). Errors name the export and what differs.
    """
    from safetensors.torch import load_file

    from lmp_model.export import INFO_FILE, WEIGHTS_FILE, load_info, load_weights, resolve_pretrained

    folder = resolve_pretrained(path)
    if not (folder / INFO_FILE).is_file():
        raise FileNotFoundError(f"train.init_from={path}: not an export folder (no {folder / INFO_FILE})")
    info = load_info(folder)
    theirs = info.get("recipe", "lmp")
    if theirs != recipe:
        raise ValueError(
            f"train.init_from={path}: an export of recipe {theirs!r}, this run's recipe is {recipe!r}"
        )
    mine, stored = {m: int(d) for m, d in getattr(model, "dims", {}).items()}, info.get("dims") or {}
    if {m: int(d) for m, d in stored.items()} != mine:
        raise ValueError(
            f"train.init_from={path}: base feature dims {stored} in {INFO_FILE}, the store has {mine}"
        )
    for m, spec in (info.get("encoders") or {}).items():
        other = (encoders or {}).get(m)
        if other is not None and (spec.get("name"), spec.get("dim")) != (other.get("name"), other.get("dim")):
            raise ValueError(
                f"train.init_from={path}: encoders.{m} is {spec.get('name')!r} there, {other.get('name')!r} "
                "in this run's store"
            )
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"train.init_from={path}: no {WEIGHTS_FILE} in {folder}")
    state = load_file(str(weights), device="cpu")
    own = model.state_dict()
    shape = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if shape:
        k = shape[0]
        raise ValueError(
            f"train.init_from={path}: weight {k} is {tuple(state[k].shape)} there, {tuple(own[k].shape)} here "
            f"(the architecture of the {recipe} config differs)"
        )
    bad = load_weights(model, state)
    if bad:
        raise ValueError(f"train.init_from={path}: weights do not match this {recipe} model: {bad}")
    return dict(info.get("meta") or {})
