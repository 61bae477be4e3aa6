"""`DemoConfig`: every size, dimension and noise level of the demo benchmark, with named size presets.

A demo is fully determined by its `DemoConfig` (the seed included): the same config always gives
byte-identical stores and label files, and `make_demo` reuses an existing demo only when the config
it was built from equals the requested one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEMO_DIR = ".lmp/demo"
"""Where demos are built on first use, relative to the repo root (the sweeps, pretraining's `data.demo`,
the benchmarks): one folder per demo, `demo_folder(size, seed)`."""


def demo_folder(size: str, seed: int, parent: str | Path = DEMO_DIR) -> Path:
    """`<parent>/<size>-seed<seed>`: the folder of one demo (parent relative to the cwd if relative)."""
    return Path(parent) / f"{size}-seed{seed}"


SIZES = ("tiny", "small", "default", "large")
GENERATOR_VERSION = 2
"""Bumped whenever the generative model changes what a config produces: a demo folder built by an older
generator does not match a current config, so `make_demo` rebuilds it instead of reusing it.
1: per-shot random sign carrier (until 2026-11); 2: setups, editing grammars, cross-modal pairing."""


@dataclass
class DemoConfig:
    """Sizes, dims and the generative model's knobs (see `lmp_data.demo.generate` for their meaning)."""

    seed: int = 0
    generator_version: int = GENERATOR_VERSION
    """Which generative model built the demo (recorded in demo.json; only the current one can be built)."""
    # --- pretraining store: unlabeled long movies ---
    pretrain_movies: int = 200
    shots_per_movie: tuple[int, int] = (200, 500)
    # --- evaluation store: clips cut from held-out movies ---
    eval_movies: int = 160
    clips_per_movie: tuple[int, int] = (3, 5)
    scenes_per_clip: tuple[int, int] = (1, 3)
    eval_split: tuple[float, float, float] = (0.6, 0.15, 0.25)
    """Fractions of held-out movies (not clips) whose clips go to LVU train / val / test."""
    labels_per_split: tuple[int, int, int] = (300, 60, 100)
    """Labelled clips per task in train / val / test (LVU has hundreds per task); capped by what exists."""
    # --- structure ---
    shots_per_scene: tuple[int, int] = (6, 30)
    shot_seconds: tuple[float, float] = (1.0, 10.0)
    speech_fraction: float = 0.6
    """Mean fraction of shots with at least one language token (subtitles cover only part of a movie)."""
    tokens_per_second: float = 2.0
    description_tokens: tuple[int, int] = (8, 16)
    extra_people: int = 30
    """Directors / writers beyond the 10 LVU classes; they appear only in pretraining movies."""
    # --- dims ---
    video_dim: int = 128
    audio_dim: int = 64
    text_dim: int = 64
    latent_dim: int = 32
    shot_latent_dim: int = 8
    vocab_size: int = 512
    # --- order and agreement carriers: setups (see generate.py) ---
    n_setups: int = 24
    """Z: the world's vocabulary of shot setups (close-ups, two-shots, establishing shots, inserts, ...)."""
    setup_scale: float = 4.0
    """Norm of each setup's prototype vector in every modality (the per-shot noise has norm ~sqrt(dim))."""
    director_perms: int = 2
    """R: derangements of the setups mixed into each director's editing grammar."""
    grammar_weight: float = 0.8
    """w: weight of the director's permutations in the grammar; the rest is a uniform jump."""
    genre_stay: tuple[float, float, float, float] = (0.1, 0.25, 0.4, 0.55)
    """p_g: each genre's probability of staying on the same setup for the next shot (rhythm)."""
    agree_prob: float = 0.8
    """a: probability that a shot's audio setup is sigma_c(video setup) (c = way of speaking), else uniform."""
    label_coupling: float = 1.0
    """Strength of the realistic correlations between labels (directors prefer genres, decades and writers;
    genre shapes the way of speaking and relationships): 1 = as documented, 0 = independent labels."""
    # --- persistent content and nuisance ---
    content_scale: float = 0.7
    """c: scale of the persistent content latent h (place, relationship, writer, year, genre, engagement)."""
    shot_noise: float = 1.0
    """Std per dim of each shot's modality-specific isotropic noise."""
    nuisance_rank: int = 8
    nuisance_scale: float = 2.0
    """Std of a modality-specific low-rank per-shot nuisance (lighting, loudness, ...)."""
    movie_offset: float = 0.4
    """Std per dim of each movie's modality-specific offset (survives time-averaging)."""
    movie_gain: float = 0.3
    """Std of log of each movie's modality-specific feature gain (style)."""
    word_noise: float = 1.0
    """Std per dim of word-identity vectors added to every language token."""
    latent_movie_noise: float = 0.5
    latent_scene_noise: float = 0.5
    shot_signal: float = 0.6
    """Scale of shot-level factors (shot size, camera motion, drift, scene progress)."""
    encoder_names: dict[str, str] = field(
        default_factory=lambda: {"video": "demo-video", "audio": "demo-audio", "text": "demo-text"}
    )

    def __post_init__(self) -> None:
        for name in ("shots_per_movie", "clips_per_movie", "scenes_per_clip", "shots_per_scene"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"DemoConfig.{name}: expected 1 <= low <= high, got {(lo, hi)}")
        if self.pretrain_movies < 1 or self.eval_movies < 3:
            raise ValueError(
                f"DemoConfig: expected pretrain_movies >= 1 and eval_movies >= 3 (one per split), "
                f"got {self.pretrain_movies}, {self.eval_movies}"
            )
        need = self.latent_dim + self.shot_latent_dim + self.nuisance_rank
        if min(self.video_dim, self.audio_dim, self.text_dim) < need:
            raise ValueError(
                "DemoConfig: every modality dim must be >= latent_dim + shot_latent_dim + nuisance_rank "
                f"= {need}, got {self.dims}"
            )
        if abs(sum(self.eval_split) - 1.0) > 1e-6 or min(self.eval_split) <= 0:
            raise ValueError(
                f"DemoConfig.eval_split: expected 3 positive fractions summing to 1, got {self.eval_split}"
            )
        if self.n_setups < 2 or self.director_perms < 1:
            raise ValueError(
                f"DemoConfig: expected n_setups >= 2 and director_perms >= 1, got {self.n_setups}, "
                f"{self.director_perms}"
            )
        probs = (self.grammar_weight, self.agree_prob, self.label_coupling, *self.genre_stay)
        if not all(0.0 <= p <= 1.0 for p in probs) or max(self.genre_stay) >= 1.0:
            raise ValueError(
                "DemoConfig: grammar_weight, agree_prob, label_coupling in [0, 1] and genre_stay in [0, 1), "
                f"got {probs}"
            )
        if not 0.0 < self.speech_fraction <= 1.0:
            raise ValueError(f"DemoConfig.speech_fraction: expected in (0, 1], got {self.speech_fraction}")

    @property
    def dims(self) -> dict[str, int]:
        return {"video": self.video_dim, "audio": self.audio_dim, "text": self.text_dim}

    def encoders(self) -> dict[str, dict[str, Any]]:
        """The `encoders` argument of `FeatureStore.create` for both demo stores."""
        return {m: {"name": self.encoder_names[m], "dim": d} for m, d in self.dims.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (tuples become lists); `from_dict(to_dict())` round-trips."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DemoConfig:
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name in d:
                v = d[f.name]
                kw[f.name] = tuple(v) if isinstance(v, list) else v
        return cls(**kw)

    @classmethod
    def preset(cls, size: str = "default", **overrides: Any) -> DemoConfig:
        """`size`: tiny (tests, seconds), small (headroom tests), default (main job), large."""
        if size not in PRESETS:
            raise ValueError(f"demo size {size!r}: expected one of {list(PRESETS)}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"DemoConfig: unknown option(s) {unknown}; known: {sorted(names)}")
        return cls(**{**PRESETS[size], **overrides})


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        pretrain_movies=10,
        shots_per_movie=(40, 80),
        eval_movies=30,
        clips_per_movie=(2, 3),
        shots_per_scene=(4, 12),
        labels_per_split=(40, 10, 20),
        extra_people=5,
        video_dim=48,
        audio_dim=40,
        text_dim=40,
        latent_dim=16,
        vocab_size=128,
    ),
    "small": dict(
        pretrain_movies=20,
        shots_per_movie=(100, 200),
        eval_movies=120,
        clips_per_movie=(3, 5),
        labels_per_split=(300, 60, 100),
        extra_people=10,
    ),
    "default": {},
    "large": dict(
        pretrain_movies=1000,
        shots_per_movie=(300, 1200),
        eval_movies=400,
        labels_per_split=(600, 120, 200),
        video_dim=256,
        audio_dim=128,
        text_dim=128,
    ),
}
