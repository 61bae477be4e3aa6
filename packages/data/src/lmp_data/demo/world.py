"""The demo's world (`lmp_data.demo.generate`): the per-seed constants every movie of one seed shares.

`World` draws the setups and their editing grammars, the factor embeddings, rotations, vocabulary and
people, and each movie's and scene's facts and content latents; rendering a movie from them is
`lmp_data.demo.render`. Also the LVU class names and the genre-dependent priors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import DemoConfig
from .render import MovieRenderer

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


class World(MovieRenderer):
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
