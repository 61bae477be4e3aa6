"""Typed configs of the LMP model, one small dataclass per component (torchtitan style).

Defaults are the paper's where it says (3-layer transformers, 20% masking, tau = 0.3); where it is
silent or ambiguous the choice is an option whose default is documented on the field. A whole model
config is YAML under `experiments/configs/model/`, loaded onto `ModelConfig` with OmegaConf
(`load_model_config`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

MODALITIES = ("video", "audio", "text")
INTRA_TERMS = tuple(f"intra/{m}" for m in MODALITIES)
INTER_TERMS = ("inter/v2a", "inter/a2v", "inter/v2l", "inter/l2v")
CROSS_TERMS = ("cross/a2l", "cross/l2a")
ALL_TERMS = INTRA_TERMS + INTER_TERMS + CROSS_TERMS


@dataclass
class ProjectionConfig:
    """Sec. 3.1: a linear layer from each modality's base features to the common width `d`."""

    input_norm: bool = False
    """LayerNorm on the base features before the linear layer (off: the paper's plain linear layer)."""
    dropout: float = 0.0
    """Dropout on the projected tokens (after the position embedding)."""


@dataclass
class EncoderConfig:
    """Sec. 3.2: one contextual Transformer encoder per modality (video, audio, language)."""

    d: int = 512
    """Common width of all projected tokens and transformers (the paper does not give it)."""
    layers: int = 3
    heads: int = 8
    ff_mult: int = 4
    """Feed-forward width = ff_mult * d."""
    dropout: float = 0.1
    """Dropout on the residual branches and in the feed-forward block."""
    attn_dropout: float = 0.0
    """Dropout on the attention weights. 0 keeps PyTorch's fused flash-attention kernel on CPU; any
    dropout there falls back to the unfused math kernel (measured 2.3x slower per layer)."""
    activation: str = "gelu"
    norm_first: bool = True
    """Pre-LayerNorm layers plus a final LayerNorm (stable without warm-up tricks); False = post-LN [45]."""


@dataclass
class CrossModalConfig:
    """Sec. 3.3: encoder-decoder transformer, contextual audio/language as source, video as target."""

    layers: int = 3
    """Layers of the encoder and of the decoder each."""
    shared: bool = False
    """False (default): two cross-modal transformers, one for audio and one for language, reading the
    paper's "all contextual and cross-modal transformers" (plural). True: one transformer for both
    sources, told apart by a learned source-type embedding added to the source sequence."""
    heads: int = 8
    ff_mult: int = 4
    dropout: float = 0.1
    attn_dropout: float = 0.0
    """As `EncoderConfig.attn_dropout`."""
    activation: str = "gelu"
    norm_first: bool = True


@dataclass
class MaskingConfig:
    """Sec. 3.2, Eq. 1: BERT-like masking of the input tokens of every modality."""

    ratio: float = 0.2
    """Fraction of the valid tokens of each window and modality replaced by that modality's [MASK]
    vector: exactly floor(ratio * n_valid + 0.5) tokens per window, chosen uniformly."""
    stop_gradient: bool = False
    """Detach the targets (the projected input tokens). The paper trains the projection end to end
    and says nothing of a stop-gradient, so the default lets gradients reach the targets."""
    normalize: bool = False
    """L2-normalise prediction and target before the dot product; False = Eq. 1's raw dot product."""
    temperature: float = 1.0
    """Logits are (pred . target) / temperature; 1.0 = Eq. 1 as written."""


@dataclass
class LossConfig:
    """Eq. 7 with a weight per group; weight 0 switches a group off (the Table 1 ablations)."""

    intra: float = 1.0
    inter: float = 1.0
    cross: float = 1.0
    temperature: float = 0.3
    """tau of every InfoNCE (Eq. 3-6)."""
    disabled: list[str] = field(default_factory=list)
    """Finer switches: term names to leave out, e.g. ["inter/v2l", "inter/l2v", "intra/text"]."""
    contrast_masked: bool = True
    """Whether [MASK]-replaced positions also take part in the inter- and cross-modal InfoNCE (their
    contextual output is still a representation of that shot). False leaves them out."""

    def enabled_terms(self) -> tuple[str, ...]:
        """Names of the terms that are computed, in a fixed order."""
        weights = {"intra": self.intra, "inter": self.inter, "cross": self.cross}
        return tuple(t for t in ALL_TERMS if weights[t.split("/")[0]] != 0 and t not in self.disabled)


@dataclass
class ModelConfig:
    """The whole LMP model: projections, contextual and cross-modal transformers, masking, losses."""

    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    cross: CrossModalConfig = field(default_factory=CrossModalConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    max_shots: int = 64
    """Size of the shot position embedding (video, audio); must be >= the window length k."""
    max_tokens: int = 512
    """Size of the language token position embedding; must be >= T of every batch."""

    @property
    def d(self) -> int:
        """Common width (`encoder.d`)."""
        return self.encoder.d

    def __post_init__(self) -> None:
        validate_model_config(self)


def validate_model_config(cfg: ModelConfig) -> None:
    """Raise ValueError naming the field when a value is out of range."""
    enc, cross, mask, loss = cfg.encoder, cfg.cross, cfg.masking, cfg.loss
    checks = [
        (enc.d > 0, "encoder.d", f"a positive width, got {enc.d}"),
        (
            enc.heads > 0 and enc.d % enc.heads == 0,
            "encoder.heads",
            f"a divisor of d={enc.d}, got {enc.heads}",
        ),
        (
            cross.heads > 0 and enc.d % cross.heads == 0,
            "cross.heads",
            f"a divisor of d={enc.d}, got {cross.heads}",
        ),
        (enc.layers >= 1, "encoder.layers", f">= 1, got {enc.layers}"),
        (cross.layers >= 1, "cross.layers", f">= 1, got {cross.layers}"),
        (0.0 <= enc.dropout < 1.0 and 0.0 <= enc.attn_dropout < 1.0, "encoder.dropout", "in [0, 1)"),
        (0.0 <= cross.dropout < 1.0 and 0.0 <= cross.attn_dropout < 1.0, "cross.dropout", "in [0, 1)"),
        (
            enc.activation in ("gelu", "relu"),
            "encoder.activation",
            f"'gelu' or 'relu', got {enc.activation!r}",
        ),
        (
            cross.activation in ("gelu", "relu"),
            "cross.activation",
            f"'gelu' or 'relu', got {cross.activation!r}",
        ),
        (0.0 <= mask.ratio < 1.0, "masking.ratio", f"in [0, 1), got {mask.ratio}"),
        (mask.temperature > 0, "masking.temperature", f"> 0, got {mask.temperature}"),
        (loss.temperature > 0, "loss.temperature", f"> 0, got {loss.temperature}"),
        (min(loss.intra, loss.inter, loss.cross) >= 0, "loss.intra/inter/cross", "weights >= 0"),
        (cfg.max_shots >= 1, "max_shots", f">= 1, got {cfg.max_shots}"),
        (cfg.max_tokens >= 1, "max_tokens", f">= 1, got {cfg.max_tokens}"),
    ]
    for ok, name, expected in checks:
        if not ok:
            raise ValueError(f"ModelConfig.{name}: expected {expected}")
    unknown = sorted(set(loss.disabled) - set(ALL_TERMS))
    if unknown:
        raise ValueError(f"ModelConfig.loss.disabled: unknown term(s) {unknown}; known: {list(ALL_TERMS)}")


def load_model_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ModelConfig:
    """Load a model YAML (top-level keys = `ModelConfig` fields) plus `key=value` overrides.

    Unknown keys and wrongly typed values raise with the offending key named (OmegaConf structured
    config); out-of-range values raise ValueError from `validate_model_config`.
    """
    schema = OmegaConf.structured(ModelConfig)
    parts = [schema]
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model config {path}: no such file")
        parts.append(OmegaConf.load(path))
    if overrides:
        parts.append(OmegaConf.from_dotlist(list(overrides)))
    merged = OmegaConf.merge(*parts)
    return OmegaConf.to_object(merged)


def model_config_to_dict(cfg: ModelConfig) -> dict:
    """Plain nested dict of a config (for checkpoints, MLflow params, YAML dumps)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
