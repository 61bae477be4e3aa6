"""Movies2Scenes (Chen et al., Sec. 3): movie metadata picks the scene pairs of a MoCo scene encoder.

The paper's four steps on our store (frozen base features per shot stand in for its frames):
1. Shot encoder E_shot (Sec. 3.1.1), stage "shot": an MLP on a shot's base features (the paper's ViT on
   one frame has no place on features), L2-normalised. Query x_t, positive logit
   max(E(x_t).E(x_{t-2}), E(x_t).E(x_{t+2})) (Eq. 1); negatives = every valid shot of the other windows
   of the batch (the paper's "randomly selected negative key shots"); keys come from the same encoder,
   computed online (the supplement: no stale positive keys); tau 0.07 (the paper gives none; MoCo's).
2. Movie similarity S from metadata (`movie_similarity`: genres Jaccard, year closeness, director / writer
   equality, synopsis TF-IDF cosine; weighted mean) and the similar pairs = each movie's `per_movie` = 3
   most similar others (paper: "three most similar movies on average"; `similar_movies`). Co-watch does
   not exist here. Movie encoder (Sec. 3.1.2), stage "movie": E_movie = 2 FC layers of 512 with dropout 0.5
   between, on frozen E_shot features; A = E_movie(x1) E_movie(x2)^T (Eq. 2); B = average pooling of A
   (kernel 16, stride 8); V = max pooling of B (16, 8), flattened; L_output: a linear layer to one logit;
   BCE against "similar" (the paper's cross-entropy on a binary label). Movies are cut or zero-padded to
   `movie_len` = 1024 shots (paper); pooling counts valid shots only (the paper pools the zero padding)
   and a kernel larger than the map is clipped to it.
3. Scene pairs (supplement 3a, 1.1c): for a similar movie pair, B from the hidden layer of E_movie (before
   its last FC) with 9x9 windows, stride 1; entries are visited from the most similar, within the top 50 %,
   and a pair is kept when neither scene overlaps one already kept (`mine_scene_pairs`, `mine_movie_pair`).
   This runs offline between stages, once over all similar movie pairs (it needs whole movies, not window
   batches): `lmp_model.recipes.m2s_data.mine_pairs`, at the start of a scene-stage run from the weights
   it starts from (`train.init_from`: the movie stage's export), kept as `<run dir>/scene_pairs.parquet`
   (the P_scene of the paper; reused on --resume; `scene.pairs_file` supplies one instead).
4. Scene contrastive (Sec. 3.2), stage "scene": MoCo [He et al.] with a transformer scene encoder E_scene
   over the shots' base features plus a [CLS] token (variable length through the padding mask and relative
   position bias, where the paper interpolates ViT position embeddings), an FC head to 128-d, a momentum
   key encoder (m 0.999), a queue of 65536 keys, tau 0.07 (Eq. 3): the supplement's MoCo values. The key
   encoder's momentum update runs at the start of each training forward (MoCo's code), i.e. per
   micro-batch under gradient accumulation. E_scene's [CLS] output (without the FC) is the representation.

Extra batch fields (the window loader does not make them; `lmp_model.recipes.m2s_data` does, and
`M2S.train_data` swaps them in for `lmp-pretrain`'s windows):
- stage "movie": the window batch holds movie x1 (video [P, L, Dv], shot_mask [P, L]: k = movie length),
  plus `pair_video` [P, L', Dv], `pair_shot_mask` [P, L'] (movie x2; `pair_audio` etc. when
  `modalities` has them) and `pair_similar` [P] (1: similar movies by S, 0: not). `MoviePairs`: each
  movie of the run in turn with a similar one (probability `movie.positive_frac`) or a dissimilar one.
- stage "scene" with `scene.pairs` "mined" (the paper's, default): the window (k = 9 shots, paper) is
  the query scene q, `pair_video` [N, k', Dv] and `pair_shot_mask` [N, k'] its mined positive key scene
  k0 (`ScenePairs`: a mined pair in a random direction). "mixed": a fraction `scene.mined_frac` of the
  items are mined pairs, the rest split windows (below) in the same pair_* fields: the mined positives
  in addition to the split ones.
  `scene.pairs` "split" needs no extra field: q = the first half of the window, k0 = the second half
  (neighbouring scenes of one movie, no metadata: a fallback for smoke runs, not the paper).
Only the current stage's modules train (the others get requires_grad False); every stage's modules are
in the state_dict, so a stage starts from the previous stage's weights.
Features for probes: v_base, a_base, v_shot (E_shot), v_movie (E_movie hidden), v_scene (E_scene [CLS] of
the window, given to each of its shots).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmp_model.config import EncoderConfig, ProjectionConfig
from lmp_model.model import LMPOutput
from lmp_model.modules import ContextualEncoder, ModalityEmbedding
from lmp_model.recipes.base import Recipe, check_dims, present_modalities, shot_inputs
from lmp_model.recipes.queue import FeatureQueue, queue_info_nce

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


# ------------------------------------------------------------------------------ movie similarity
def movie_similarity(
    manifest: Any,
    weights: Mapping[str, float] | None = None,
    id_column: str = "movie_id",
    year_scale: float = 10.0,
    text_columns: Sequence[str] = ("synopsis",),
    text_embed: Callable[[list[str]], np.ndarray] | None = None,
) -> tuple[list[str], np.ndarray]:
    """Movie-level similarity S from manifest metadata: (movie ids, S [M, M] in [0, 1], diagonal 1).

    `manifest`: a Polars DataFrame, one row per movie (pass only the pretraining split's movies).
    Per column (those of `weights` present in the manifest; default genres, year, director, writer,
    synopsis, weight 1 each): list columns -> Jaccard of the sets; numeric -> exp(-|a - b| / year_scale);
    `text_columns` -> cosine of TF-IDF vectors (scikit-learn) or of `text_embed(texts)` when given;
    other strings -> 1 if equal. A missing value scores 0. S = weighted mean over the columns.
    """
    import polars as pl

    weights = dict(weights or {"genres": 1.0, "year": 1.0, "director": 1.0, "writer": 1.0, "synopsis": 1.0})
    if id_column not in manifest.columns:
        raise ValueError(f"movie_similarity: manifest has no {id_column!r} column")
    ids = [str(x) for x in manifest[id_column].to_list()]
    m = len(ids)
    total, wsum = np.zeros((m, m)), 0.0
    for col, w in weights.items():
        if col not in manifest.columns or w == 0:
            continue
        series = manifest[col]
        values = series.to_list()
        present = np.array([v is not None and v != "" for v in values])
        if isinstance(series.dtype, pl.List):
            sets = [set(v or ()) for v in values]
            sim = np.array(
                [[len(a & b) / len(a | b) if a | b else 0.0 for b in sets] for a in sets]
            )  # fmt: skip
        elif series.dtype.is_numeric():
            x = np.array([float(v) if v is not None else np.nan for v in values])
            sim = np.nan_to_num(np.exp(-np.abs(x[:, None] - x[None, :]) / year_scale))
        elif col in text_columns:
            texts = [str(v) if v else "" for v in values]
            if text_embed is not None:
                emb = np.asarray(text_embed(texts), dtype=np.float64)
            else:
                from sklearn.feature_extraction.text import TfidfVectorizer

                emb = TfidfVectorizer().fit_transform(texts).toarray() if any(texts) else np.zeros((m, 1))
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            sim = np.clip(emb @ emb.T, 0.0, 1.0)
        else:
            s = np.array([str(v) for v in values], dtype=object)
            sim = (s[:, None] == s[None, :]).astype(np.float64)
        sim = sim * (present[:, None] & present[None, :])
        total += w * sim
        wsum += w
    if wsum == 0:
        raise ValueError(f"movie_similarity: none of the columns {list(weights)} is in the manifest")
    s = total / wsum
    np.fill_diagonal(s, 1.0)
    return ids, s


def similar_movies(similarity: np.ndarray, per_movie: int = 3) -> np.ndarray:
    """[M, M] bool: i ~ j when j is among i's `per_movie` most similar others or i among j's (symmetric)."""
    s = np.array(similarity, dtype=np.float64)
    m = s.shape[0]
    np.fill_diagonal(s, -np.inf)
    out = np.zeros((m, m), dtype=bool)
    top = np.argsort(-s, axis=1, kind="stable")[:, : min(per_movie, max(m - 1, 0))]
    out[np.repeat(np.arange(m), top.shape[1]), top.ravel()] = True
    return out | out.T


# ------------------------------------------------------------------------------------ shot stage
def neighbour_shot_loss(
    z: Tensor, valid: Tensor, offset: int = 2, temperature: float = 0.07
) -> tuple[Tensor, Tensor]:
    """Eq. 1: each shot t with a valid neighbour t -/+ offset in its window; positive logit = the larger
    of its similarities to the two neighbours; negatives = all valid shots of the other windows.

    z [N, k, D] (normalised here), valid [N, k]. Returns (mean loss, mean ln(1 + negatives))."""
    n, k, _ = z.shape
    z = F.normalize(z.float(), dim=-1)
    prev = torch.full((n, k), float("-inf"), device=z.device)  # E(x_t) . E(x_{t-offset})
    nxt = prev.clone()  # E(x_t) . E(x_{t+offset})
    if offset < k:
        prev[:, offset:] = (
            (z[:, offset:] * z[:, :-offset]).sum(-1).masked_fill(~valid[:, :-offset], float("-inf"))
        )
        nxt[:, :-offset] = (
            (z[:, :-offset] * z[:, offset:]).sum(-1).masked_fill(~valid[:, offset:], float("-inf"))
        )
    sims = (prev, nxt)
    pos = torch.maximum(sims[0], sims[1])  # [N, k]
    query = valid & torch.isfinite(pos)
    if not query.any():
        zero = z.sum() * 0.0
        return zero, zero.detach()
    window = torch.arange(n, device=z.device)[:, None].expand(n, k)
    qz, qw = z[query], window[query]
    flat_z, flat_valid, flat_w = z.reshape(n * k, -1), valid.reshape(-1), window.reshape(-1)
    neg_valid = flat_valid[None, :] & (flat_w[None, :] != qw[:, None])
    neg = (qz @ flat_z.T).masked_fill(~neg_valid, float("-inf"))
    logits = torch.cat([pos[query][:, None], neg], dim=1) / temperature
    loss = -torch.log_softmax(logits, dim=1)[:, 0].mean()
    chance = torch.log1p(neg_valid.sum(1).float()).mean()
    return loss, chance.detach()


# ----------------------------------------------------------------------------------- movie stage
def shot_adjacency(e1: Tensor, e2: Tensor) -> Tensor:
    """Eq. 2: A = E_movie(x1) . E_movie(x2)^T; e1 [P, u, d], e2 [P, v, d] -> [P, u, v]."""
    return e1 @ e2.transpose(-1, -2)


def scene_adjacency(
    a: Tensor, mask1: Tensor, mask2: Tensor, kernel: int, stride: int
) -> tuple[Tensor, Tensor]:
    """B: mean of A over each kernel x kernel window of valid shot pairs (stride `stride`).

    a [P, u, v], mask1 [P, u], mask2 [P, v] -> (B [P, m, n], valid [P, m, n]: window holds a valid pair).
    A kernel larger than a side is clipped to it."""
    kh, kw = min(kernel, a.shape[-2]), min(kernel, a.shape[-1])
    pair = (mask1[:, :, None] & mask2[:, None, :]).to(a.dtype)
    total = F.avg_pool2d((a * pair).unsqueeze(1), (kh, kw), stride).squeeze(1)
    count = F.avg_pool2d(pair.unsqueeze(1), (kh, kw), stride).squeeze(1)
    valid = count > 0
    return torch.where(valid, total / count.clamp(min=1e-12), torch.zeros_like(total)), valid


def padded_scene_adjacency(
    a: Tensor, mask1: Tensor, mask2: Tensor, length: int, kernel: int, stride: int
) -> tuple[Tensor, Tensor]:
    """`scene_adjacency` of `a` [P, u, v] zero-padded (masks False) to [P, length, length], computed on the
    part of the padded map that windows starting on a real row / column read; the windows that start in
    the padding are B = 0, not valid, as `scene_adjacency` on the whole padded map gives them."""
    k = min(kernel, length)
    side = (length - k) // stride + 1  # windows per side of the whole padded map

    def cover(n: int) -> tuple[int, int]:  # (rows to materialise, windows that start on a real row)
        windows = min(side, max(0, n - 1) // stride + 1)
        return min(length, (windows - 1) * stride + k), windows

    (r1, w1), (r2, w2) = cover(a.shape[1]), cover(a.shape[2])
    a = F.pad(a[:, :r1, :r2], (0, max(0, r2 - a.shape[2]), 0, max(0, r1 - a.shape[1])))
    mask1 = F.pad(mask1[:, :r1], (0, max(0, r1 - mask1.shape[1])), value=False)
    mask2 = F.pad(mask2[:, :r2], (0, max(0, r2 - mask2.shape[1])), value=False)
    b, valid = scene_adjacency(a, mask1, mask2, k, stride)
    b, valid = b[:, :w1, :w2], valid[:, :w1, :w2]
    return F.pad(b, (0, side - w2, 0, side - w1)), F.pad(valid, (0, side - w2, 0, side - w1), value=False)


def max_pool_scenes(b: Tensor, valid: Tensor, kernel: int, stride: int) -> Tensor:
    """V: max of B over each kernel x kernel window (valid entries only; an all-invalid window -> 0),
    flattened: [P, m, n] -> [P, m' * n']."""
    kh, kw = min(kernel, b.shape[-2]), min(kernel, b.shape[-1])
    v = F.max_pool2d(b.masked_fill(~valid, float("-inf")).unsqueeze(1), (kh, kw), stride).squeeze(1)
    v = torch.where(torch.isfinite(v), v, torch.zeros_like(v))
    return v.flatten(1)


def pooled_size(length: int, kernel: int, stride: int) -> int:
    """Side of a pooled map: (length - min(kernel, length)) // stride + 1."""
    return (length - min(kernel, length)) // stride + 1


def binary_entropy(labels: Tensor) -> Tensor:
    """BCE of predicting the batch's positive rate p for every pair: -p ln p - (1-p) ln(1-p)."""
    p = labels.float().mean().clamp(1e-12, 1 - 1e-12)
    return -(p * p.log() + (1 - p) * (1 - p).log()).detach()


# ---------------------------------------------------------------------------------- pair mining
def mine_scene_pairs(
    b: np.ndarray | Tensor,
    top_frac: float = 0.5,
    scene_len: int = 9,
    stride: int = 1,
    non_overlapping: bool = True,
) -> list[tuple[int, int, float]]:
    """Greedy scene pairs from a scene adjacency B [m, n] (supplement 3a).

    Entries are visited from the highest; only the top `top_frac` of all m * n entries are considered. An
    entry (i, j) is kept unless scene i of movie 1 or scene j of movie 2 is already used: with
    `non_overlapping`, "used" means its shots [i*stride, i*stride + scene_len) overlap a kept scene's;
    otherwise the same index. Returns [(i, j, B[i, j])] in the order kept.

    Computed as repeated argmax over the entries still available (rows and columns of kept scenes
    blocked), which keeps exactly what the visit in sorted order keeps (ties: the lower flat index first,
    like a stable sort) in O(kept * m * n) instead of a Python loop over half of all entries."""
    arr = b.detach().cpu().double().numpy() if isinstance(b, Tensor) else np.asarray(b, dtype=np.float64)
    m, n = arr.shape
    if m == 0 or n == 0:
        return []
    order = np.argsort(-arr, axis=None, kind="stable")[: math.ceil(top_frac * m * n)]
    reach = (scene_len + stride - 1) // stride - 1 if non_overlapping else 0  # index distance that overlaps
    cur = np.full(m * n, -np.inf)
    cur[order] = arr.reshape(-1)[order]
    cur = cur.reshape(m, n)
    kept = []
    while True:
        flat = int(np.argmax(cur))
        i, j = divmod(flat, n)
        if not cur[i, j] > -np.inf:
            break
        kept.append((i, j, float(arr[i, j])))
        cur[max(0, i - reach) : i + reach + 1, :] = -np.inf
        cur[:, max(0, j - reach) : j + reach + 1] = -np.inf
    return kept


# ------------------------------------------------------------------------------------ the model
class SceneEncoder(nn.Module):
    """E_scene: projected shot features + a learned [CLS] token through a transformer; returns [CLS]."""

    def __init__(self, dim_in: int, cfg: SceneStageConfig, max_shots: int):
        super().__init__()
        d = cfg.encoder.d
        self.embed = ModalityEmbedding(dim_in, d, max_shots, cfg.projection)
        self.cls = nn.Parameter(torch.randn(d) * cfg.projection.position_std)
        self.encoder = ContextualEncoder(d, cfg.encoder)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        h, _ = self.embed(x)
        h = torch.cat([self.cls.to(h.dtype).expand(h.shape[0], 1, -1), h], dim=1)
        ok = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)
        return self.encoder(h, ok)[:, 0]


class M2S(Recipe):
    """Movies2Scenes. Modules: `shot_encoder` (E_shot), `movie_encoder` (E_movie), `output` (L_output),
    `scene_q` / `scene_k` (query encoder E_scene + FC, and its momentum copy), `queue` (MoCo keys)."""

    name = "m2s"
    features = {
        "v_base": "shot_mask",
        "a_base": "shot_mask",
        "v_shot": "shot_mask",
        "v_movie": "shot_mask",
        "v_scene": "shot_mask",
    }

    def __init__(self, cfg: M2SConfig, dims: Mapping[str, int]):
        super().__init__()
        self.cfg = cfg
        self.modalities, self.missing = present_modalities(dims, tuple(cfg.modalities), "M2S")
        self.dims = check_dims(dims, self.modalities, "M2S")
        dim_in = sum(self.dims[m] for m in self.modalities)
        s, mv, sc = cfg.shot, cfg.movie, cfg.scene
        self.shot_encoder = nn.Sequential(nn.Linear(dim_in, s.hidden), nn.GELU(), nn.Linear(s.hidden, s.dim))
        self.movie_encoder = nn.Sequential(
            nn.Linear(s.dim, mv.hidden), nn.ReLU(), nn.Dropout(mv.dropout), nn.Linear(mv.hidden, mv.hidden)
        )
        side = pooled_size(
            pooled_size(mv.movie_len, mv.avg_kernel, mv.avg_stride), mv.max_kernel, mv.max_stride
        )
        self.output = nn.Linear(side * side, 1)
        self.scene_q = nn.ModuleDict(
            {"encoder": SceneEncoder(dim_in, sc, cfg.max_shots), "fc": nn.Linear(sc.encoder.d, sc.dim)}
        )
        self.scene_k = copy.deepcopy(self.scene_q)
        self.queue = FeatureQueue(sc.queue_size, sc.dim)
        train = {"shot": self.shot_encoder, "movie": nn.ModuleList([self.movie_encoder, self.output])}
        train["scene"] = self.scene_q
        for p in self.parameters():
            p.requires_grad_(False)
        for p in train[cfg.stage].parameters():
            p.requires_grad_(True)
        self.scene_q["encoder"].embed.mask_token.requires_grad_(False)  # scenes are never masked

    # ----------------------------------------------------------------------------------- internals
    def _shots(self, batch: Mapping[str, Any], prefix: str = "") -> tuple[Tensor, Tensor]:
        """Concatenated base features per shot [N, k, D_in] (padding zeroed) and shot_mask [N, k]."""
        feats, valid, shot_mask = shot_inputs(batch, self.modalities, self.dims, self.device, "M2S", prefix)
        x = torch.cat([feats[m] * valid[m].unsqueeze(-1).to(feats[m].dtype) for m in self.modalities], -1)
        return x.to(self.output.weight.dtype), shot_mask

    def movie_features(self, shot_feats: Tensor, hidden: bool = False) -> Tensor:
        """E_movie of E_shot features; `hidden` stops before E_movie's last FC (for pair mining)."""
        layers = list(self.movie_encoder)
        return nn.Sequential(*layers[:-1])(shot_feats) if hidden else self.movie_encoder(shot_feats)

    def movie_logit(self, x1: Tensor, m1: Tensor, x2: Tensor, m2: Tensor) -> Tensor:
        """L_output(V) for movie pairs: x [P, L, D_in] base features, m [P, L] -> [P] logits."""
        mv = self.cfg.movie
        x1, m1 = x1[:, : mv.movie_len], m1[:, : mv.movie_len]  # cut to movie_len shots (paper) ...
        x2, m2 = x2[:, : mv.movie_len], m2[:, : mv.movie_len]
        with torch.no_grad():
            s1, s2 = self.shot_encoder(x1), self.shot_encoder(x2)
        a = shot_adjacency(self.movie_encoder(s1), self.movie_encoder(s2))
        # ... and zero-padded to movie_len after the encoders. Padding is masked out of the pooling, so only
        # the rows / columns that windows over real shots read are materialised; windows of padding alone
        # are B = 0, not valid, as on the full movie_len x movie_len map (same result, a fraction of the cost)
        b, valid = padded_scene_adjacency(a, m1, m2, mv.movie_len, mv.avg_kernel, mv.avg_stride)
        return self.output(max_pool_scenes(b, valid, mv.max_kernel, mv.max_stride)).squeeze(-1)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """Key encoder <- m * key + (1 - m) * query (MoCo).

        Under DeepSpeed ZeRO-3 the parameters are partitioned (empty placeholders outside their module's
        forward): both encoders are gathered (`deepspeed.zero.GatheredParameters`), every rank updates
        the whole key encoder alike, and rank 0's result is partitioned again on exit."""
        m = self.cfg.scene.momentum
        keys, queries = list(self.scene_k.parameters()), list(self.scene_q.parameters())
        with contextlib.ExitStack() as stack:
            if any(hasattr(p, "ds_id") for p in keys + queries):  # ZeRO-3
                import deepspeed  # `deepspeed.zero` is an attribute, not an importable module

                gathered = deepspeed.zero.GatheredParameters
                stack.enter_context(gathered(keys, modifier_rank=0))
                stack.enter_context(gathered(queries))  # read only: not written back
            for pk, pq in zip(keys, queries):
                pk.mul_(m).add_(pq.detach().to(pk.dtype), alpha=1.0 - m)

    def _scene_pairs(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x, mask = self._shots(batch)
        if self.cfg.scene.pairs == "split":
            h = x.shape[1] // 2
            xq, mq, xk, mk = x[:, :h], mask[:, :h], x[:, h:], mask[:, h:]
        else:
            missing = [
                f for f in ("pair_shot_mask", *(f"pair_{m}" for m in self.modalities)) if f not in batch
            ]
            if missing:
                raise ValueError(
                    f"M2S stage 'scene' (scene.pairs={self.cfg.scene.pairs!r}): batch lacks {missing}: the key "
                    "scene of each window's mined pair (see lmp_model.recipes.m2s); scene.pairs='split' needs none"
                )
            (xq, mq), (xk, mk) = (x, mask), self._shots(batch, "pair_")
        keep = mq.any(1) & mk.any(1)
        return xq[keep], mq[keep], xk[keep], mk[keep]

    # ------------------------------------------------------------------------------------ training
    def forward(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> LMPOutput:
        """The loss of `cfg.stage` (the recipe draws nothing random: `generator` is unused)."""
        stage = self.cfg.stage
        if stage == "shot":
            x, mask = self._shots(batch)
            loss, chance = neighbour_shot_loss(
                self.shot_encoder(x), mask, self.cfg.shot.offset, self.cfg.shot.temperature
            )
            return LMPOutput(loss, {"shot/nce": loss}, {"shot/nce": chance})
        if stage == "movie":
            if "pair_similar" not in batch:
                raise ValueError(
                    "M2S stage 'movie': batch lacks 'pair_similar' (and pair_video, pair_shot_mask): "
                    "movie pairs with a similar / not similar label (see lmp_model.recipes.m2s)"
                )
            x1, m1 = self._shots(batch)
            x2, m2 = self._shots(batch, "pair_")
            y = torch.as_tensor(batch["pair_similar"], device=x1.device).float()
            logit = self.movie_logit(x1, m1, x2, m2)
            loss = F.binary_cross_entropy_with_logits(logit.float(), y)
            return LMPOutput(loss, {"movie/bce": loss}, {"movie/bce": binary_entropy(y)})
        xq, mq, xk, mk = self._scene_pairs(batch)
        sc = self.cfg.scene
        q = self.scene_q["fc"](self.scene_q["encoder"](xq, mq))
        with torch.no_grad():
            if self.training:
                self.momentum_update()
            k = self.scene_k["fc"](self.scene_k["encoder"](xk, mk))
        loss, chance = queue_info_nce(q, k, self.queue.keys, sc.temperature, self.queue.filled())
        if self.training:
            self.queue.enqueue(F.normalize(k.float(), dim=-1))
        return LMPOutput(loss, {"scene/moco": loss}, {"scene/moco": chance})

    def train_data(self, data: Any, **kw: Any) -> Any:
        """What `lmp-pretrain` trains this stage on: its windows (`data`, lmp_model.pretrain.data's
        TrainData) for stage "shot" and split scene pairs; movie pairs for stage "movie"; mined scene pairs
        for "mined" / "mixed" (mined here on first use). See `lmp_model.recipes.m2s_data.train_data`."""
        from lmp_model.recipes.m2s_data import train_data

        return train_data(self, data, **kw)

    # ------------------------------------------------------------------------------------ features
    def encode(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """v_shot [N,k,dim], v_movie [N,k,hidden], v_scene [N,k,d] (the window's [CLS], per shot),
        v_base / a_base as given, shot_mask."""
        x, mask = self._shots(batch)
        s = mask.unsqueeze(-1).to(x.dtype)
        shot = self.shot_encoder(x)
        scene = self.scene_q["encoder"](x, mask)
        out = {
            "v_shot": shot * s,
            "v_movie": self.movie_features(shot, hidden=True) * s,
            "v_scene": scene[:, None, :].expand(-1, x.shape[1], -1) * s,
            "shot_mask": mask,
        }
        for m, name in (("video", "v_base"), ("audio", "a_base")):
            if m in batch and m in self.dims:
                out[name] = batch[m].to(x.device) * s
        return out


@torch.no_grad()
def movie_hidden(model: M2S, movie: Tensor) -> Tensor:
    """E_movie's hidden features (before its last FC, the supplement's mining space) of one movie's shots:
    [U, D_in] base features -> [U, hidden], in eval mode (no dropout)."""
    was = model.training
    model.eval()
    try:
        x = movie.to(model.device, model.output.weight.dtype)
        return model.movie_features(model.shot_encoder(x), hidden=True)
    finally:
        model.train(was)


def mine_hidden_pair(e1: Tensor, e2: Tensor, mining: MiningConfig) -> list[tuple[int, int, float]]:
    """Step 3 on two movies' hidden features e1 [U, d], e2 [V, d]: A = e1 e2^T, B = mean over each
    scene_len x scene_len window (stride `mining.stride`), greedy pairs (`mine_scene_pairs`) ->
    [(first shot in movie 1, first shot in movie 2, score)]."""
    a = shot_adjacency(e1[None].float(), e2[None].float())
    ones1 = torch.ones(1, e1.shape[0], dtype=torch.bool, device=a.device)
    ones2 = torch.ones(1, e2.shape[0], dtype=torch.bool, device=a.device)
    b, _ = scene_adjacency(a, ones1, ones2, mining.scene_len, mining.stride)
    pairs = mine_scene_pairs(b[0], mining.top_frac, mining.scene_len, mining.stride, mining.non_overlapping)
    return [(i * mining.stride, j * mining.stride, sc) for i, j, sc in pairs]


@torch.no_grad()
def mine_movie_pair(model: M2S, movie1: Tensor, movie2: Tensor) -> list[tuple[int, int, float]]:
    """Scene pairs of one similar movie pair (step 3): movie1 [U, D_in], movie2 [V, D_in] base features
    (all shots, no length limit) -> [(first shot in movie1, first shot in movie2, score)]."""
    return mine_hidden_pair(movie_hidden(model, movie1), movie_hidden(model, movie2), model.cfg.mining)
