"""Movies2Scenes' training data: movie pairs (stage "movie") and mined scene pairs (stage "scene").

The window loader cuts k-shot windows; two stages of Movies2Scenes (`lmp_model.recipes.m2s`) train on
something else, built here from the same in-memory store and handed to `lmp-pretrain` in place of the
windows (`M2S.train_data`; the trainer streams them like windows: `len`, `batch(indices, epoch)`):

- `MoviePairs` (stage "movie", paper Sec. 3.1.2): item i of an epoch is one of the run's movies (each in
  turn, in an order drawn per epoch) with a similar movie (label 1, probability `movie.positive_frac`) or
  a dissimilar one (label 0). "Similar" = `similar_movies(movie_similarity(manifest))`: the training
  movies' own metadata (genres, year, director, writer, synopsis; `movie.similarity`), never labels of
  the evaluation clips. A movie longer than `movie.movie_len` shots shows a random crop of that length.
- `mine_pairs` (step 3, supplement 1.1c): over every similar movie pair, E_movie's hidden features of all
  shots, B = 9 x 9 mean windows of their adjacency, greedy non-overlapping scene pairs from the top 50 %
  -> P_scene (a Parquet table, `PAIR_COLUMNS`; `<run dir>/scene_pairs.parquet`).
- `ScenePairs` (stage "scene", `scene.pairs` "mined" / "mixed", Sec. 3.2): item i is a mined pair in a
  random direction (query scene = video/shot_mask, key scene = pair_video/pair_shot_mask); with "mixed"
  a share 1 - `scene.mined_frac` of the items are instead a window cut in halves (split pairs).

Every item is a pure function of (seed, epoch, index), as `ShotWindows`' are, so the micro-step counter
alone restores the data position on --resume. An epoch has as many items as an epoch of windows
(`data.windows_per_epoch` or ceil(shots / k)), so `train.epochs` means the same number of samples in
every recipe. These stages read video / audio only (the paper's are visual); "text" in `m2s.modalities`
is refused for them with one line.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmp_data.files import atomic_write

log = logging.getLogger(__name__)

PAIR_COLUMNS = ("movie_a", "start_a", "movie_b", "start_b", "score")
"""P_scene: scene of `scene_len` shots at `start_a` of movie_a paired with the one at `start_b` of movie_b."""
PAIRS_FILE = "scene_pairs.parquet"
PAIRS_INFO = "scene_pairs.json"


# ------------------------------------------------------------------------------------- movie level
def movie_similarity_of(mem: Any, movie_ids: Sequence[str], movie_cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    """(S [M, M], similar [M, M] bool) of `movie_ids` (in that order) from the store manifest's metadata."""
    import polars as pl

    from lmp_model.recipes.m2s import movie_similarity, similar_movies

    manifest = mem.manifest
    if "movie_id" not in manifest.columns:
        raise ValueError("M2S movie similarity: the store manifest has no movie_id column")
    order = pl.DataFrame({"movie_id": list(movie_ids), "_order": np.arange(len(movie_ids))})
    rows = order.join(manifest, on="movie_id", how="left").sort("_order")
    ids, s = movie_similarity(rows, dict(movie_cfg.similarity), year_scale=movie_cfg.year_scale)
    assert ids == list(movie_ids)
    return s, similar_movies(s, movie_cfg.per_movie)


def _shot_rows(mem: Any, m: int) -> tuple[int, int]:
    return int(mem.shot_offsets[m]), int(mem.shot_offsets[m + 1])


def _features(mem: Any) -> dict[str, np.ndarray]:
    """The per-shot base arrays pairs are cut from (video, and audio when the store has it)."""
    out = {"video": mem.video}
    if mem.audio.shape[1] > 0:
        out["audio"] = mem.audio
    return out


def _gather(mem: Any, spans: Sequence[tuple[int, int, int]], prefix: str = "") -> dict[str, torch.Tensor]:
    """Padded [N, L, D] base features + [N, L] shot_mask of `spans` = (movie index, first shot, length)."""
    feats = _features(mem)
    n, width = len(spans), max([length for _, _, length in spans] + [1])
    mask = np.zeros((n, width), bool)
    rows = np.zeros((n, width), np.int64)
    for i, (m, start, length) in enumerate(spans):
        s0, _ = _shot_rows(mem, m)
        mask[i, :length] = True
        rows[i, :length] = s0 + start + np.arange(length)
    out = {prefix + "shot_mask": torch.from_numpy(mask)}
    for name, arr in feats.items():
        x = np.take(arr, rows.reshape(-1), axis=0).astype(np.float32, copy=False).reshape(n, width, -1)
        x[~mask] = 0.0
        out[prefix + name] = torch.from_numpy(np.ascontiguousarray(x))
    return out


class _Items:
    """What `WindowStream` needs of a dataset (as `lmp_data.ShotWindows`): `len` and `batch(indices, epoch)`;
    item i of epoch e is a pure function of (seed, e, i)."""

    def __init__(self, mem: Any, seed: int, length: int):
        self.mem, self.seed, self.length, self.epoch = mem, int(seed), int(length), 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batch(self, indices: Sequence[int], epoch: int | None = None) -> dict[str, Any]:
        """The batch of `indices` (`__getitems__`), of epoch `epoch` when given (as `ShotWindows.batch`)."""
        if epoch is not None and epoch != self.epoch:
            self.set_epoch(epoch)
        return self.__getitems__(indices)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        raise NotImplementedError  # each kind of pair builds its own batch

    def _rng(self, index: int, salt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index), salt])

    def _perm(self, n: int, salt: int) -> np.ndarray:
        key = (self.epoch, n, salt)
        if getattr(self, "_perm_key", None) != key:
            self._perm_key, self._perm_val = (
                key,
                np.random.default_rng([self.seed, self.epoch, salt]).permutation(n),
            )
        return self._perm_val


class MoviePairs(_Items):
    """Stage "movie": pairs of whole movies with a similar / not-similar label (see the module docstring)."""

    def __init__(
        self,
        mem: Any,
        movie_ids: Sequence[str],
        similar: np.ndarray,
        movie_len: int,
        positive_frac: float = 0.5,
        seed: int = 0,
        length: int | None = None,
    ):
        if len(movie_ids) < 2:
            raise ValueError(f"M2S stage 'movie': needs at least 2 movies, the run has {len(movie_ids)}")
        super().__init__(mem, seed, length or len(movie_ids))
        self.movie_idx = np.array([mem.index[m] for m in movie_ids], np.int64)
        self.similar = np.asarray(similar, bool)
        self.movie_len, self.positive_frac = int(movie_len), float(positive_frac)

    def pair(self, index: int) -> tuple[tuple[int, int, int], tuple[int, int, int], float]:
        """((movie, start, length) of x1, the same of x2, label) of item `index`."""
        n_mov = len(self.movie_idx)
        a = int(self._perm(n_mov, 1)[index % n_mov])
        rng = self._rng(index, 2)
        sims = np.flatnonzero(self.similar[a])
        others = np.flatnonzero(~self.similar[a] & (np.arange(n_mov) != a))
        label = bool(sims.size) and (rng.random() < self.positive_frac or not others.size)
        b = int(rng.choice(sims if label else others))
        return self._crop(a, rng), self._crop(b, rng), float(label)

    def _crop(self, j: int, rng: np.random.Generator) -> tuple[int, int, int]:
        m = int(self.movie_idx[j])
        s0, s1 = _shot_rows(self.mem, m)
        n = s1 - s0
        start = int(rng.integers(0, n - self.movie_len + 1)) if n > self.movie_len else 0
        return m, start, min(n, self.movie_len)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        items = [self.pair(int(i)) for i in indices]
        batch = _gather(self.mem, [x1 for x1, _, _ in items]) | _gather(
            self.mem, [x2 for _, x2, _ in items], "pair_"
        )
        batch["pair_similar"] = torch.tensor([y for _, _, y in items], dtype=torch.float32)
        batch["movie"] = [self.mem.movie_ids[x1[0]] for x1, _, _ in items]
        batch["pair_movie"] = [self.mem.movie_ids[x2[0]] for _, x2, _ in items]
        return batch


class ScenePairs(_Items):
    """Stage "scene", mined / mixed pairs: query scene in video/shot_mask, key scene in pair_* fields."""

    def __init__(
        self,
        mem: Any,
        pairs: Any,
        scene_len: int,
        seed: int = 0,
        length: int | None = None,
        windows: Any = None,
        mined_frac: float = 1.0,
    ):
        if pairs.height == 0 and mined_frac > 0:
            raise ValueError("M2S stage 'scene': no mined scene pairs (no similar movie pairs?)")
        super().__init__(mem, seed, length or max(pairs.height, 1))
        idx = mem.index
        self.a = np.array([idx[m] for m in pairs["movie_a"].to_list()], np.int64)
        self.b = np.array([idx[m] for m in pairs["movie_b"].to_list()], np.int64)
        self.start_a = pairs["start_a"].to_numpy().astype(np.int64)
        self.start_b = pairs["start_b"].to_numpy().astype(np.int64)
        self.scene_len, self.windows, self.mined_frac = int(scene_len), windows, float(mined_frac)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if self.windows is not None:
            self.windows.set_epoch(epoch)

    def _scene(self, m: int, start: int) -> tuple[int, int, int]:
        s0, s1 = _shot_rows(self.mem, m)
        return m, int(start), max(0, min(self.scene_len, s1 - s0 - int(start)))

    def pair(self, index: int) -> tuple[tuple[int, int, int], tuple[int, int, int], bool]:
        """((movie, start, length) of the query scene, the same of the key scene, mined?) of `index`."""
        rng = self._rng(index, 3)
        if self.windows is not None and rng.random() >= self.mined_frac:  # a split window (mixed)
            m, st = (int(x[0]) for x in self.windows.locate([index]))
            k, h = self.windows.k, self.windows.k // 2
            s0, s1 = _shot_rows(self.mem, m)
            valid = min(k, s1 - s0 - st)
            return (m, st, min(h, valid)), (m, st + h, max(0, valid - h)), False
        p = int(self._perm(len(self.a), 4)[index % len(self.a)])
        q, key = self._scene(int(self.a[p]), self.start_a[p]), self._scene(int(self.b[p]), self.start_b[p])
        return (key, q, True) if rng.random() < 0.5 else (q, key, True)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        items = [self.pair(int(i)) for i in indices]
        batch = _gather(self.mem, [q for q, _, _ in items]) | _gather(
            self.mem, [k for _, k, _ in items], "pair_"
        )
        batch["movie"] = [self.mem.movie_ids[q[0]] for q, _, _ in items]
        batch["pair_movie"] = [self.mem.movie_ids[k[0]] for _, k, _ in items]
        batch["mined"] = torch.tensor([m for _, _, m in items])
        return batch


# ------------------------------------------------------------------------------------------- mining
@torch.no_grad()
def mine_pairs(model: Any, mem: Any, movie_ids: Sequence[str], similar: np.ndarray) -> Any:
    """P_scene over every similar movie pair (i < j of `similar`, indices into `movie_ids`): the model's
    E_movie hidden features of all shots of both movies, then `m2s.mine_hidden_pair` (the model's
    `mining` config). Returns a Polars frame with `PAIR_COLUMNS`, pair by pair, best scene pair first."""
    import polars as pl

    from lmp_model.recipes.m2s import mine_hidden_pair, movie_hidden

    cols: dict[str, list] = {c: [] for c in PAIR_COLUMNS}
    hidden: dict[int, torch.Tensor] = {}

    def features(j: int) -> torch.Tensor:
        if j not in hidden:
            m = mem.index[movie_ids[j]]
            s0, s1 = _shot_rows(mem, m)
            x = np.concatenate([_features(mem)[mod][s0:s1] for mod in model.modalities], axis=1)
            hidden[j] = movie_hidden(model, torch.from_numpy(np.asarray(x, np.float32)))
        return hidden[j]

    ii, jj = np.nonzero(np.triu(np.asarray(similar, bool), k=1))
    for i, j in zip(ii.tolist(), jj.tolist()):
        for sa, sb, score in mine_hidden_pair(features(i), features(j), model.cfg.mining):
            cols["movie_a"].append(movie_ids[i])
            cols["start_a"].append(sa)
            cols["movie_b"].append(movie_ids[j])
            cols["start_b"].append(sb)
            cols["score"].append(score)
    schema = {"movie_a": pl.String, "start_a": pl.Int64, "movie_b": pl.String, "start_b": pl.Int64,
              "score": pl.Float64}  # fmt: skip
    return pl.DataFrame(cols, schema=schema)


def read_pairs(path: str | Path, mem: Any, movie_ids: Sequence[str]) -> Any:
    """A P_scene table, checked: its columns, and movies that are the run's (errors name the file)."""
    import polars as pl

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"m2s.scene.pairs_file {p}: no such file")
    df = pl.read_parquet(p)
    missing = [c for c in PAIR_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"m2s.scene.pairs_file {p}: missing column(s) {missing}; expected {PAIR_COLUMNS}")
    known = set(movie_ids)
    unknown = sorted((set(df["movie_a"].to_list()) | set(df["movie_b"].to_list())) - known)
    if unknown:
        raise ValueError(f"m2s.scene.pairs_file {p}: movies not in this run's data: {unknown[:5]}")
    return df


# ------------------------------------------------------------------------------------- the trainer
def train_data(
    model: Any,
    data: Any,
    *,
    run_dir: str | Path,
    is_main: bool = True,
    barrier: Any = None,
    resumed: bool = False,
    **_: Any,
) -> Any:
    """`data` (lmp_model.pretrain.data.TrainData) with the windows this stage trains on (see the module
    docstring). Stage "scene" with mined pairs: `scene.pairs_file`, else the run folder's P_scene, mined
    on rank 0 from the model's current (initial) weights when the run starts fresh and reused on resume."""
    cfg = model.cfg
    stage, pairs_mode = cfg.stage, cfg.scene.pairs
    if stage == "shot" or (stage == "scene" and pairs_mode == "split"):
        return data
    if "text" in model.modalities:
        raise ValueError(
            f"M2S stage {stage!r} (scene.pairs={pairs_mode!r}) reads whole movies and scenes of video/audio "
            "base features; m2s.modalities with 'text' is only supported by stage 'shot' and scene.pairs=split"
        )
    windows = data.windows
    mem, ids, seed, length = windows.mem, list(data.movies), int(windows.seed), len(windows)
    barrier = barrier or (lambda: None)
    if stage == "movie":
        s, similar = movie_similarity_of(mem, ids, cfg.movie)
        n_sim = int(np.triu(similar, 1).sum())
        log.info("M2S movie pairs: %d movies, %d similar pairs (%.1f per movie)", len(ids), n_sim,
                 2 * n_sim / max(len(ids), 1))  # fmt: skip
        items = MoviePairs(mem, ids, similar, cfg.movie.movie_len, cfg.movie.positive_frac, seed, length)
        return dataclasses.replace(data, windows=items)
    path = Path(cfg.scene.pairs_file) if cfg.scene.pairs_file else Path(run_dir) / PAIRS_FILE
    if is_main and not cfg.scene.pairs_file and not (resumed and path.is_file()):
        t0 = time.perf_counter()
        _, similar = movie_similarity_of(mem, ids, cfg.movie)
        pairs = mine_pairs(model, mem, ids, similar)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, pairs.write_parquet)
        info = {
            "movies": len(ids),
            "similar_movie_pairs": int(np.triu(similar, 1).sum()),
            "scene_pairs": pairs.height,
            "mean_score": float(pairs["score"].mean()) if pairs.height else None,
            "mining": dataclasses.asdict(cfg.mining),
            "seconds": round(time.perf_counter() - t0, 2),
        }
        (path.parent / PAIRS_INFO).write_text(json.dumps(info, indent=1))
        log.info("M2S mined %d scene pairs from %d similar movie pairs in %.1f s -> %s", pairs.height,
                 info["similar_movie_pairs"], info["seconds"], path)  # fmt: skip
    barrier()
    pairs = read_pairs(path, mem, ids)
    mixed = pairs_mode == "mixed"
    items = ScenePairs(
        mem,
        pairs,
        cfg.mining.scene_len,
        seed,
        length,
        windows if mixed else None,
        cfg.scene.mined_frac if mixed else 1.0,
    )
    return dataclasses.replace(data, windows=items)
