"""The typed hand-offs of a sweep: a table row at one seed (`TrialSpec`) and the sweep's shared settings
(`SweepContext`).

A table script builds its `TrialSpec`s (row label, seed, the work function to run, the row's pretraining
recipe or baseline, probe features); Tune carries them to the workers as they are (pickled, the work and
recipe functions by reference). A row's recipe is a function from the sweep's typed `PretrainConfig` to
the row's (torchtitan's config_registry idea), checked like a YAML when the trial builds its config
(`work.trial_config`). The driver builds one `SweepContext` when the sweep starts, saves it in
`sweep.json` (`to_dict`) and rebuilds it typed on `--resume` (`from_dict`); the workers get it through
Tune's `param_space`. A trial's work function gets both in its `TrialContext` (`trial.py`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import SweepProbeConfig


@dataclass
class TrialSpec:
    """One trial: a row of the table (`variant`, its position `order`) at one `seed`, and what it runs."""

    key: str  # unique in the sweep: "<slug>-s<seed>"; the trial's folder and MLflow tag
    variant: str  # the row label of the table
    seed: int  # pretraining seed (and a no-pretraining model's random init)
    work: Callable[..., dict[str, Any]]  # work(ctx: TrialContext) -> metrics (see `_sweep/work.py`)
    slug: str = ""  # the row's name for `--only`
    order: int = 0  # the row's position in the table
    pretrain: Callable[[Any], Any] | None = None  # the row's recipe: PretrainConfig -> PretrainConfig
    no_pretrain: str | None = None  # a no-pretraining baseline (lmp_bench.api.NO_PRETRAIN)
    recipe: str | None = None  # the pretraining recipe (compare_recipes.py)
    features: list[str] | None = None  # probe features (None: the sweep's probe.features)
    from_export: str | None = None  # probe this exported model (Table 3) instead of pretraining one
    probe_seed: int | None = None  # None: seed + probe.seed_offset
    stages: dict[str, float] | None = None  # a multi-stage recipe's shares of the steps (M2S)
    params: dict[str, Any] = field(default_factory=dict)  # anything else a work function reads

    @property
    def work_name(self) -> str:
        """The work function as "module:qualname" (the trial's spec.json, the progress display's ETA)."""
        return function_name(self.work)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record of the spec (its work and recipe functions by name)."""
        out = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("work", "pretrain")
        }
        return {
            **out,
            "work": self.work_name,
            "pretrain": function_name(self.pretrain) if self.pretrain else None,
        }


def function_name(fn: Callable[..., Any]) -> str:
    """A function as "module:qualname", a `functools.partial` with its arguments: "module:qualname(30)"."""
    if isinstance(fn, functools.partial):
        args = [*map(repr, fn.args), *(f"{k}={v!r}" for k, v in fn.keywords.items())]
        return f"{function_name(fn.func)}({', '.join(args)})"
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', type(fn).__name__)}"


@dataclass
class SweepContext:
    """What every trial of a sweep shares: where to track, the data, the pretraining and probe settings."""

    sweep_dir: str = ""
    tracking_uri: str = ""
    experiment_id: str = ""
    parent_run_id: str = ""
    git_commit: str = ""
    scale: str = ""
    repo_root: str = ""
    experiment_name: str = ""
    cpus_per_trial: float = 1.0
    pretrain_config: str = ""  # absolute path of the pretraining config
    pretrain_overrides: list[str] = field(default_factory=list)  # the sweep's, under each row's
    probe: SweepProbeConfig = field(default_factory=SweepProbeConfig)
    data: dict[str, str] = field(default_factory=dict)  # store, eval_store, labels, transfer (data.py)

    @property
    def threads(self) -> int:
        """Threads of a trial's torch work: its CPU share, at least 1."""
        return max(1, int(self.cpus_per_trial or 1))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepContext:
        """Rebuild from `to_dict` (sweep.json); keys of older sweeps that are no longer fields are dropped."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        probe_names = {f.name for f in dataclasses.fields(SweepProbeConfig)}
        kw["probe"] = SweepProbeConfig(
            **{k: v for k, v in (d.get("probe") or {}).items() if k in probe_names}
        )
        return cls(**kw)
