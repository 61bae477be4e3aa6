"""The demo benchmark's generative model: seeded, pure numpy, no files.

It stands in for MAD (long unlabeled movies) + LVU (labelled clips) at the level of base features, and is
built so that *long-range multimodal* pretraining can matter (full write-up: docs/demo_benchmark.md).

Latent structure (one "world" per seed, shared by pretraining and evaluation movies)
- Movie factors: genre (4 LVU classes), director and writer (10 LVU classes + `extra_people` that appear
  only in pretraining movies), year (9 decades, an ordinal embedding: neighbouring decades look alike),
  two scalars (quality -> like ratio, popularity -> views) and a movie-specific latent noise. Directors
  prefer genres, a decade and a writer, as in real filmographies.
- Scene factors: relationship (4), way of speaking (5), place (6 = LVU "scene"), plus scene noise. A scene
  is a run of consecutive shots; a movie reuses its main relationship and a few places across scenes.
- Shot factors: shot size (5, a Markov chain that opens wide and tightens), camera motion (4), a
  slowly drifting AR(1) state and the progress through the scene. These give per-shot AVE-style labels
  and the temporal order that shot ordering / next-shot selection rely on.

Each factor class is a unit vector in a `latent_dim` space; a shot's shared latent is
`h = movie part + scene part` (`truth_latent`), and each modality sees it with its own gains `GAINS`.

Features of shot i in modality m (video, audio; language tokens alike, one row per token of the shot):

    x = g_{movie,m} * Q_m [ c*(s_i + alpha) h_{m,i} ;  b*u_{m,i} ;  n_{m,i} ] + o_{movie,m} + eps

- `s_i` in {-1, +1} is a random sign per shot, the SAME for all modalities and tokens of the shot. Averaged
  over a clip it cancels, so a linear probe on time-averaged base features sees only the small unsigned
  share `alpha` (`unsigned_fraction`) of the label signal; cross-modal agreement (x_v x_a^T has s_i^2 = 1)
  and context (h is constant over a scene / movie, so shots agree up to sign) recover it in full.
- `u` shot-level factors (unsigned), `n` a modality-specific low-rank nuisance (large), `eps` isotropic
  per-shot noise, `o` a per-movie modality-specific offset (survives averaging, unrelated to labels),
  `g` a per-movie modality-specific gain (style), `Q_m` a random rotation per modality. Language tokens
  also carry a word-identity vector (Zipf-distributed vocabulary) and exist only in speaking shots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import DemoConfig

MODALITIES = ("video", "audio", "text")

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

MOVIE_FACTORS = ("genre", "director", "writer", "year", "quality", "popularity", "movie_noise")
SCENE_FACTORS = ("relationship", "way_speaking", "scene", "scene_noise")
SHOT_FACTORS = ("shot_size", "camera_motion", "drift", "progress")

GAINS: dict[str, dict[str, float]] = {
    #         genre dir  wri  year qual pop  mnoi rel  way  scene snoi size motion drift prog
    "video": dict(
        zip(
            MOVIE_FACTORS + SCENE_FACTORS + SHOT_FACTORS,
            (1.0, 1.0, 0.5, 1.2, 0.5, 0.6, 1.0, 1.0, 0.5, 1.5, 1.0, 1.5, 1.5, 1.0, 1.0),
        )
    ),  # fmt: skip
    "audio": dict(
        zip(
            MOVIE_FACTORS + SCENE_FACTORS + SHOT_FACTORS,
            (1.0, 0.6, 0.5, 1.0, 0.6, 0.6, 1.0, 0.8, 1.5, 1.0, 1.0, 0.3, 0.5, 1.0, 1.0),
        )
    ),  # fmt: skip
    "text": dict(
        zip(
            MOVIE_FACTORS + SCENE_FACTORS + SHOT_FACTORS,
            (1.0, 0.6, 1.2, 0.6, 1.0, 0.5, 1.0, 1.5, 1.2, 0.6, 1.0, 0.0, 0.0, 0.7, 0.3),
        )
    ),  # fmt: skip
}
"""How strongly each modality carries each factor: video shows places and shot sizes, audio the way of
speaking, language the relationship and the writer. Every label factor is in at least two modalities."""

# genre-dependent priors (rows: genre id) -- movies and scenes are not independent draws
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
    sign: np.ndarray  # [S] int8, the per-shot sign s_i
    truth_latent: np.ndarray  # [S, L] float32, the unsigned, gain-free shared latent h
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


class World:
    """The per-seed constants: factor embeddings, modality rotations, vocabulary, people."""

    def __init__(self, cfg: DemoConfig, rng: np.random.Generator):
        self.cfg = cfg
        L, Ls = cfg.latent_dim, cfg.shot_latent_dim
        n_people = N_LVU_PEOPLE + cfg.extra_people
        self.emb = {
            "genre": _unit(rng.standard_normal((4, L))),
            "director": _unit(rng.standard_normal((n_people, L))),
            "writer": _unit(rng.standard_normal((n_people, L))),
            "year": _ordinal(rng, 9, L),
            "quality": _unit(rng.standard_normal((1, L))),
            "popularity": _unit(rng.standard_normal((1, L))),
            "relationship": _unit(rng.standard_normal((4, L))),
            "way_speaking": _unit(rng.standard_normal((5, L))),
            "scene": _unit(rng.standard_normal((6, L))),
            "shot_size": _ordinal(rng, 5, Ls),
            "camera_motion": _unit(rng.standard_normal((4, Ls))),
            "progress": _unit(rng.standard_normal((1, Ls))),
        }
        self.rotation = {m: _rotation(rng, d) for m, d in cfg.dims.items()}
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

    # ----- movies -----
    def movie_facts(self, rng: np.random.Generator, lvu_only: bool) -> dict[str, Any]:
        """Draw one movie's factors (LVU people only for held-out evaluation movies)."""
        n = N_LVU_PEOPLE if lvu_only else self.n_people
        d = int(rng.integers(0, n))
        w = int(self.director_writer[d]) if rng.random() < 0.7 else int(rng.integers(0, n))
        genre = int(rng.choice(4, p=self.director_genre[d]))
        near = int(np.clip(self.director_decade[d] + rng.integers(-1, 2), 0, 8))
        year = near if rng.random() < 0.7 else int(rng.integers(0, 9))
        return dict(
            genre=genre,
            director=d,
            writer=w,
            year=year,
            quality=float(rng.standard_normal()),
            popularity=float(0.25 * (year - 4) / 4 + rng.standard_normal()),
            noise=rng.standard_normal(self.cfg.latent_dim)
            * self.cfg.latent_movie_noise
            / np.sqrt(self.cfg.latent_dim),
            main_relationship=int(rng.choice(4, p=_norm(REL_PRIOR[genre]))),
            places=rng.choice(6, size=int(rng.integers(2, 4)), replace=False),
            motion_prior=_norm(MOTION_PRIOR[genre]),
        )

    def movie_latent(self, f: dict[str, Any], gains: dict[str, float] | None) -> np.ndarray:
        g = gains or {}
        e = self.emb
        v = (
            g.get("genre", 1) * e["genre"][f["genre"]]
            + g.get("director", 1) * e["director"][f["director"]]
            + g.get("writer", 1) * e["writer"][f["writer"]]
            + g.get("year", 1) * e["year"][f["year"]]
            + g.get("quality", 1) * f["quality"] * e["quality"][0]
            + g.get("popularity", 1) * f["popularity"] * e["popularity"][0]
            + g.get("movie_noise", 1) * f["noise"]
        )
        return v.astype(np.float32)

    def scene_facts(self, rng: np.random.Generator, f: dict[str, Any]) -> dict[str, Any]:
        rel = (
            f["main_relationship"]
            if rng.random() < 0.6
            else int(rng.choice(4, p=_norm(REL_PRIOR[f["genre"]])))
        )
        place = int(rng.choice(f["places"])) if rng.random() < 0.8 else int(rng.integers(0, 6))
        sf = self.cfg.speech_fraction
        return dict(
            relationship=int(rel),
            way_speaking=int(rng.choice(5, p=_norm(WAY_PRIOR[f["genre"]]))),
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
            + g.get("way_speaking", 1) * e["way_speaking"][s["way_speaking"]]
            + g.get("scene", 1) * e["scene"][s["scene"]]
            + g.get("scene_noise", 1) * s["noise"]
        )
        return v.astype(np.float32)

    def render(
        self, rng: np.random.Generator, movie_id: str, facts: dict[str, Any], scene_lengths: list[int],
        meta: dict[str, Any],
    ) -> Movie:  # fmt: skip
        """Generate a movie with the given scene lengths: shots, signs, shot factors, features, tokens."""
        cfg = self.cfg
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

        # shot-level factors: shot size opens wide and tightens (Markov), camera motion per scene style,
        # AR(1) drift reset at scene boundaries
        Ls = cfg.shot_latent_dim
        size = np.empty(S, dtype=np.int64)
        motion = np.empty(S, dtype=np.int64)  # camera motion: the scene's style 60%, else the genre's prior
        drift = np.empty((S, Ls), dtype=np.float32)
        u = rng.random((S, 3))
        z = rng.standard_normal((S, Ls)).astype(np.float32)
        rho = 0.85
        mot_draw = rng.choice(4, size=S, p=facts["motion_prior"])
        scene_motion = np.array([sc["motion"] for sc in scenes])[scene_of_shot]
        for i in range(S):
            if pos[i] == 0:
                size[i] = 0 if u[i, 0] < 0.4 else (1 if u[i, 0] < 0.8 else 2)
                drift[i] = z[i]
            else:
                step = 0 if u[i, 0] < 0.3 else (1 if u[i, 0] < 0.75 else int(np.sign(u[i, 1] - 0.6)))
                size[i] = min(4, max(0, size[i - 1] + step))
                drift[i] = rho * drift[i - 1] + np.sqrt(1 - rho**2) * z[i]

        motion[:] = np.where(u[:, 2] < 0.6, scene_motion, mot_draw)
        sign = np.where(rng.random(S) < 0.5, -1, 1).astype(np.int8)
        mov_truth = self.movie_latent(facts, None)
        truth = mov_truth[None] + np.stack([self.scene_latent(s, None) for s in scenes])[scene_of_shot]

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
            n = len(rows)
            s_eff = (sign[rows].astype(np.float32) + cfg.unsigned_fraction)[:, None]
            nuis = cfg.nuisance_scale * rng.standard_normal((n, cfg.nuisance_rank)).astype(np.float32)
            block = np.concatenate(
                [cfg.signal_scale * s_eff * h[rows], cfg.shot_signal * shot_u[rows], nuis], axis=1
            )
            Q = self.rotation[m]
            gain = np.exp(cfg.movie_gain * rng.standard_normal())
            offset = cfg.movie_offset * rng.standard_normal(Q.shape[0]).astype(np.float32)
            x = gain * (block @ Q[:, : block.shape[1]].T) + offset
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
            sign=sign,
            truth_latent=truth.astype(np.float32),
            shot_size=size,
            camera_motion=motion,
            token_shot=token_shot,
        )

    def description(
        self, rng: np.random.Generator, facts: dict[str, Any], scene: dict[str, Any]
    ) -> np.ndarray:
        """A text-token sequence describing one scene (an audio-description-like sentence, no movie style)."""
        cfg = self.cfg
        g = GAINS["text"]
        sc = {**scene, "noise": np.zeros(cfg.latent_dim)}
        h = self.movie_latent(facts, g) + self.scene_latent(sc, g)
        n = int(rng.integers(cfg.description_tokens[0], cfg.description_tokens[1] + 1))
        s = np.where(rng.random(n) < 0.5, -1.0, 1.0) + cfg.unsigned_fraction
        block = np.zeros((n, cfg.latent_dim + cfg.shot_latent_dim + cfg.nuisance_rank), np.float32)
        block[:, : cfg.latent_dim] = cfg.signal_scale * s[:, None] * h[None]
        block[:, -cfg.nuisance_rank :] = cfg.nuisance_scale * rng.standard_normal((n, cfg.nuisance_rank))
        Q = self.rotation["text"]
        x = block @ Q[:, : block.shape[1]].T + cfg.shot_noise * rng.standard_normal((n, cfg.text_dim))
        x += self.words[rng.choice(cfg.vocab_size, size=n, p=self.word_p)]
        return x.astype(np.float32)


def generate(cfg: DemoConfig) -> Demo:
    """Run the generative model for `cfg` (deterministic in `cfg`, seed included)."""
    root = np.random.SeedSequence([cfg.seed, 0x1E3D])
    s_world, s_names, s_pre, s_eval = root.spawn(4)
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
            clip, main, first_shot = _cut_clip(movie, clip_id, first_scene, k)
            clip.meta = {
                "imdb_id": imdb_id,
                "title": meta["title"],
                "source_movie": imdb_id,
                "clip_start": float(movie.shots[first_shot, 0]),
                "split": str(split_of[j]),
            }
            clips.append(clip)
            table.append(_clip_labels(rng, clip_id, imdb_id, str(split_of[j]), facts, main))
            desc_tokens.append(world.description(rng, facts, {**main}))
    offsets = np.r_[0, np.cumsum([len(t) for t in desc_tokens])].astype(np.int64)
    descriptions = dict(
        clip_id=np.array([c.movie_id for c in clips]),
        offsets=offsets,
        tokens=np.concatenate(desc_tokens).astype(np.float32),
    )
    people = {"director": world.director_names[:N_LVU_PEOPLE], "writer": world.writer_names[:N_LVU_PEOPLE]}
    return Demo(cfg, pretrain, clips, table, descriptions, people)


# ----------------------------------------------------------------------------------------------------
def _cut_clip(movie: Movie, clip_id: str, first_scene: int, k: int) -> tuple[Movie, dict[str, int], int]:
    """Clip = scenes [first_scene, first_scene + k) of `movie`, times re-based to 0; its main scene is the
    one with the most shots (the clip's scene-level labels are that scene's)."""
    sel = np.flatnonzero((movie.scene_of_shot >= first_scene) & (movie.scene_of_shot < first_scene + k))
    a, b = sel[0], sel[-1] + 1
    t0, t1 = movie.shots[a, 0], movie.shots[b - 1, 1]
    tok = np.flatnonzero((movie.token_shot >= a) & (movie.token_shot < b))
    spans = np.round(np.minimum(movie.text_spans[tok], t1) - t0, 3)
    counts = np.bincount(movie.scene_of_shot[a:b] - first_scene, minlength=k)
    main = movie.scenes[first_scene + int(np.argmax(counts))]
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
        sign=movie.sign[a:b],
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
