"""The demo benchmark's generative model (generator version 2): seeded, pure numpy, no files.

It stands in for MAD (long unlabeled movies) + LVU (labelled clips) at the level of base features. Labels
live in three kinds of carrier (full write-up with the equations: docs/demo_benchmark.md):

1. **Order (across shots only).** Shots are drawn from a world-wide vocabulary of `n_setups` discrete
   *setups* (close-up of A, two-shot, establishing shot, insert, ...), each with a video, an audio and a
   text prototype. The setup sequence of a scene is a Markov chain whose transition matrix is doubly
   stochastic, so its stationary distribution is uniform whatever the class: the time-averaged setup
   histogram has the same expectation for every class. The **director** picks the editing grammar
   `T_d = w * mean_r Perm_{d,r} + (1 - w) * U` (class-specific derangements, `w = grammar_weight`); the
   **genre** picks the rhythm (probability of staying on the same setup): `T = p_g I + (1 - p_g) T_d`.
2. **Cross-modal agreement (per shot).** The audio setup of shot i is `sigma_c(z_i)` with probability
   `agree_prob`, else uniform, where `sigma_c` is a class-specific permutation for the scene's
   **way_speaking** class c; the shot's language tokens carry the text prototype of that audio setup. A
   permutation of a uniform marginal is uniform: audio alone and video alone carry nothing about c, only
   their per-shot pairing does.
3. **Persistent content under per-shot nuisance.** Place (LVU "scene"), relationship, writer, year,
   quality / popularity (-> engagement) and a small part of genre are unit latent vectors present in every
   shot / token of their scene or movie at modest amplitude (`content_scale`), under a larger per-shot
   low-rank + isotropic nuisance, per-movie style gain / offset, and the shot's setup prototype.

Nothing is carried by a per-shot sign or by magnitudes: each carrier is a direction in feature space (a
prototype or a content vector), so it survives per-token LayerNorm and sign flips of the whole feature.

Features of shot i in modality m (language: one row per token of the shot, plus a Zipf word vector):

    x = g_{movie,m} * ( P_m[z_{m,i}] + Q_m [ c * h_{m,i} ; b * u_{m,i} ; n_{m,i} ] ) + o_{movie,m} + eps

`z_{video,i} = z_i`, `z_{audio,i} = z_{text,i} = sigma_c(z_i)` (or uniform), `P_m` setup prototypes of
norm `setup_scale`, `h_m` the content latent with the modality's factor gains `GAINS`, `u` shot-level
factors (shot size, camera motion, AR(1) drift, progress), `n` a rank-`nuisance_rank` nuisance, `eps`
isotropic noise, `Q_m` a random rotation. `Movie.truth_latent` is the gain-free content latent h (no
setup, no nuisance); `Movie.setup` / `Movie.audio_setup` are the true setup sequences.

This module runs the model (`generate`); the per-seed constants are `World` (`lmp_data.demo.world`), a
movie's rendering is `lmp_data.demo.render`, clip cutting, labels and metadata `lmp_data.demo.clips`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .clips import _clip_labels, _cut_clip, _metadata, _scene_lengths
from .config import GENERATOR_VERSION, DemoConfig
from .render import GAINS, MOVIE_FACTORS, SCENE_FACTORS, SHOT_FACTORS, Movie  # noqa: F401  (re-exported)
from .world import (  # noqa: F401  (re-exported: the public names of this module)
    CAMERA_MOTIONS,
    CLASSES,
    IMDB_GENRES,
    MOTION_PRIOR,
    N_LVU_PEOPLE,
    REL_PRIOR,
    SHOT_SIZES,
    WAY_PRIOR,
    World,
)


@dataclass
class Demo:
    """Everything the generative model produced for one `DemoConfig`, in memory."""

    config: DemoConfig
    pretrain: list[Movie]
    clips: list[Movie]
    clip_table: list[dict[str, Any]]
    """Per clip: clip_id, imdb_id, split (train/val/test by held-out movie), every LVU label."""
    descriptions: dict[str, np.ndarray]
    """Retrieval: `clip_id` [n] str, `offsets` [n+1] int64, `tokens` [sum, Dl] float32."""
    people: dict[str, list[str]] = field(default_factory=dict)
    world: World | None = None
    """The per-seed constants (setup prototypes, editing grammars, ...), for analysis and tests."""


def make_world(cfg: DemoConfig) -> World:
    """The world `generate(cfg)` uses (setup prototypes, grammars, pairings, people), without the movies."""
    return World(cfg, np.random.default_rng(_seeds(cfg)[0]))


def _seeds(cfg: DemoConfig) -> list[np.random.SeedSequence]:
    return np.random.SeedSequence([cfg.seed, 0x1E3D]).spawn(4)  # world, names, pretraining, evaluation


def generate(cfg: DemoConfig) -> Demo:
    """Run the generative model for `cfg` (deterministic in `cfg`, seed included)."""
    if cfg.generator_version != GENERATOR_VERSION:
        raise ValueError(
            f"DemoConfig.generator_version={cfg.generator_version}: this code generates version "
            f"{GENERATOR_VERSION} only"
        )
    s_world, s_names, s_pre, s_eval = _seeds(cfg)
    world = World(cfg, np.random.default_rng(s_world))
    names_rng = np.random.default_rng(s_names)
    n_total = cfg.pretrain_movies + cfg.eval_movies
    imdb = names_rng.choice(np.arange(10_000, 9_999_999), size=n_total, replace=False)
    imdb_ids = [f"tt{i:07d}" for i in imdb]

    pretrain = _pretrain_movies(cfg, world, s_pre, imdb_ids)
    clips, table, desc_tokens = _eval_clips(cfg, world, s_eval, imdb_ids)
    offsets = np.r_[0, np.cumsum([len(t) for t in desc_tokens])].astype(np.int64)
    descriptions = dict(
        clip_id=np.array([c.movie_id for c in clips]),
        offsets=offsets,
        tokens=np.concatenate(desc_tokens).astype(np.float32),
    )
    people = {"director": world.director_names[:N_LVU_PEOPLE], "writer": world.writer_names[:N_LVU_PEOPLE]}
    return Demo(cfg, pretrain, clips, table, descriptions, people, world)


def _pretrain_movies(
    cfg: DemoConfig, world: World, s_pre: np.random.SeedSequence, imdb_ids: list[str]
) -> list[Movie]:
    """The unlabeled long movies of the pretraining store, with their metadata."""
    pretrain = []
    for j, seed in enumerate(s_pre.spawn(cfg.pretrain_movies)):
        rng = np.random.default_rng(seed)
        facts = world.movie_facts(rng, lvu_only=False)
        n_shots = int(rng.integers(cfg.shots_per_movie[0], cfg.shots_per_movie[1] + 1))
        lengths = _scene_lengths(rng, cfg.shots_per_scene, n_shots)
        mid = imdb_ids[j]
        pretrain.append(world.render(rng, mid, facts, lengths, {}))
        pretrain[-1].meta = _metadata(world, rng, mid, facts, pretrain[-1].scenes, split="pretrain")
    return pretrain


def _eval_clips(
    cfg: DemoConfig, world: World, s_eval: np.random.SeedSequence, imdb_ids: list[str]
) -> tuple[list[Movie], list[dict[str, Any]], list[np.ndarray]]:
    """The held-out movies cut into labelled clips: the clips, their label table and description tokens."""
    # held-out movies -> clips; LVU split by movie so no movie is on both sides of a probe
    e_rng = np.random.default_rng(s_eval.spawn(1)[0])
    n_tr = max(1, round(cfg.eval_split[0] * cfg.eval_movies))
    n_va = max(1, round(cfg.eval_split[1] * cfg.eval_movies))
    split_of = np.array(["train"] * n_tr + ["val"] * n_va + ["test"] * (cfg.eval_movies - n_tr - n_va))
    e_rng.shuffle(split_of)
    clips: list[Movie] = []
    table: list[dict[str, Any]] = []
    desc_tokens: list[np.ndarray] = []
    for j, seed in enumerate(s_eval.spawn(cfg.eval_movies + 1)[1:]):
        rng = np.random.default_rng(seed)
        facts = world.movie_facts(rng, lvu_only=True)
        imdb_id = imdb_ids[cfg.pretrain_movies + j]
        n_clips = int(rng.integers(cfg.clips_per_movie[0], cfg.clips_per_movie[1] + 1))
        plan: list[tuple[int, int]] = []  # (first scene, n scenes) of each clip; 1-2 gap scenes between
        n_sc = 0
        for _ in range(n_clips):
            n_sc += int(rng.integers(1, 3))
            k = int(rng.integers(cfg.scenes_per_clip[0], cfg.scenes_per_clip[1] + 1))
            plan.append((n_sc, k))
            n_sc += k
        lengths = [int(rng.integers(cfg.shots_per_scene[0], cfg.shots_per_scene[1] + 1)) for _ in range(n_sc)]
        movie = world.render(rng, imdb_id, facts, lengths, {})
        meta = _metadata(world, rng, imdb_id, facts, movie.scenes, split=str(split_of[j]))
        for first_scene, k in plan:
            clip_id = f"clip{len(clips):05d}"
            clip, main_index, first_shot = _cut_clip(movie, clip_id, first_scene, k)
            main = clip.scenes[main_index]
            clip.meta = {
                "imdb_id": imdb_id,
                "title": meta["title"],
                "source_movie": imdb_id,
                "clip_start": float(movie.shots[first_shot, 0]),
                "split": str(split_of[j]),
            }
            clips.append(clip)
            table.append(_clip_labels(rng, clip_id, imdb_id, str(split_of[j]), facts, main))
            main_setups = clip.setup[clip.scene_of_shot == main_index]
            desc_tokens.append(world.description(rng, facts, {**main}, main_setups))
    return clips, table, desc_tokens
