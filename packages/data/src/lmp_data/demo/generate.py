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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmp_data.batch import MODALITIES

from .config import GENERATOR_VERSION, DemoConfig

CLASSES: dict[str, list[str]] = {
    "relationship": ["friend", "ex_boyfriend_ex_girlfriend", "husband_wife", "boyfriend_girlfriend"],
    "way_speaking": ["explains", "confronts", "discuss", "teaches", "threatens"],
    "scene": ["office", "airport", "school", "hotel", "prison", "restaurant"],
    "genre": ["Comedy", "Action-Crime-Adventure", "Romance", "Thriller-Horror"],
    "year": [str(1930 + 10 * k) for k in range(9)],
}
"""LVU class names (ids are list positions); director / writer names are drawn per world (`nm...`)."""
N_LVU_PEOPLE = 10
SHOT_SIZES = ["extreme_wide", "wide", "medium", "close_up", "extreme_close_up"]
CAMERA_MOTIONS = ["static", "pan", "tilt", "handheld"]

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

# genre-dependent priors (rows: genre id), mixed with uniform by `label_coupling`
WAY_PRIOR = np.array(
    [[3, 1, 4, 2, 0.5], [2, 4, 2, 1, 3], [3, 2, 4, 1, 0.5], [2, 3, 2, 0.5, 4]], dtype=float
)  # explains confronts discuss teaches threatens
REL_PRIOR = np.array([[4, 2, 2, 2], [4, 1, 2, 1], [1, 3, 3, 4], [3, 1, 3, 2]], dtype=float)
MOTION_PRIOR = np.array([[4, 2, 1, 1], [1, 3, 1, 4], [4, 2, 2, 1], [2, 2, 1, 4]], dtype=float)
IMDB_GENRES = {
    0: (["Comedy"], ["Family", "Musical", "Drama"]),
    1: (["Action", "Crime", "Adventure"], ["Drama", "Sci-Fi"]),
    2: (["Romance"], ["Drama", "Comedy", "Musical"]),
    3: (["Thriller", "Horror"], ["Mystery", "Drama", "Sci-Fi"]),
}


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


class World:
    """The per-seed constants: setups and their grammars, factor embeddings, rotations, vocabulary, people."""

    def __init__(self, cfg: DemoConfig, rng: np.random.Generator):
        self.cfg = cfg
        L, Ls, Z = cfg.latent_dim, cfg.shot_latent_dim, cfg.n_setups
        n_people = N_LVU_PEOPLE + cfg.extra_people
        self.emb = {
            "genre": _unit(rng.standard_normal((4, L))),
            "writer": _unit(rng.standard_normal((n_people, L))),
            "year": _ordinal(rng, 9, L),
            "quality": _unit(rng.standard_normal((1, L))),
            "popularity": _unit(rng.standard_normal((1, L))),
            "relationship": _unit(rng.standard_normal((4, L))),
            "scene": _unit(rng.standard_normal((6, L))),
            "shot_size": _ordinal(rng, 5, Ls),
            "camera_motion": _unit(rng.standard_normal((4, Ls))),
            "progress": _unit(rng.standard_normal((1, Ls))),
        }
        self.rotation = {m: _rotation(rng, d) for m, d in cfg.dims.items()}
        # setups: one prototype per modality (a direction of norm setup_scale in the full feature space)
        self.prototypes = {
            m: cfg.setup_scale * _unit(rng.standard_normal((Z, d))) for m, d in cfg.dims.items()
        }
        # editing grammar per director: `director_perms` derangements of the setups
        self.director_perm = np.stack(
            [np.stack([_derangement(rng, Z) for _ in range(cfg.director_perms)]) for _ in range(n_people)]
        )  # [people, R, Z]
        # cross-modal mapping per way of speaking: video setup -> audio setup
        self.way_perm = np.stack([_derangement(rng, Z) for _ in range(len(CLASSES["way_speaking"]))])
        self.words = cfg.word_noise * rng.standard_normal((cfg.vocab_size, cfg.text_dim)).astype(np.float32)
        zipf = 1.0 / np.arange(1, cfg.vocab_size + 1) ** 1.1
        self.word_p = zipf / zipf.sum()
        # people: LVU directors/writers are ids 0..9; writer 0 is unknown ("\N"), as in LVU's writer task
        ids = rng.choice(np.arange(100_000, 9_999_999), size=2 * n_people, replace=False)
        self.director_names = [f"nm{i:07d}" for i in ids[:n_people]]
        self.writer_names = ["\\N"] + [f"nm{i:07d}" for i in ids[n_people + 1 :]]
        self.director_genre = rng.dirichlet(np.full(4, 0.6), size=n_people)
        self.director_decade = rng.integers(0, 9, size=n_people)
        self.director_decade[:N_LVU_PEOPLE] = rng.permutation(np.arange(N_LVU_PEOPLE) % 9)  # all decades
        self.director_writer = rng.integers(0, N_LVU_PEOPLE, size=n_people)
        extra = rng.integers(N_LVU_PEOPLE, n_people, size=n_people) if cfg.extra_people else None
        if extra is not None:  # pretraining-only directors mostly work with pretraining-only writers
            self.director_writer[N_LVU_PEOPLE:] = extra[N_LVU_PEOPLE:]
        self.n_people = n_people

    # ----- the order and agreement carriers -----
    def transition_matrix(self, director: int, genre: int) -> np.ndarray:
        """`T = p_g I + (1 - p_g) (w mean_r Perm_{d,r} + (1 - w) U)`: doubly stochastic, rows = from."""
        cfg, Z = self.cfg, self.cfg.n_setups
        grammar = np.zeros((Z, Z))
        for perm in self.director_perm[director]:
            grammar[np.arange(Z), perm] += 1.0 / len(self.director_perm[director])
        w, p = cfg.grammar_weight, cfg.genre_stay[genre]
        return p * np.eye(Z) + (1 - p) * (w * grammar + (1 - w) / Z)

    def pairing_matrix(self, way: int) -> np.ndarray:
        """P(audio setup | video setup) for way of speaking `way`: `a sigma_c + (1 - a) U` (rows = video)."""
        Z, a = self.cfg.n_setups, self.cfg.agree_prob
        m = np.full((Z, Z), (1 - a) / Z)
        m[np.arange(Z), self.way_perm[way]] += a
        return m

    # ----- movies -----
    def movie_facts(self, rng: np.random.Generator, lvu_only: bool) -> dict[str, Any]:
        """Draw one movie's factors (LVU people only for held-out evaluation movies)."""
        k = self.cfg.label_coupling
        n = N_LVU_PEOPLE if lvu_only else self.n_people
        d = int(rng.integers(0, n))
        w = int(self.director_writer[d]) if rng.random() < 0.7 * k else int(rng.integers(0, n))
        genre = int(rng.choice(4, p=k * self.director_genre[d] + (1 - k) / 4))
        near = int(np.clip(self.director_decade[d] + rng.integers(-1, 2), 0, 8))
        year = near if rng.random() < 0.7 * k else int(rng.integers(0, 9))
        return dict(
            genre=genre,
            director=d,
            writer=w,
            year=year,
            quality=float(rng.standard_normal()),
            popularity=float(0.25 * k * (year - 4) / 4 + rng.standard_normal()),
            noise=rng.standard_normal(self.cfg.latent_dim)
            * self.cfg.latent_movie_noise
            / np.sqrt(self.cfg.latent_dim),
            main_relationship=int(rng.choice(4, p=_prior(REL_PRIOR[genre], k))),
            places=rng.choice(6, size=int(rng.integers(2, 4)), replace=False),
            motion_prior=_norm(MOTION_PRIOR[genre]),
        )

    def movie_latent(self, f: dict[str, Any], gains: dict[str, float] | None) -> np.ndarray:
        g = gains or {}
        e = self.emb
        v = (
            g.get("genre", 1) * e["genre"][f["genre"]]
            + g.get("writer", 1) * e["writer"][f["writer"]]
            + g.get("year", 1) * e["year"][f["year"]]
            + g.get("quality", 1) * f["quality"] * e["quality"][0]
            + g.get("popularity", 1) * f["popularity"] * e["popularity"][0]
            + g.get("movie_noise", 1) * f["noise"]
        )
        return v.astype(np.float32)

    def scene_facts(self, rng: np.random.Generator, f: dict[str, Any]) -> dict[str, Any]:
        k = self.cfg.label_coupling
        rel = (
            f["main_relationship"]
            if rng.random() < 0.6
            else int(rng.choice(4, p=_prior(REL_PRIOR[f["genre"]], k)))
        )
        place = int(rng.choice(f["places"])) if rng.random() < 0.8 else int(rng.integers(0, 6))
        sf = self.cfg.speech_fraction
        return dict(
            relationship=int(rel),
            way_speaking=int(rng.choice(5, p=_prior(WAY_PRIOR[f["genre"]], k))),
            scene=place,
            noise=rng.standard_normal(self.cfg.latent_dim)
            * self.cfg.latent_scene_noise
            / np.sqrt(self.cfg.latent_dim),
            motion=int(rng.choice(4, p=f["motion_prior"])),
            talk=float(rng.beta(4 * sf, 4 * (1 - sf) + 1e-3)) if sf < 1 else 1.0,
        )

    def scene_latent(self, s: dict[str, Any], gains: dict[str, float] | None) -> np.ndarray:
        g = gains or {}
        e = self.emb
        v = (
            g.get("relationship", 1) * e["relationship"][s["relationship"]]
            + g.get("scene", 1) * e["scene"][s["scene"]]
            + g.get("scene_noise", 1) * s["noise"]
        )
        return v.astype(np.float32)

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

        # shots: log-normal durations (median 3 s), contiguous
        lo, hi = cfg.shot_seconds
        dur = np.clip(np.exp(rng.normal(np.log(3.0), 0.6, S)), lo, hi)
        ends = np.cumsum(dur)
        shots = np.stack([ends - dur, ends], 1)
        shots = np.round(shots, 3)  # millisecond times, as an edit decision list would have
        shots[1:, 0] = shots[:-1, 1]

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

        # audio setup: the scene's way of speaking maps the video setup (sigma_c) with prob. agree_prob
        way = np.array([sc["way_speaking"] for sc in scenes])[scene_of_shot]
        agree = rng.random(S) < cfg.agree_prob
        audio_setup = np.where(agree, self.way_perm[way, setup], rng.integers(0, Z, S)).astype(np.int64)
        truth = (
            self.movie_latent(facts, None)[None]
            + np.stack([self.scene_latent(s, None) for s in scenes])[scene_of_shot]
        )

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

    pretrain = []
    for j, seed in enumerate(s_pre.spawn(cfg.pretrain_movies)):
        rng = np.random.default_rng(seed)
        facts = world.movie_facts(rng, lvu_only=False)
        n_shots = int(rng.integers(cfg.shots_per_movie[0], cfg.shots_per_movie[1] + 1))
        lengths = _scene_lengths(rng, cfg.shots_per_scene, n_shots)
        mid = imdb_ids[j]
        pretrain.append(world.render(rng, mid, facts, lengths, {}))
        pretrain[-1].meta = _metadata(world, rng, mid, facts, pretrain[-1].scenes, split="pretrain")

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
    offsets = np.r_[0, np.cumsum([len(t) for t in desc_tokens])].astype(np.int64)
    descriptions = dict(
        clip_id=np.array([c.movie_id for c in clips]),
        offsets=offsets,
        tokens=np.concatenate(desc_tokens).astype(np.float32),
    )
    people = {"director": world.director_names[:N_LVU_PEOPLE], "writer": world.writer_names[:N_LVU_PEOPLE]}
    return Demo(cfg, pretrain, clips, table, descriptions, people, world)


# ----------------------------------------------------------------------------------------------------
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


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _ordinal(rng: np.random.Generator, k: int, dim: int) -> np.ndarray:
    """k unit vectors along a smooth arc (+ a little jitter): neighbouring classes look alike."""
    a, b = _unit(rng.standard_normal((2, dim)))
    t = np.linspace(0, np.pi / 2, k)[:, None]
    return _unit(np.cos(t) * a + np.sin(t) * b + 0.35 * rng.standard_normal((k, dim)))


def _rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def _norm(p: np.ndarray) -> np.ndarray:
    return p / p.sum()


def _prior(weights: np.ndarray, coupling: float) -> np.ndarray:
    """A genre-dependent prior mixed with the uniform one: `coupling` 1 = as given, 0 = independent."""
    return coupling * _norm(weights) + (1 - coupling) / len(weights)


def _derangement(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random permutation of range(n) without fixed points (staying on a setup is only the rhythm's)."""
    while True:
        p = rng.permutation(n)
        if n < 2 or not np.any(p == np.arange(n)):
            return p
