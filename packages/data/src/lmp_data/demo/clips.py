"""Cutting the demo's evaluation clips (`lmp_data.demo.generate`) and writing their labels and metadata.

A held-out movie is cut into clips of whole scenes (`_cut_clip`), each with its nine LVU labels
(`_clip_labels`); every movie gets a manifest row as a movie database would have it (`_metadata`, the
metadata Movies2Scenes reads); `_scene_lengths` splits a movie's shots into scenes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .render import Movie
from .world import IMDB_GENRES, World


def _cut_clip(movie: Movie, clip_id: str, first_scene: int, k: int) -> tuple[Movie, int, int]:
    """Clip = scenes [first_scene, first_scene + k) of `movie`, times re-based to 0; its main scene (index
    in the clip's scenes) is the one with the most shots (the clip's scene-level labels are that scene's)."""
    sel = np.flatnonzero((movie.scene_of_shot >= first_scene) & (movie.scene_of_shot < first_scene + k))
    a, b = sel[0], sel[-1] + 1
    t0, t1 = movie.shots[a, 0], movie.shots[b - 1, 1]
    tok = np.flatnonzero((movie.token_shot >= a) & (movie.token_shot < b))
    spans = np.round(np.minimum(movie.text_spans[tok], t1) - t0, 3)
    counts = np.bincount(movie.scene_of_shot[a:b] - first_scene, minlength=k)
    main = int(np.argmax(counts))
    clip = Movie(
        movie_id=clip_id,
        shots=np.round(movie.shots[a:b] - t0, 3),
        video=movie.video[a:b],
        audio=movie.audio[a:b],
        text=movie.text[tok],
        text_spans=spans,
        meta={},
        scene_of_shot=movie.scene_of_shot[a:b] - first_scene,
        scenes=movie.scenes[first_scene : first_scene + k],
        setup=movie.setup[a:b],
        audio_setup=movie.audio_setup[a:b],
        truth_latent=movie.truth_latent[a:b],
        shot_size=movie.shot_size[a:b],
        camera_motion=movie.camera_motion[a:b],
        token_shot=movie.token_shot[tok] - a,
    )
    return clip, main, int(a)


def _clip_labels(
    rng: np.random.Generator, clip_id: str, imdb_id: str, split: str, f: dict[str, Any], main: dict[str, int]
) -> dict[str, Any]:
    """All nine LVU labels of one clip: scene-level from its main scene, movie-level from its movie.
    Engagement: like ratio from quality (mean ~0.91 as on YouTube), views log-normal around e^11.76."""
    pop = f["popularity"] + 0.3 * rng.standard_normal()
    votes = max(20, int(np.exp(7.0 + 1.0 * pop + 0.4 * rng.standard_normal())))
    ratio = 1 / (1 + np.exp(-(2.4 + 0.8 * f["quality"])))
    like = int(rng.binomial(votes, ratio))
    views = max(100, int(np.exp(11.76 + 1.2 * pop + 0.3 * rng.standard_normal())))
    return dict(
        clip_id=clip_id,
        imdb_id=imdb_id,
        split=split,
        relationship=main["relationship"],
        way_speaking=main["way_speaking"],
        scene=main["scene"],
        director=f["director"],
        writer=f["writer"],
        year=f["year"],
        genre=f["genre"],
        like_count=like,
        dislike_count=votes - like,
        view_count=views,
    )


ADJ = "Silent Broken Golden Last Hidden Crimson Distant Frozen Wild Bitter Sweet Dark Lost Secret Burning".split()
NOUN = "River City Promise Summer Road Letter Garden Night Stranger Island Heart Game Witness Storm Mirror".split()
PLACE_WORDS = ["an office", "an airport", "a school", "a hotel", "a prison", "a restaurant"]
REL_WORDS = ["two old friends", "former lovers", "a married couple", "a young couple"]
GENRE_WORDS = ["comedy", "crime adventure", "romance", "thriller"]
WAY_WORDS = ["explain themselves", "confront the past", "argue it out", "learn a lesson", "face a threat"]


def _metadata(
    world: World, rng: np.random.Generator, imdb_id: str, f: dict[str, Any], scenes: list[dict], split: str
) -> dict[str, Any]:
    """A manifest row as a real movie database would have it (Movies2Scenes derives similarity from it)."""
    must, extra = IMDB_GENRES[f["genre"]]
    pick = [g for g in must if rng.random() < 0.7] or [must[0]]
    genres = pick + [g for g in extra if rng.random() < 0.25]
    places = sorted({PLACE_WORDS[s["scene"]] for s in scenes[:4]})
    way = WAY_WORDS[int(np.bincount([s["way_speaking"] for s in scenes], minlength=5).argmax())]
    synopsis = (
        f"A {rng.choice(['gripping', 'quiet', 'sharp', 'sprawling', 'tender'])} "
        f"{GENRE_WORDS[f['genre']]} in which {REL_WORDS[f['main_relationship']]} {way} "
        f"between {' and '.join(places)}."
    )
    writer = world.writer_names[f["writer"]]
    return dict(
        imdb_id=imdb_id,
        title=f"The {rng.choice(ADJ)} {rng.choice(NOUN)}",
        year=1930 + 10 * f["year"] + int(rng.integers(0, 10)),
        genres=genres,
        director=world.director_names[f["director"]],
        writer=None if writer == "\\N" else writer,
        synopsis=synopsis,
        split=split,
    )


def _scene_lengths(rng: np.random.Generator, bounds: tuple[int, int], total: int) -> list[int]:
    out: list[int] = []
    while sum(out) < total:
        out.append(int(rng.integers(bounds[0], bounds[1] + 1)))
    out[-1] -= sum(out) - total
    if out[-1] < 1:
        out.pop()
    return out
