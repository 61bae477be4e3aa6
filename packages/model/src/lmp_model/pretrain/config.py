"""`PretrainConfig`: model + data + training + MLflow, one typed dataclass per part (torchtitan style).

Whole configs are YAML under `experiments/configs/pretrain/`, loaded onto the dataclasses with OmegaConf
structured configs plus `key=value` overrides (`load_pretrain_config`). A YAML may name a model YAML with
`model_file:` (relative to its own folder); its `model:` keys then override that file's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lmp_data.batch import DEFAULT_K
from lmp_model.config import ModelConfig
from lmp_model.recipes.hssl import HSSLConfig
from lmp_model.recipes.m2s import M2SConfig

DEMO_SIZES = ("tiny", "small", "default", "large")


class ConfigError(ValueError):
    """An invalid pretraining config; the message names the file and the key."""


@dataclass
class DataConfig:
    """Which windows the model trains on."""

    store: str = ""
    """Feature store folder. Empty: use the generated demo store (`demo`)."""
    demo: str = ""
    """With `store` empty: generate (once) and use the demo benchmark's pretraining store of this size
    ("tiny", "small", "default", "large") under `demo_dir`."""
    demo_seed: int = 0
    demo_dir: str = ""
    """Where the demo is generated; empty: `<repo root>/.lmp/demo/<size>-seed<demo_seed>`
    (`lmp_data.demo.DEMO_DIR`)."""
    k: int = DEFAULT_K
    """Shots per window (paper: 30)."""
    windows_per_epoch: int | None = None
    """Random windows per epoch (all ranks together); None: ceil(total shots / k) (see ShotWindows)."""
    memory_dtype: str = "float32"
    """In-memory feature dtype of the loaded store (float16 halves memory)."""
    split: str = ""
    """Keep only movies whose manifest column `split` equals this (empty: all movies)."""
    movies: list[str] = field(default_factory=list)
    """Keep only these movie ids (empty: all)."""
    prefetch: int = 2
    """Batches prepared ahead by a background thread (0: build each batch inline)."""
    gather: str = "host"
    """Where batches are built (`lmp_data.gather.WindowGather`): "host" (the store in host memory; on a
    GPU each batch is copied through pinned memory) or "device" (the store copied once to the training
    device and every batch gathered there: no host work but O(batch) index arithmetic; needs the store's
    memory on the device, see docs/bench.md). The same batches either way."""
    views: int = 2
    """Windows drawn per movie: a micro-batch holds micro_batch / views movies with `views` windows
    each (random starts), the positives of the window term (`model.loss.window`). 1: every window from
    an independent draw (then the window term has no positives: set model.loss.window=0)."""
    view_span: int = 0
    """0: the views of a movie start anywhere in it (the window term's positives share the movie only).
    s > 0: they start within s shots of a common random centre, so positives are neighbours that also
    share what a stretch of the movie shares (its scenes, place, people)."""


@dataclass
class TrainConfig:
    """Optimisation, parallelism, checkpoints. Steps count optimizer steps (one global batch each)."""

    seed: int = 0
    steps: int = 0
    """Optimizer steps; 0 means derive them from `epochs`."""
    epochs: float = 0.0
    """Passes over `data.windows_per_epoch` windows, used when `steps` is 0."""
    micro_batch: int = 16
    """Windows per rank per forward/backward."""
    global_batch: int = 0
    """Windows per optimizer step over all ranks (paper: 1024), reached by gradient accumulation
    (global / (micro_batch * world size) micro-batches per step). 0: micro_batch * world size.
    Note: the contrastive losses see the negatives of one micro-batch, not of the global batch."""
    lr: float = 1e-3
    """Peak learning rate (paper: 1e-3), reached after warm-up, then cosine annealing."""
    min_lr_ratio: float = 0.0
    """Final lr as a fraction of `lr` at the end of the cosine."""
    warmup_steps: int = 0
    """Linear warm-up from 0 to `lr` over this many steps (the paper gives none)."""
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    decay_norm_and_bias: bool = False
    """False: biases, LayerNorms, position and [MASK] embeddings get no weight decay (common practice)."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage 0-3 (0: plain data parallel)."""
    grad_clip: float = 1.0
    """Max global gradient norm; 0 disables clipping."""
    bf16: str = "auto"
    """"auto": bf16 where the accelerator supports it, fp32 on CPU; "true"; "false"."""
    device: str = "auto"
    """"auto" (cuda if available, else cpu), "cpu" or "cuda"."""
    threads: int = 0
    """torch intra-op threads per rank; 0 leaves torch's default (torchrun sets 1 per process)."""
    ckpt_every: int = 0
    """Checkpoint every N optimizer steps (0: only at the end)."""
    keep_last: int = 2
    """Checkpoints kept (the oldest are deleted once a newer one is complete); 0 keeps all."""
    snapshot_every: int = 0
    """Every N optimizer steps (and at step 0, the initialisation) write a weights-only export
    (`lmp_model.export` format, meta `step`) to `<run dir>/snapshots/step_<N>/`, for the
    probe-over-training curve (`lmp-bench curve`). 0: off. Not checkpoints: no optimizer state, never
    deleted, kept on resume."""
    out_dir: str = "runs/pretrain"
    """Runs go to `<out_dir>/<name>` (relative paths: from the working directory)."""
    log_every: int = 1
    """Log metrics every N optimizer steps."""
    deepspeed: dict[str, Any] = field(default_factory=dict)
    """Extra DeepSpeed config, deep-merged over the generated one (e.g. zero_optimization bucket sizes)."""
    init_from: str = ""
    """Start from the weights of an export (folder, "runs:/<id>" or a run id) of the same recipe and
    architecture (strict load; only the recipes' negative queues may be absent: they start empty).
    Movies2Scenes' stages chain this way (`m2s.stage`). Ignored on --resume (the checkpoint wins)."""


@dataclass
class MlflowConfig:
    enabled: bool = True
    experiment: str = "lmp-pretrain"
    run_name: str = ""
    """Empty: the config's `name`."""
    tracking_uri: str = ""
    """Empty: MLFLOW_TRACKING_URI, else sqlite:///<repo root>/mlflow.db."""
    parent_run_id: str = ""
    """Nest this run under a parent (a sweep's run)."""
    tags: dict[str, str] = field(default_factory=dict)
    log_weights: bool = True
    """Log the exported weights folder as an artifact."""


@dataclass
class PretrainConfig:
    name: str = "pretrain"
    """Run name: the run folder `<train.out_dir>/<name>` and the default MLflow run name."""
    model_file: str = ""
    """Optional model YAML (relative to the pretrain YAML's folder) under the `model:` keys."""
    recipe: str = "lmp"
    """Pretraining recipe (`lmp_model.recipes`): "lmp" (section `model`), "hssl" (section `hssl`,
    hierarchical mask prediction) or "m2s" (section `m2s`, Movies2Scenes); the other sections are unused."""
    model: ModelConfig = field(default_factory=ModelConfig)
    hssl: HSSLConfig = field(default_factory=HSSLConfig)
    m2s: M2SConfig = field(default_factory=M2SConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.train.out_dir) / self.name

    @property
    def recipe_config(self) -> Any:
        """The chosen recipe's config section (`model`, `hssl` or `m2s`)."""
        return getattr(self, RECIPE_SECTIONS[self.recipe])


def validate(cfg: PretrainConfig) -> None:
    """Raise ConfigError naming the key when a value is out of range (model keys: ModelConfig's own)."""
    t, d = cfg.train, cfg.data
    checks = [
        (t.steps >= 0, "train.steps", f">= 0, got {t.steps}"),
        (t.epochs >= 0, "train.epochs", f">= 0, got {t.epochs}"),
        (t.steps > 0 or t.epochs > 0, "train.steps", "train.steps > 0 or train.epochs > 0"),
        (t.micro_batch >= 1, "train.micro_batch", f">= 1, got {t.micro_batch}"),
        (t.global_batch >= 0, "train.global_batch", f">= 0, got {t.global_batch}"),
        (math.isfinite(t.lr) and t.lr > 0, "train.lr", f"> 0 and finite, got {t.lr}"),
        (0 <= t.min_lr_ratio <= 1, "train.min_lr_ratio", f"in [0, 1], got {t.min_lr_ratio}"),
        (t.warmup_steps >= 0, "train.warmup_steps", f">= 0, got {t.warmup_steps}"),
        (t.weight_decay >= 0, "train.weight_decay", f">= 0, got {t.weight_decay}"),
        (len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas), "train.betas", f"two values in [0, 1), got {t.betas}"),
        (t.zero_stage in (0, 1, 2, 3), "train.zero_stage", f"0, 1, 2 or 3, got {t.zero_stage}"),
        (t.grad_clip >= 0, "train.grad_clip", f">= 0, got {t.grad_clip}"),
        (str(t.bf16).lower() in ("auto", "true", "false"), "train.bf16", f"auto, true or false, got {t.bf16!r}"),
        (t.device in ("auto", "cpu", "cuda"), "train.device", f"auto, cpu or cuda, got {t.device!r}"),
        (t.threads >= 0, "train.threads", f">= 0, got {t.threads}"),
        (t.ckpt_every >= 0, "train.ckpt_every", f">= 0, got {t.ckpt_every}"),
        (t.keep_last >= 0, "train.keep_last", f">= 0, got {t.keep_last}"),
        (t.snapshot_every >= 0, "train.snapshot_every", f">= 0, got {t.snapshot_every}"),
        (t.log_every >= 1, "train.log_every", f">= 1, got {t.log_every}"),
        (bool(t.out_dir), "train.out_dir", "a folder"),
        (d.k >= 1, "data.k", f">= 1, got {d.k}"),
        (cfg.recipe in RECIPE_SECTIONS, "recipe", f"one of {sorted(RECIPE_SECTIONS)}, got {cfg.recipe!r}"),
        (d.k <= _max_shots(cfg), "data.k", f"<= {RECIPE_SECTIONS.get(cfg.recipe, 'model')}.max_shots={_max_shots(cfg)}, got {d.k}"),
        (d.windows_per_epoch is None or d.windows_per_epoch >= 1, "data.windows_per_epoch", ">= 1 or null"),
        (d.prefetch >= 0, "data.prefetch", f">= 0, got {d.prefetch}"),
        (d.views >= 1 and t.micro_batch % d.views == 0, "data.views", f">= 1 and a divisor of train.micro_batch={t.micro_batch}, got {d.views}"),
        (bool(d.store) or d.demo in DEMO_SIZES, "data.store", f"a store folder, or data.demo in {DEMO_SIZES}"),
        (not d.demo or d.demo in DEMO_SIZES, "data.demo", f"one of {DEMO_SIZES} or empty, got {d.demo!r}"),
        (d.memory_dtype in ("float32", "float16"), "data.memory_dtype", f"float32 or float16, got {d.memory_dtype!r}"),
        (d.gather in ("host", "device"), "data.gather", f"host or device, got {d.gather!r}"),
        (_safe_name(cfg.name), "name", f"letters, digits, '.', '_', '-' (a folder name), got {cfg.name!r}"),
        (bool(cfg.mlflow.experiment), "mlflow.experiment", "a non-empty name"),
        (cfg.recipe != "m2s" or cfg.m2s.scene.pairs == "split" or cfg.m2s.mining.scene_len <= cfg.m2s.max_shots,
         "m2s.mining.scene_len", f"<= m2s.max_shots={cfg.m2s.max_shots} (mined scenes go through E_scene), got {cfg.m2s.mining.scene_len}"),
    ]  # fmt: skip
    for ok, key, expected in checks:
        if not ok:
            raise ConfigError(f"pretrain config {key}: expected {expected}")


RECIPE_SECTIONS = {"lmp": "model", "hssl": "hssl", "m2s": "m2s"}
"""Recipe name -> its config section in `PretrainConfig`."""


def _max_shots(cfg: PretrainConfig) -> int:
    section = RECIPE_SECTIONS.get(cfg.recipe, "model")
    return int(getattr(cfg, section).max_shots)


def _safe_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and all(c.isalnum() or c in "._-" for c in name)


def load_pretrain_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> PretrainConfig:
    """Load a pretrain YAML plus `key=value` overrides (OmegaConf dotlist) into a `PretrainConfig`.

    Unknown keys, wrongly typed values and out-of-range values raise `ConfigError` naming the file or
    override and the key.
    """
    source = str(path) if path is not None else "<defaults>"
    try:
        parts: list[Any] = [OmegaConf.structured(PretrainConfig)]
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"pretrain config {path}: no such file")
            raw = OmegaConf.load(path)
            model_file = raw.get("model_file") if hasattr(raw, "get") else None
            given = [o.split("=", 1)[1] for o in overrides if o.startswith("model_file=")]
            if given:  # `model_file=...` on the command line replaces the YAML's (same folder rule)
                model_file = given[-1]
            if model_file:
                mpath = (path.parent / str(model_file)).resolve()
                if not mpath.is_file():
                    raise ConfigError(f"pretrain config {path}: model_file {mpath}: no such file")
                parts.append(OmegaConf.create({"model": OmegaConf.load(mpath)}))
            parts.append(raw)
    except OmegaConfBaseException as e:
        raise ConfigError(
            f"{source}: invalid key {getattr(e, 'full_key', None)!r}: {str(e).splitlines()[0]}"
        ) from e
    return _build(parts, overrides, source)


def with_overrides(cfg: PretrainConfig, overrides: Sequence[str] = ()) -> PretrainConfig:
    """`cfg` with `key=value` overrides on top, rebuilt and validated: a recipe function's edits (e.g. a
    sweep row's, `experiments/_sweep/spec.py`) are checked like a YAML's, errors naming the key."""
    return _build([OmegaConf.structured(cfg)], overrides, f"config {cfg.name!r}")


def _build(parts: list[Any], overrides: Sequence[str], source: str) -> PretrainConfig:
    """Merge OmegaConf parts, then the `key=value` overrides, onto a `PretrainConfig` and validate; errors
    name `source` (+ the overrides) and the key."""
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"overrides {bad}: expected key=value")
        source += " + overrides " + " ".join(overrides)
    try:
        dotlist = [OmegaConf.from_dotlist(list(overrides))] if overrides else []
        cfg = OmegaConf.to_object(OmegaConf.merge(*parts, *dotlist))
    except OmegaConfBaseException as e:
        raise ConfigError(
            f"{source}: invalid key {getattr(e, 'full_key', None)!r}: {str(e).splitlines()[0]}"
        ) from e
    except ValueError as e:  # ModelConfig's own range checks
        raise ConfigError(f"{source}: {e}") from e
    try:
        validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from e
    return cfg


def config_to_dict(cfg: PretrainConfig) -> dict[str, Any]:
    """Plain nested dict (for checkpoints, MLflow params, YAML)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def config_to_yaml(cfg: PretrainConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def config_from_dict(d: dict[str, Any]) -> PretrainConfig:
    """Inverse of `config_to_dict` (validated)."""
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(PretrainConfig), OmegaConf.create(d)))
    validate(cfg)
    return cfg
