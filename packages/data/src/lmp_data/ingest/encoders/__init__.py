"""Base encoders behind one registry, chosen by name in an `EncodersConfig` (presets `offline` and `paper`).

A YAML file has the same shape as `EncodersConfig`, e.g.::

    video: {name: efficientnet_lite0, options: {frames_per_shot: 3}}
    audio: {name: egemaps_logmel}
    text:  {name: minilm}
    batch_size: 32
    device: auto

`weights` maps a role (`model`, `vggish`, `wav2vec2`) to a local file or folder; `${oc.env:VAR,default}`
interpolation works. Register a new encoder with `@register("video", "my_name")` on a factory
`(device, weights: dict, options: dict) -> encoder` (see `base.py` for what an encoder provides).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmp_data.ingest.encoders.base import AudioEncoder, TextEncoder, VideoEncoder, resolve_device

KINDS = ("video", "audio", "text")
REGISTRY: dict[str, dict[str, Callable]] = {k: {} for k in KINDS}
WEIGHTS_DIR = "${oc.env:LMP_WEIGHTS_DIR,'~/.cache/lmp/weights'}"


def register(kind: str, name: str):
    """Decorator: make a factory `(device, weights, options) -> encoder` selectable as `name` for `kind`."""

    def deco(factory):
        REGISTRY[kind][name] = factory
        return factory

    return deco


@dataclass
class BaseEncoderConfig:
    """One base-feature encoder of ingest: its registry `name`, local `weights` by role, and free-form
    `options` (not `lmp_model.config.EncoderConfig`, the model's contextual transformer)."""

    name: str = ""
    weights: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class EncodersConfig:
    """The encoder set of one store. `batch_size`: shots per encoder call; `device`: auto|cpu|cuda[:i]."""

    video: BaseEncoderConfig = field(default_factory=lambda: BaseEncoderConfig("efficientnet_lite0"))
    audio: BaseEncoderConfig = field(default_factory=lambda: BaseEncoderConfig("egemaps_logmel"))
    text: BaseEncoderConfig = field(default_factory=lambda: BaseEncoderConfig("minilm"))
    batch_size: int = 32
    device: str = "auto"


def preset(name: str) -> EncodersConfig:
    """The built-in `offline` or `paper` set (the latter's weights under $LMP_WEIGHTS_DIR)."""
    if name == "offline":
        return EncodersConfig()
    if name == "paper":
        return EncodersConfig(
            video=BaseEncoderConfig("r2plus1d", {"model": f"{WEIGHTS_DIR}/r2plus1d_18.pth"}),
            audio=BaseEncoderConfig(
                "vggish_wav2vec2",
                {"vggish": f"{WEIGHTS_DIR}/vggish.pth", "wav2vec2": f"{WEIGHTS_DIR}/wav2vec2_base.pth"},
            ),
            text=BaseEncoderConfig("bart", {"model": f"{WEIGHTS_DIR}/bart-base"}),
            batch_size=16,
        )
    raise ValueError(f"unknown encoder preset {name!r}; expected offline, paper or a path to a YAML file")


def load_config(spec: str | Path | EncodersConfig, overrides: list[str] | None = None) -> EncodersConfig:
    """`offline`, `paper` or a YAML file (merged over the defaults) -> a resolved `EncodersConfig`."""
    from omegaconf import OmegaConf

    if isinstance(spec, EncodersConfig):
        base = OmegaConf.structured(spec)
    elif str(spec) in ("offline", "paper"):
        base = OmegaConf.structured(preset(str(spec)))
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: encoders config not found (expected offline, paper or a YAML file)"
            )
        base = OmegaConf.merge(OmegaConf.structured(EncodersConfig), OmegaConf.load(path))
    if overrides:
        base = OmegaConf.merge(base, OmegaConf.from_dotlist(overrides))
    return OmegaConf.to_object(base)


@dataclass
class EncoderSet:
    """The three frozen encoders of one ingest run, plus what the store records about them."""

    video: VideoEncoder
    audio: AudioEncoder
    text: TextEncoder
    batch_size: int

    def record(self) -> dict[str, dict]:
        """`{"video": {"name", "dim", "checksum"}, ...}` for `FeatureStore.create(encoders=...)`."""
        return {k: {"name": e.name, "dim": int(e.dim), "checksum": e.checksum} for k, e in self.items()}

    def items(self):
        return (("video", self.video), ("audio", self.audio), ("text", self.text))


def build(config: EncodersConfig) -> EncoderSet:
    """Instantiate the configured encoders (missing weights -> `WeightsError` naming the file)."""
    from lmp_data.ingest.encoders import offline, paper  # noqa: F401  (registers the built-ins)

    device = resolve_device(config.device)
    built = {}
    for kind in KINDS:
        cfg: BaseEncoderConfig = getattr(config, kind)
        if cfg.name not in REGISTRY[kind]:
            raise ValueError(f"unknown {kind} encoder {cfg.name!r}; registered: {sorted(REGISTRY[kind])}")
        weights = {k: None if v is None else str(Path(str(v)).expanduser()) for k, v in cfg.weights.items()}
        built[kind] = REGISTRY[kind][cfg.name](device, weights, dict(cfg.options))
    return EncoderSet(built["video"], built["audio"], built["text"], config.batch_size)
