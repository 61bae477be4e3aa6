"""Rendering a demo movie (`lmp_data.demo.generate`): shots, setups, features and language tokens.

`MovieRenderer` holds `World.render` and `World.description` (a mixin: it reads the world's constants,
`lmp_data.demo.world`); `Movie` is what it renders, `GAINS` how strongly each modality carries each content
factor. The equations: `lmp_data.demo.generate`'s docstring and docs/demo_benchmark.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lmp_data.batch import MODALITIES

MOVIE_FACTORS = ("genre", "writer", "year", "quality", "popularity", "movie_noise")
SCENE_FACTORS = ("relationship", "scene", "scene_noise")
SHOT_FACTORS = ("shot_size", "camera_motion", "drift", "progress")
# director and way_speaking have NO content vector: they live only in the order / agreement carriers.

GAINS: dict[str, dict[str, float]] = {
    m: dict(zip(MOVIE_FACTORS + SCENE_FACTORS + SHOT_FACTORS, g))
    for m, g in (
        #         genre wri  year qual pop  mnoi rel  scene snoi size motion drift prog
        ("video", (0.5, 0.4, 1.8, 0.6, 0.6, 1.0, 0.8, 1.5, 1.0, 1.5, 1.5, 1.0, 1.0)),
        ("audio", (0.5, 0.5, 1.0, 0.6, 0.6, 1.0, 0.8, 1.0, 1.0, 0.3, 0.5, 1.0, 1.0)),
        ("text", (0.5, 1.5, 0.6, 1.0, 0.5, 1.0, 1.5, 0.6, 1.0, 0.0, 0.0, 0.7, 0.3)),
    )
}  # fmt: skip
"""How strongly each modality carries each content factor: video shows places, the film stock (year) and
shot sizes, audio the place's ambience, language the writer and the relationship. Every content label is in
at least two modalities; director and way_speaking are in all three through the setup sequences."""


@dataclass
class Movie:
    """One movie (pretraining) or clip (evaluation): the store's arrays plus the ground truth."""

    movie_id: str
    shots: np.ndarray  # [S, 2] float64 seconds
    video: np.ndarray  # [S, Dv] float32
    audio: np.ndarray  # [S, Da] float32
    text: np.ndarray  # [T, Dl] float32
    text_spans: np.ndarray  # [T, 2] float64 seconds
    meta: dict[str, Any]
    # ground truth (not written to the store)
    scene_of_shot: np.ndarray  # [S] int, index into `scenes`
    scenes: list[dict[str, int]]  # per scene: relationship, way_speaking, scene
    setup: np.ndarray  # [S] int, the video setup z_i (order carrier)
    audio_setup: np.ndarray  # [S] int, the audio / language setup (sigma_c(z_i) or a uniform draw)
    truth_latent: np.ndarray  # [S, L] float32, the gain-free persistent content latent h (no setups)
    shot_size: np.ndarray  # [S] int
    camera_motion: np.ndarray  # [S] int
    token_shot: np.ndarray  # [T] int, the shot each token was spoken in

    def store_arrays(self) -> dict[str, np.ndarray]:
        """The keyword arguments of `FeatureStore.write_movie` (besides id and meta)."""
        return dict(
            shots=self.shots, video=self.video, audio=self.audio, text=self.text, text_spans=self.text_spans
        )


class MovieRenderer:
    """`World`'s rendering methods: a movie from its facts and scene lengths, a scene's description."""

    def render(
        self, rng: np.random.Generator, movie_id: str, facts: dict[str, Any], scene_lengths: list[int],
        meta: dict[str, Any],
    ) -> Movie:  # fmt: skip
        """Generate a movie with the given scene lengths: shots, setups, shot factors, features, tokens."""
        cfg = self.cfg
        Z = cfg.n_setups
        scenes = [self.scene_facts(rng, facts) for _ in scene_lengths]
        S = int(sum(scene_lengths))
        scene_of_shot = np.repeat(np.arange(len(scenes)), scene_lengths)
        first = np.r_[0, np.cumsum(scene_lengths)[:-1]]
        pos = np.arange(S) - first[scene_of_shot]
        progress = (pos + 0.5) / np.asarray(scene_lengths)[scene_of_shot]

        shots, dur = self._shot_times(rng, S)
        setup, size, motion, drift = self._setups_and_shot_factors(rng, facts, scenes, scene_of_shot, pos)

        # audio setup: the scene's way of speaking maps the video setup (sigma_c) with prob. agree_prob
        way = np.array([sc["way_speaking"] for sc in scenes])[scene_of_shot]
        agree = rng.random(S) < cfg.agree_prob
        audio_setup = np.where(agree, self.way_perm[way, setup], rng.integers(0, Z, S)).astype(np.int64)
        truth = (
            self.movie_latent(facts, None)[None]
            + np.stack([self.scene_latent(s, None) for s in scenes])[scene_of_shot]
        )
        token_shot, spans, words = self._speech(rng, scenes, scene_of_shot, shots, dur)
        out = self._features(
            rng, facts, scenes, scene_of_shot, size=size, motion=motion, drift=drift, progress=progress,
            setup=setup, audio_setup=audio_setup, token_shot=token_shot, words=words,
        )  # fmt: skip

        return Movie(
            movie_id=movie_id,
            shots=shots,
            video=out["video"],
            audio=out["audio"],
            text=out["text"],
            text_spans=spans,
            meta=meta,
            scene_of_shot=scene_of_shot,
            scenes=[{k: s[k] for k in ("relationship", "way_speaking", "scene")} for s in scenes],
            setup=setup,
            audio_setup=audio_setup,
            truth_latent=truth.astype(np.float32),
            shot_size=size,
            camera_motion=motion,
            token_shot=token_shot,
        )

    def _shot_times(self, rng: np.random.Generator, S: int) -> tuple[np.ndarray, np.ndarray]:
        """([S, 2] shot start / end seconds, [S] durations): log-normal durations (median 3 s), contiguous."""
        lo, hi = self.cfg.shot_seconds
        dur = np.clip(np.exp(rng.normal(np.log(3.0), 0.6, S)), lo, hi)
        ends = np.cumsum(dur)
        shots = np.stack([ends - dur, ends], 1)
        shots = np.round(shots, 3)  # millisecond times, as an edit decision list would have
        shots[1:, 0] = shots[:-1, 1]
        return shots, dur

    def _setups_and_shot_factors(
        self, rng: np.random.Generator, facts: dict[str, Any], scenes: list[dict[str, Any]],
        scene_of_shot: np.ndarray, pos: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        """([S] video setup z_i, [S] shot size, [S] camera motion, [S, Ls] drift) of each shot."""
        cfg = self.cfg
        Z, S = cfg.n_setups, len(pos)
        # setups: each scene starts from the uniform distribution, then follows the movie's Markov chain
        # T = p_g I + (1 - p_g) (w mean_r Perm_{d,r} + (1 - w) U), sampled as a mixture of moves per shot:
        # stay (p_g), one of the director's permutations ((1-p_g) w / R each), a uniform jump (the rest)
        R = cfg.director_perms
        p_stay = cfg.genre_stay[facts["genre"]]
        uz = rng.random(S)
        frac, w = (uz - p_stay) / (1 - p_stay), cfg.grammar_weight
        move = np.where(frac < 0, -1, np.where(frac < w, (frac / max(w, 1e-12) * R).astype(int), R))
        move = np.minimum(move, R)  # -1 stay, 0..R-1 permutation r, R uniform jump
        move[pos == 0] = R
        jump = rng.integers(0, Z, S)
        perms = self.director_perm[facts["director"]].tolist()

        # shot-level factors: shot size opens wide and tightens (Markov), camera motion per scene style,
        # AR(1) drift reset at scene boundaries
        Ls = cfg.shot_latent_dim
        drift = rng.standard_normal((S, Ls)).astype(np.float32)
        u = rng.random((S, 3))
        rho = 0.85
        mot_draw = rng.choice(4, size=S, p=facts["motion_prior"])
        scene_motion = np.array([sc["motion"] for sc in scenes])[scene_of_shot]
        size_l, z_l = [0] * S, [0] * S
        pos_l, u0, u1, mv, jp = pos.tolist(), u[:, 0].tolist(), u[:, 1].tolist(), move.tolist(), jump.tolist()
        c = np.float32(np.sqrt(1 - rho**2))
        for i in range(S):  # one pass; only the drift row is a numpy op
            m = mv[i]
            z_l[i] = jp[i] if m == R else (z_l[i - 1] if m < 0 else perms[m][z_l[i - 1]])
            if pos_l[i] == 0:
                size_l[i] = 0 if u0[i] < 0.4 else (1 if u0[i] < 0.8 else 2)
            else:
                step = 0 if u0[i] < 0.3 else (1 if u0[i] < 0.75 else (1 if u1[i] > 0.6 else -1))
                size_l[i] = min(4, max(0, size_l[i - 1] + step))
                drift[i] = rho * drift[i - 1] + c * drift[i]
        size = np.asarray(size_l, dtype=np.int64)
        setup = np.asarray(z_l, dtype=np.int64)
        motion = np.where(u[:, 2] < 0.6, scene_motion, mot_draw).astype(np.int64)
        return setup, size, motion, drift

    def _speech(
        self, rng: np.random.Generator, scenes: list[dict[str, Any]], scene_of_shot: np.ndarray,
        shots: np.ndarray, dur: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        """([T] the shot of each language token, [T, 2] its span in seconds, [T] its word)."""
        cfg, S = self.cfg, len(shots)
        # speech: each scene has a talkativeness; tokens laid out inside their shot, some run past its end
        speaks = rng.random(S) < np.array([scenes[k]["talk"] for k in scene_of_shot])
        n_tok = np.where(speaks, np.maximum(1, rng.poisson(cfg.tokens_per_second * dur * 0.8)), 0)
        token_shot = np.repeat(np.arange(S), n_tok)
        T = int(n_tok.sum())
        k_in = np.arange(T) - np.repeat(np.cumsum(n_tok) - n_tok, n_tok)
        n_of = n_tok[token_shot]
        st, d = shots[token_shot, 0], shots[token_shot, 1] - shots[token_shot, 0]
        t0 = st + d * (0.05 + 0.9 * k_in / np.maximum(n_of, 1))
        t1 = st + d * (0.05 + 0.9 * (k_in + 0.8) / np.maximum(n_of, 1))
        last = k_in == n_of - 1
        spill = last & (rng.random(T) < 0.15)
        t1 = np.where(spill, t1 + rng.uniform(0, 0.6, T), t1)
        spans = np.round(np.stack([t0, np.minimum(t1, shots[-1, 1])], 1), 3)
        words = rng.choice(cfg.vocab_size, size=T, p=self.word_p)
        return token_shot, spans, words

    def _features(
        self, rng: np.random.Generator, facts: dict[str, Any], scenes: list[dict[str, Any]],
        scene_of_shot: np.ndarray, *, size: np.ndarray, motion: np.ndarray, drift: np.ndarray,
        progress: np.ndarray, setup: np.ndarray, audio_setup: np.ndarray, token_shot: np.ndarray,
        words: np.ndarray,
    ) -> dict[str, np.ndarray]:  # fmt: skip
        """Each modality's features ([S, D]; language [T, D], a row per token): content latent, shot
        factors and nuisance through the modality's rotation, plus the prototype of the shot's setup (video:
        `setup`, audio and language: `audio_setup`), a per-movie gain and offset, and noise."""
        cfg, S = self.cfg, len(scene_of_shot)
        out: dict[str, np.ndarray] = {}
        for m in MODALITIES:
            g = GAINS[m]
            mlat = self.movie_latent(facts, g)
            slat = np.stack([self.scene_latent(s, g) for s in scenes])
            h = mlat[None] + slat[scene_of_shot]  # [S, L]
            shot_u = (
                g["shot_size"] * self.emb["shot_size"][size]
                + g["camera_motion"] * self.emb["camera_motion"][motion]
                + g["drift"] * drift
                + g["progress"] * (progress[:, None] - 0.5) * 2 * self.emb["progress"][0]
            )
            rows = token_shot if m == "text" else np.arange(S)
            z_m = setup if m == "video" else audio_setup
            n = len(rows)
            nuis = cfg.nuisance_scale * rng.standard_normal((n, cfg.nuisance_rank)).astype(np.float32)
            block = np.concatenate(
                [cfg.content_scale * h[rows], cfg.shot_signal * shot_u[rows], nuis], axis=1
            )
            Q = self.rotation[m]
            gain = np.exp(cfg.movie_gain * rng.standard_normal())
            offset = cfg.movie_offset * rng.standard_normal(Q.shape[0]).astype(np.float32)
            x = gain * (block @ Q[:, : block.shape[1]].T + self.prototypes[m][z_m[rows]]) + offset
            x += cfg.shot_noise * rng.standard_normal(x.shape).astype(np.float32)
            if m == "text":
                x += self.words[words]
            out[m] = x.astype(np.float32)
        return out

    def description(
        self, rng: np.random.Generator, facts: dict[str, Any], scene: dict[str, Any], setups: np.ndarray
    ) -> np.ndarray:
        """A text-token sequence describing one scene (audio-description-like, no movie style): each token
        carries the scene's content latent (text gains) and the text prototype of one of the scene's (video)
        setups -- a description says what is seen."""
        cfg = self.cfg
        g = GAINS["text"]
        sc = {**scene, "noise": np.zeros(cfg.latent_dim)}
        h = self.movie_latent(facts, g) + self.scene_latent(sc, g)
        n = int(rng.integers(cfg.description_tokens[0], cfg.description_tokens[1] + 1))
        block = np.zeros((n, cfg.latent_dim + cfg.shot_latent_dim + cfg.nuisance_rank), np.float32)
        block[:, : cfg.latent_dim] = cfg.content_scale * h[None]
        block[:, -cfg.nuisance_rank :] = cfg.nuisance_scale * rng.standard_normal((n, cfg.nuisance_rank))
        Q = self.rotation["text"]
        x = block @ Q[:, : block.shape[1]].T + cfg.shot_noise * rng.standard_normal((n, cfg.text_dim))
        x += self.prototypes["text"][rng.choice(setups, size=n)]
        x += self.words[rng.choice(cfg.vocab_size, size=n, p=self.word_p)]
        return x.astype(np.float32)
