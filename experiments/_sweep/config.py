"""Typed sweep configuration and the scale presets (`experiments/configs/sweeps/<scale>.yaml`).

A sweep = one table of the paper (losses, sequence length or features) at one scale. Each component
owns a small dataclass; a scale preset is a YAML file merged onto the defaults with OmegaConf, then
command-line `key=value` overrides on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from lmp_data.demo.config import DEMO_DIR

REPO_ROOT = Path(__file__).resolve().parents[2]
PRESET_DIR = REPO_ROOT / "experiments" / "configs" / "sweeps"
SCALES = ("smoke", "default", "paper")


@dataclass
class RayConfig:
    """Where trials run and with which resources."""

    address: str | None = (
        None  # None: start a local Ray; "auto" / "host:port" / "ray://...": existing cluster
    )
    num_cpus: int | None = None  # CPUs of the local Ray (None: all of the machine's); ignored with `address`
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent_trials: int = 0  # 0: as many as the resources allow
    max_failures: int = 1  # retries of a failing trial before it is reported failed
    verbose: int = 1


@dataclass
class SweepDataConfig:
    """The stores a sweep's trials read (`data:` of a sweep preset). Unset stores mean: the generated demo
    data (built on first use). Pretraining's own data settings (window length, views, ...) are
    `lmp_model.pretrain.DataConfig`, set through `pretrain_config` / `pretrain_overrides`."""

    demo_dir: str = DEMO_DIR  # relative to the repo root
    demo_size: str = "default"  # "default" | "tiny" (lmp_data.demo.make_demo)
    demo_seed: int = 0
    store: str | None = None  # pretraining feature store
    eval_store: str | None = None  # LVU clip feature store
    labels: str | None = None  # LVU labels directory (lvu_1.0 layout)
    transfer_labels: str | None = None  # transfer-task labels (docs/bench.md); None: the demo's transfer/


@dataclass
class SweepMlflowConfig:
    """A sweep's tracking store and experiment (`mlflow:` of a sweep preset): a local SQLite file at the repo
    root unless told otherwise. Each trial's pretraining run nests under the sweep's run (its own
    `lmp_model.pretrain.MlflowConfig` is filled in by the sweep)."""

    tracking_uri: str | None = None  # None: sqlite:///<repo>/mlflow.db (or $MLFLOW_TRACKING_URI)
    experiment: str = "lmp-ablations"
    artifact_root: str | None = None  # None: <repo>/mlartifacts (file://), or the tracking server's own


@dataclass
class SweepProbeConfig:
    """What a sweep probes after pretraining (`probe:` of a sweep preset): the LVU tasks and features
    (lmp_bench.evaluate_lvu), the probe seeds, the transfer tasks and the probe-over-training curve. The
    probe head and its optimisation are `lmp_bench.probe.ProbeConfig` (e.g. `transfer_probe`)."""

    tasks: list[str] | None = None  # None: all LVU tasks present in the labels
    features: list[str] = field(default_factory=lambda: ["v_ctx", "a_ctx", "v_cross_a"])
    overrides: dict = field(default_factory=dict)  # extra keyword arguments of evaluate_lvu
    seed_offset: int = 1000
    """Probe seed of a trial = its (pretraining) seed + seed_offset: the probe's randomness (head init,
    mini-batch order) is independent of pretraining's, and rows without pretraining use the same probe
    seeds as pretrained rows, so rows compare seed by seed."""
    scratch: dict = field(default_factory=dict)
    """Overrides of lmp_bench.scratch.ScratchConfig for the "scratch (supervised)" row (e.g. epochs)."""
    transfer: bool = False
    """Also run the transfer tasks (lmp_bench.evaluate_transfer: per-shot attributes, shot ordering, next
    shot, zero-shot retrieval) on each trial's model with its LVU features and probe seed; their columns
    join the table (`_sweep/transfer.py`; compare_recipes.py turns this on). A task the model cannot do
    (retrieval without a joint video/audio/language space; the scratch row) is n/a."""
    transfer_tasks: list[str] | None = None  # None: all four (ave, ordering, next_shot, retrieval)
    transfer_overrides: dict = field(default_factory=lambda: {"samples_per_clip": 2})
    """Extra keyword arguments of evaluate_transfer (samples_per_clip, sample_seed, k, batch_size)."""
    transfer_probe: dict = field(default_factory=dict)
    """Overrides of lmp_bench.probe.ProbeConfig for the transfer probes (e.g. epochs)."""
    curve_every: int = 0
    """Pretrained rows: also probe the weights every `curve_every` pretraining steps (and at step 0, the
    random initialisation), the same probe as the final one; the points are the child run's probe-over-
    training curve (`probe/*` metrics against the step). 0: the final probe only. Each point costs one
    probe."""


@dataclass
class SweepConfig:
    """One ablation sweep at one scale."""

    scale: str = "default"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    pretrain_config: str = "experiments/configs/pretrain/demo.yaml"  # relative to the repo root
    pretrain_overrides: list[str] = field(default_factory=list)  # dotlist on top of pretrain_config
    seq_lens: list[int] = field(default_factory=lambda: [10, 30, 60])  # Table 2
    feature_sets: list[list[str]] = field(
        default_factory=lambda: [
            ["v_base"],
            ["v_base", "a_base"],
            ["v_ctx"],
            ["v_ctx", "a_ctx"],
            ["v_ctx", "a_ctx", "v_cross_a"],
        ]
    )  # Table 3, in the paper's order
    out_dir: str = "runs/sweeps"  # sweep folders (Tune state, trial folders, tables); relative to repo root
    ray: RayConfig = field(default_factory=RayConfig)
    data: SweepDataConfig = field(default_factory=SweepDataConfig)
    mlflow: SweepMlflowConfig = field(default_factory=SweepMlflowConfig)
    probe: SweepProbeConfig = field(default_factory=SweepProbeConfig)
    verbose: bool = False
    """The full stream (Ray, Tune, the trials' output) on the console (`-v`) rather than in
    `<sweep>/sweep.log` behind a progress display (progress.py)."""


def load_sweep_config(scale: str = "default", overrides: list[str] | None = None) -> SweepConfig:
    """Defaults <- `configs/sweeps/<scale>.yaml` <- `key=value` overrides, type-checked."""
    if scale not in SCALES:
        raise ValueError(f"unknown sweep scale {scale!r}; expected one of {', '.join(SCALES)}")
    preset = PRESET_DIR / f"{scale}.yaml"
    if not preset.is_file():
        raise FileNotFoundError(f"sweep preset {preset} not found (expected one YAML per scale)")
    merged = OmegaConf.merge(
        OmegaConf.structured(SweepConfig),
        OmegaConf.load(preset),
        OmegaConf.from_dotlist(list(overrides or [])),
    )
    cfg: SweepConfig = OmegaConf.to_object(merged)
    cfg.scale = scale
    if not cfg.seeds:
        raise ValueError(f"sweep config {preset}: `seeds` is empty; give at least one seed")
    return cfg


def repo_path(p: str | Path) -> Path:
    """A config path made absolute against the repo root (Ray trials run in their own folders)."""
    path = Path(p).expanduser()
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()
