"""Movies2Scenes' configuration (`lmp_model.recipes.m2s`): one dataclass per stage, checked on creation.

The `m2s:` section of a pretrain config; kept apart from the model so the config module
(`lmp_model.pretrain.config`) reads it without the model code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmp_model.config import EncoderConfig, ProjectionConfig

STAGES = ("shot", "movie", "scene")
SCENE_PAIRS = ("mined", "split", "mixed")


# ---------------------------------------------------------------------------------------- config
@dataclass
class ShotStageConfig:
    """Sec. 3.1.1: E_shot and its neighbouring-shot contrastive loss."""

    hidden: int = 512
    dim: int = 512
    """Shot feature width (the supplement's 512)."""
    offset: int = 2
    """Positives are x_{t-offset} and x_{t+offset} (paper: 2)."""
    temperature: float = 0.07


@dataclass
class MovieStageConfig:
    """Sec. 3.1.2: E_movie, adjacency pooling, L_output; values from Sec. 4.1.2."""

    hidden: int = 512
    dropout: float = 0.5
    movie_len: int = 1024
    avg_kernel: int = 16
    avg_stride: int = 8
    max_kernel: int = 16
    max_stride: int = 8
    similarity: dict[str, float] = field(
        default_factory=lambda: {"genres": 1.0, "year": 1.0, "director": 1.0, "writer": 1.0, "synopsis": 1.0}
    )
    """Manifest columns of the movie similarity S and their weights (`movie_similarity`); columns the
    manifest lacks are skipped. Only the training movies' own metadata is read (never evaluation labels)."""
    year_scale: float = 10.0
    """Numeric columns: similarity exp(-|a - b| / year_scale)."""
    per_movie: int = 3
    """Similar movies per movie (paper: "three most similar movies on average"; `similar_movies`)."""
    positive_frac: float = 0.5
    """Share of similar pairs among the movie stage's pairs (the paper does not say; balanced)."""


@dataclass
class MiningConfig:
    """Supplement 1.1c / 3a: scene-pair selection from a similar movie pair."""

    scene_len: int = 9
    stride: int = 1
    top_frac: float = 0.5
    non_overlapping: bool = True
    """True: a kept scene may not overlap (in shots) a kept scene of the same movie; False: only the
    very same scene index is excluded (the supplement's 3a wording)."""


@dataclass
class SceneStageConfig:
    """Sec. 3.2: MoCo over scenes; the supplement's MoCo values."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    dim: int = 128
    queue_size: int = 65536
    momentum: float = 0.999
    temperature: float = 0.07
    pairs: str = "mined"
    """"mined" (paper): key scene from the batch's pair_* fields, a mined pair; "split": the window's two
    halves; "mixed": pair_* fields holding mined pairs (share `mined_frac`) and split windows."""
    mined_frac: float = 0.5
    """"mixed" only: the share of mined pairs."""
    pairs_file: str = ""
    """Mined scene pairs (Parquet, `m2s_data.PAIR_COLUMNS`); empty: mine them at the start of the run
    from its initial weights (`train.init_from`, the movie stage's export) into the run folder."""


@dataclass
class M2SConfig:
    stage: str = "scene"
    """Which stage's loss `forward` computes and which modules train: "shot", "movie" or "scene"."""
    modalities: list[str] = field(default_factory=lambda: ["video"])
    """Base features concatenated per shot (paper: visual only)."""
    shot: ShotStageConfig = field(default_factory=ShotStageConfig)
    movie: MovieStageConfig = field(default_factory=MovieStageConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    scene: SceneStageConfig = field(default_factory=SceneStageConfig)
    max_shots: int = 64
    """Longest scene / window the scene encoder takes (position embedding size when it is on)."""

    def __post_init__(self) -> None:
        s, mv, mi, sc = self.shot, self.movie, self.mining, self.scene
        checks = [
            (self.stage in STAGES, "stage", f"one of {STAGES}, got {self.stage!r}"),
            (min(s.hidden, s.dim) >= 1 and s.offset >= 1 and s.temperature > 0, "shot", "positive sizes, offset, temperature"),
            (min(mv.hidden, mv.movie_len, mv.avg_kernel, mv.avg_stride, mv.max_kernel, mv.max_stride) >= 1, "movie", "sizes >= 1"),
            (0.0 <= mv.dropout < 1.0, "movie.dropout", f"in [0, 1), got {mv.dropout}"),
            (mi.scene_len >= 1 and mi.stride >= 1 and 0 < mi.top_frac <= 1, "mining", "scene_len, stride >= 1 and top_frac in (0, 1]"),
            (sc.dim >= 1 and sc.queue_size >= 1 and 0 <= sc.momentum <= 1 and sc.temperature > 0, "scene", "dim, queue_size >= 1, momentum in [0, 1], temperature > 0"),
            (sc.pairs in SCENE_PAIRS, "scene.pairs", f"one of {SCENE_PAIRS}, got {sc.pairs!r}"),
            (0.0 <= sc.mined_frac <= 1.0, "scene.mined_frac", f"in [0, 1], got {sc.mined_frac}"),
            (mv.per_movie >= 1 and 0.0 <= mv.positive_frac <= 1.0 and mv.year_scale > 0, "movie", "per_movie >= 1, positive_frac in [0, 1], year_scale > 0"),
            (sc.encoder.d % sc.encoder.heads == 0, "scene.encoder.heads", f"a divisor of d={sc.encoder.d}"),
            (self.max_shots >= 1, "max_shots", f">= 1, got {self.max_shots}"),
        ]  # fmt: skip
        for ok, name, expected in checks:
            if not ok:
                raise ValueError(f"M2SConfig.{name}: expected {expected}")
