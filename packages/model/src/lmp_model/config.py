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
from typing import Any

from omegaconf import OmegaConf

from lmp_data.batch import MODALITIES

INTRA_TERMS = tuple(f"intra/{m}" for m in MODALITIES)
INTER_TERMS = ("inter/v2a", "inter/a2v", "inter/v2l", "inter/l2v")
CROSS_TERMS = ("cross/a2l", "cross/l2a")
WINDOW_TERMS = tuple(f"window/{m}" for m in MODALITIES)
RECON_TERMS = tuple(f"recon/{m}" for m in MODALITIES)
SYNC_TERMS = ("sync/audio",)
PAPER_TERMS = INTRA_TERMS + INTER_TERMS + CROSS_TERMS
ALL_TERMS = PAPER_TERMS + WINDOW_TERMS + RECON_TERMS + SYNC_TERMS


def term_modalities(term: str) -> tuple[str, ...]:
    """The modalities a loss term needs: a model built without one of them (a store without audio, e.g.
    MAD) drops the term. intra/<m>, window/<m>: m; inter/v2a, a2v: video + audio; inter/v2l, l2v: video +
    text; cross/*: all three (Eq. 6 pairs the audio- and the language-conditioned video)."""
    group, name = term.split("/", 1)
    if group in ("intra", "window", "recon"):
        return (name,)
    if group == "inter":
        return ("video", "audio") if name in ("v2a", "a2v") else ("video", "text")
    if group in ("cross", "sync"):
        return MODALITIES
    raise ValueError(f"unknown loss term {term!r}; known: {list(ALL_TERMS)}")


@dataclass
class ProjectionConfig:
    """Sec. 3.1: a linear layer from each modality's base features to the common width `d`."""

    input_norm: bool = False
    """LayerNorm on the base features before the linear layer (off: the paper's plain linear layer)."""
    init: str = "orthogonal"
    """Initialisation of the linear layer: "orthogonal" (default) makes it an isometry of the base
    features (all of their information, equally well conditioned); "default" is PyTorch's uniform
    init, a random matrix with a condition number in the hundreds. Measured (docs/results.md, session 4):
    with "default" a frozen random model's time-averaged v_ctx loses 12 points of LVU scene accuracy
    to v_base (37 vs 49) already at the projection, because a linear probe trained by gradient descent
    cannot use the directions the random matrix shrinks, and 71 pretraining steps do not repair that."""
    dropout: float = 0.0
    """Dropout on the projected tokens (after the position embedding)."""
    token_norm: bool = True
    """LayerNorm on the projected tokens (before [MASK] and position), so every token has unit scale
    per dimension whatever the base encoder's scale. With it, `position_std` sets how loud order is."""
    absolute_position: bool = False
    """Add a learned absolute position embedding (Sec. 3.1 as usually read). Off by default: order is
    seen through the relative-position attention bias (`EncoderConfig.rel_pos`), and with absolute
    positions in every modality the contrastive terms match two modalities by position index alone
    (measured on the demo: inter/v2a fell to 3.1, below ln(micro-batch) = 3.5, while the features lost
    the scene content that base features carry)."""
    position_std: float = 0.5
    """Init std of the [MASK] vector and of the absolute position embedding (when on). BERT's 0.02 is
    meant for token embeddings of the same 0.02 scale; next to tokens of unit scale it is inaudible."""


@dataclass
class TransformerConfig:
    """The block settings every transformer of the model shares (the contextual encoders, Sec. 3.2, and
    the cross-modal encoder-decoders, Sec. 3.3), declared and checked once."""

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
    layer_scale: float = 0.0
    """LayerScale (Touvron et al., CaiT): each residual branch is multiplied by a learned per-channel gain
    initialised to this value; 0 = off (plain residual, the paper's and the default). A small value starts
    every layer near the identity, so the outputs begin as the projected inputs. Measured on the demo
    (demo.yaml, 71 steps, docs/results.md session 4): it keeps the content pretraining otherwise
    removes (v_ctx+a_ctx Content 30-32 off, 34-38 at 0.01, 2 seeds) but only by learning less (inter terms
    at 0.99 of chance at 0.01, 0.96 at 0.1, 0.86 off): a trade-off, not a fix, hence off."""
    rel_pos: int = 8
    """Learned relative-position attention bias per head for offsets -rel_pos..rel_pos (clipped beyond);
    0 = off (absolute position embeddings only, as the paper). On top of the absolute embeddings it lets a
    token attend to "the previous shot" with one parameter instead of a relation learnt between 30 random
    position vectors, which is what masked-shot prediction from neighbours needs."""

    def checks(self, name: str, d: int) -> list[tuple[bool, str, str]]:
        """(ok, field, expected) of every range check, fields named `<name>.<field>`."""
        return [
            (
                self.heads > 0 and d % self.heads == 0,
                f"{name}.heads",
                f"a divisor of d={d}, got {self.heads}",
            ),
            (self.layers >= 1, f"{name}.layers", f">= 1, got {self.layers}"),
            (0.0 <= self.dropout < 1.0 and 0.0 <= self.attn_dropout < 1.0, f"{name}.dropout", "in [0, 1)"),
            (
                self.activation in ("gelu", "relu"),
                f"{name}.activation",
                f"'gelu' or 'relu', got {self.activation!r}",
            ),
        ]


@dataclass
class EncoderConfig(TransformerConfig):
    """Sec. 3.2: one contextual Transformer encoder per modality (video, audio, language)."""

    d: int = 512
    """Common width of all projected tokens and transformers (the paper does not give it)."""


@dataclass
class CrossModalConfig(TransformerConfig):
    """Sec. 3.3: encoder-decoder transformer, contextual audio/language as source, video as target.
    `layers` counts the encoder's and the decoder's layers each; `rel_pos` acts in the decoder's
    self-attention over shots and the encoder's over its source (language: counted in tokens)."""

    shared: bool = False
    """False (default): two cross-modal transformers, one for audio and one for language, reading the
    paper's "all contextual and cross-modal transformers" (plural). True: one transformer for both
    sources, told apart by a learned source-type embedding added to the source sequence."""
    align: bool = True
    """Cross-attention bias toward the source elements of the query's own shot (the shot's audio; the
    language tokens overlapping it), one learned weight per head. Without it (the paper) a shot of the
    target can find its own shot in the source only by content: no absolute positions are shared. On by
    default with `query: video` (the configuration measured in docs/results.md, session 6); `loss.sync`
    needs it to compare a shot's picture with its own sound."""
    query: str = "video"
    """What the decoder decodes. "video" (the paper, Fig. 2; default): the contextual video, refined by
    the source. Both cross-modal outputs then carry the same video through the decoder's residual, so
    Eq. 6 contrasts two views of a shot (video + audio, video + language) against every other shot of the
    batch and falls to ~0.04 of chance without learning any alignment (the inter-modal terms do that): it
    acts as a per-shot uniformity term on the video, and that keeps what the other terms pile into a few
    movie-level directions. Measured (docs/results.md, session 6; truth probe on all 639 demo clips,
    default features v_ctx+a_ctx+v_cross_a, 71 steps, seeds 0 / 1): scene 45.4 / 43.8 with "video" vs
    36.1 / 39.0 with "source", year 44.0 / 47.4 vs 39.0 / 41.9, other labels level.
    "source": the source's own per-shot summary (the shot's contextual audio; the mean of the shot's
    contextual language tokens, Eq. 4), attending to the whole source; v_cross_a / v_cross_l are then audio
    / language read out on the shot timeline and Eq. 6 aligns what audio and language say about each shot
    (it cannot be solved through the video)."""


@dataclass
class MaskingConfig:
    """Sec. 3.2, Eq. 1: BERT-like masking of the input tokens of every modality."""

    ratio: float = 0.2
    """Fraction of the valid tokens of each window and modality replaced by that modality's [MASK]
    vector: exactly floor(ratio * n_valid + 0.5) tokens per window, chosen uniformly."""
    stop_gradient: bool = False
    """Detach the targets (the projected input tokens). The paper trains the projection end to end
    and says nothing of a stop-gradient, so the default lets gradients reach the targets."""
    normalize: bool = True
    """L2-normalise prediction and target before the dot product (cosine, like Eq. 3-6). False with
    temperature 1 = Eq. 1's raw dot product, whose logits scale with the token norms (measured: the term
    starts at ~18 and only falls back to its chance level)."""
    temperature: float = 0.1
    """Logits are (pred . target) / temperature; with `normalize` the logits lie in [-10, 10]."""
    random_ratio: float = 0.1
    """Of the selected positions, this fraction gets a random valid token of the same modality from the
    batch instead of [MASK] (BERT's 10 %; 0 with keep_ratio 0 = the paper's plain [MASK])."""
    keep_ratio: float = 0.1
    """Of the selected positions, this fraction keeps its own input (BERT's 10 %). With random/kept
    positions the model cannot tell which inputs it will be asked to predict, so every output, not only
    the [MASK] ones, has to carry a contextual estimate of its shot; features are read from unmasked
    inputs downstream."""


@dataclass
class LossConfig:
    """Eq. 7 with a weight per group; weight 0 switches a group off (the Table 1 ablations)."""

    intra: float = 1.0
    inter: float = 1.0
    cross: float = 1.0
    window: float = 1.0
    """Weight of the window term (not in the paper; 0 = the paper's Eq. 7): a window's time-averaged
    contextual features, per modality, must pick out another window of the same movie among the
    micro-batch's windows (InfoNCE, `temperature`; the loader draws windows in same-movie groups of
    `data.views`). It trains the very quantity the LVU probes read -- a clip's time average -- to keep
    what persists across a movie (its content, and how its shots follow one another) and to average
    away what changes from shot to shot; the paper's three terms are all per shot or per token, and
    measured on the demo they leave the time average no better than a frozen random model's."""
    window_shuffled: bool = True
    """Add every window of the micro-batch with its shots shuffled as a negative of the window term
    (video and audio): the shuffled window holds exactly the anchor's shots, so only a time average that
    encodes how the shots follow one another can tell the anchor's movie from it. Without these the
    term is solved by what a movie's shots share one by one (measured on the demo: 0.05 of chance
    after 71 steps, probes unchanged)."""
    window_head: str = "mlp"
    """Head between the time-averaged features and the window InfoNCE (SimCLR): "mlp" (d -> d -> d),
    "linear", or "none" (the features themselves)."""
    head: str = "none"
    """Head between the features and the per-shot InfoNCE terms (SimCLR's projection head; not in the
    paper): "mlp" (d -> d -> d, one per modality and per cross-modal output), "linear", or "none" (the
    paper: Eq. 1-6 on the contextual / cross-modal outputs themselves). Probes read the features before
    the head. Tried against what pretraining does to the probed features (their variance piles into a few
    directions, participation ratio 82 -> 26 in 71 steps, scene content left in the small ones): measured on
    the demo (docs/results.md, Session 5) the heads change neither, and the terms learn less; off."""
    temperature: float = 0.1
    """tau of every InfoNCE (Eq. 3-6). The paper's 0.3 bounds the logits to [-3.3, 3.3]: with ~1000
    candidates even a perfect match cannot go below ln(1 + 999 e^-3.3) = 3.6, and the gradient is weak
    (measured on cross-shot synthetic data, 150 steps: inter/v2a 5.18 at 0.3 vs 3.91 at 0.1, chance 6.87)."""
    recon: float = 0.0
    """Weight of the reconstruction term (not in the paper; 0 = off): at every masked position
    (`masking`), a linear head on the contextual output regresses the shot's *base* features, each token
    LayerNorm-standardised (no affine), MSE (MAE's target). Unlike Eq. 1, whose negatives include the
    window's other masked shots, it does not push apart shots that share a scene or a movie, and its
    target is the data, so it cannot collapse: the estimate of a hidden shot from its context keeps what
    persists (content) and what is predictable from the order, which is what a clip's time average is
    probed for. Chance level: predicting the masked set's mean target (logged as `loss_chance/recon/<m>`)."""
    sync: float = 0.0
    """Weight of the synchrony term (not in the paper; 0 = off; needs `cross.query: video`): the
    audio-conditioned video of every shot (the cross-modal decoder reading the window's audio) must tell,
    through a linear head and a binary cross-entropy, whether the audio it reads is the window's own or
    the same audio with its shots shuffled (audio-visual correspondence, Arandjelovic & Zisserman 2017;
    Korbar et al. 2018, at the shot level). A shuffled window holds exactly the same audio and video, so
    only how a shot's sound goes with its picture tells them apart: the per-shot agreement between
    modalities that neither contextual encoder can see alone. Chance level ln 2."""
    disabled: list[str] = field(default_factory=list)
    """Finer switches: term names to leave out, e.g. ["inter/v2l", "inter/l2v", "intra/text"]."""
    negatives: str = "batch"
    """Candidates of the per-shot InfoNCE terms (Eq. 1, 3-6). "batch" (the paper): every other shot /
    masked token of the micro-batch is a negative, the anchor's own window's too. "other_windows": shots
    of the anchor's own window are neither positives nor negatives, so what a window's shots share (their
    scene, their movie) is no longer pushed apart by the hardest negatives. "other_movies": also those of
    the other windows of the anchor's movie (the loader's same-movie views; as "other_windows" when the
    batch carries no `movie` field)."""
    contrast_masked: bool = True
    """Whether [MASK]-replaced positions also take part in the inter- and cross-modal InfoNCE (their
    contextual output is still a representation of that shot). False leaves them out."""

    def weights(self) -> dict[str, float]:
        """{term group: weight} of Eq. 7 and lmp's two added groups."""
        return {
            "intra": self.intra, "inter": self.inter, "cross": self.cross, "window": self.window,
            "recon": self.recon, "sync": self.sync,
        }  # fmt: skip

    def enabled_terms(self) -> tuple[str, ...]:
        """Names of the terms that are computed, in a fixed order."""
        weights = self.weights()
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
        *enc.checks("encoder", enc.d),
        *cross.checks("cross", enc.d),
        (0.0 <= mask.ratio < 1.0, "masking.ratio", f"in [0, 1), got {mask.ratio}"),
        (cfg.projection.position_std >= 0, "projection.position_std", ">= 0"),
        (
            cfg.projection.init in ("orthogonal", "default"),
            "projection.init",
            f"'orthogonal' or 'default', got {cfg.projection.init!r}",
        ),
        (
            min(mask.random_ratio, mask.keep_ratio) >= 0 and mask.random_ratio + mask.keep_ratio <= 1,
            "masking.random_ratio/keep_ratio",
            f"two fractions >= 0 summing to <= 1, got {mask.random_ratio}, {mask.keep_ratio}",
        ),
        (cross.query in ("video", "source"), "cross.query", f"'video' or 'source', got {cross.query!r}"),
        (mask.temperature > 0, "masking.temperature", f"> 0, got {mask.temperature}"),
        (loss.temperature > 0, "loss.temperature", f"> 0, got {loss.temperature}"),
        (
            min(loss.intra, loss.inter, loss.cross, loss.window, loss.recon, loss.sync) >= 0,
            "loss.intra/inter/cross/window/recon/sync",
            "weights >= 0",
        ),
        (
            loss.sync == 0 or cross.query == "video",
            "loss.sync",
            "cross.query 'video' (with 'source' the audio-conditioned output never sees the video)",
        ),
        (
            not (loss.window > 0 and loss.window_shuffled and cfg.projection.absolute_position),
            "loss.window_shuffled",
            "off with projection.absolute_position (a shuffled window would carry its original positions)",
        ),
        (
            loss.window_head in ("mlp", "linear", "none"),
            "loss.window_head",
            f"'mlp', 'linear' or 'none', got {loss.window_head!r}",
        ),
        (
            loss.head in ("mlp", "linear", "none"),
            "loss.head",
            f"'mlp', 'linear' or 'none', got {loss.head!r}",
        ),
        (
            loss.negatives in ("batch", "other_windows", "other_movies"),
            "loss.negatives",
            f"'batch', 'other_windows' or 'other_movies', got {loss.negatives!r}",
        ),
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
    return load_structured(ModelConfig, path, overrides, "model")


def load_structured(schema: type, path: str | Path | None, overrides: Sequence[str], what: str) -> Any:
    """The dataclass `schema` filled from an optional YAML file, then `key=value` overrides (OmegaConf
    structured: unknown keys and wrong types raise naming the key). `what` names the file in errors."""
    parts = [OmegaConf.structured(schema)]
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{what} config {path}: no such file")
        parts.append(OmegaConf.load(path))
    if overrides:
        parts.append(OmegaConf.from_dotlist(list(overrides)))
    return OmegaConf.to_object(OmegaConf.merge(*parts))


def model_config_to_dict(cfg: ModelConfig) -> dict:
    """Plain nested dict of a config (for checkpoints, MLflow params, YAML dumps)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
