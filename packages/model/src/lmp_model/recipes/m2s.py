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

The model is here; its configuration is in `lmp_model.recipes.m2s_config`, the steps' math (similarity,
losses, adjacency, mining) in `lmp_model.recipes.m2s_ops`; their public names are re-exported here.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmp_model.model import LMPOutput
from lmp_model.modules import ContextualEncoder, ModalityEmbedding
from lmp_model.recipes.base import Recipe, check_dims, present_modalities, shot_inputs
from lmp_model.recipes.m2s_config import (  # noqa: F401  (re-exported: the public names of this module)
    SCENE_PAIRS,
    STAGES,
    M2SConfig,
    MiningConfig,
    MovieStageConfig,
    SceneStageConfig,
    ShotStageConfig,
)
from lmp_model.recipes.m2s_ops import (  # noqa: F401  (re-exported)
    binary_entropy,
    max_pool_scenes,
    mine_hidden_pair,
    mine_scene_pairs,
    movie_similarity,
    neighbour_shot_loss,
    padded_scene_adjacency,
    pooled_size,
    scene_adjacency,
    shot_adjacency,
    similar_movies,
)
from lmp_model.recipes.queue import FeatureQueue, queue_info_nce


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


@torch.no_grad()
def mine_movie_pair(model: M2S, movie1: Tensor, movie2: Tensor) -> list[tuple[int, int, float]]:
    """Scene pairs of one similar movie pair (step 3): movie1 [U, D_in], movie2 [V, D_in] base features
    (all shots, no length limit) -> [(first shot in movie1, first shot in movie2, score)]."""
    return mine_hidden_pair(movie_hidden(model, movie1), movie_hidden(model, movie2), model.cfg.mining)
