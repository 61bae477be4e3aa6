"""A FIFO queue of negatives (MoCo [He et al. 2020]) and InfoNCE against it, shared by HSSL and M2S.

`FeatureQueue` keeps the last K keys as registered buffers (`keys` [K, D], `ids` [K], `ptr`), so they
are saved and restored with the model's state_dict (checkpoint, resume). Empty slots have id -1 and are
never used as negatives: the queue starts empty instead of MoCo's random vectors, so no loss is computed
against noise. Under torch.distributed the keys of all ranks are gathered before they are enqueued (as
MoCo's `concat_all_gather`), so every rank holds the same queue and rank 0's checkpoint resumes them all.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

EMPTY_ID = -1
"""Id of an empty queue slot (never a negative)."""
UNKNOWN_ID = -2
"""Id of a key whose identity is unknown (a negative for every query, never excluded)."""


def gather_rows(x: Tensor) -> Tensor:
    """Concatenate `x` [n_r, ...] of every rank in rank order (n_r may differ); identity without a group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    world = dist.get_world_size()
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    most = int(max(s.item() for s in sizes))
    pad = x.new_zeros((most - x.shape[0], *x.shape[1:]))
    parts = [x.new_zeros((most, *x.shape[1:])) for _ in range(world)]
    dist.all_gather(parts, torch.cat([x, pad]))
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def shot_ids(batch: dict, shot_mask: Tensor) -> Tensor:
    """[N, k] long identity of every shot: crc32(movie id) * 2^24 + shot index in the movie.

    Uses the batch's `movie` (list[str]) and `start` ([N]); without them every id is `UNKNOWN_ID`.
    Lets a queue leave out a query's own shot (a store smaller than the queue holds it again).
    """
    n, k = shot_mask.shape
    movies, start = batch.get("movie"), batch.get("start")
    if movies is None or start is None or len(movies) != n:
        return torch.full((n, k), UNKNOWN_ID, dtype=torch.long, device=shot_mask.device)
    code = torch.tensor([zlib.crc32(str(m).encode()) for m in movies], dtype=torch.long)
    code = code.to(shot_mask.device)
    start = torch.as_tensor(start, device=shot_mask.device).long()
    return code[:, None] * (1 << 24) + start[:, None] + torch.arange(k, device=shot_mask.device)


class FeatureQueue(nn.Module):
    """FIFO queue of `size` keys of width `dim`, with an id per key (-1: empty slot)."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"FeatureQueue: size and dim must be >= 1, got {size}, {dim}")
        self.size, self.dim = size, dim
        self.register_buffer("keys", torch.zeros(size, dim))
        self.register_buffer("ids", torch.full((size,), EMPTY_ID, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def filled(self) -> Tensor:
        """[K] bool: slots that hold a key."""
        return self.ids != EMPTY_ID

    @torch.no_grad()
    def enqueue(self, keys: Tensor, ids: Tensor | None = None, gather: bool = True) -> None:
        """Write `keys` [n, dim] (detached) at the pointer, oldest first out; n > K keeps the last K.

        With `gather` the keys of every rank are enqueued (same order on all ranks)."""
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"FeatureQueue.enqueue: expected keys [n, {self.dim}], got {tuple(keys.shape)}")
        if ids is None:
            ids = torch.full((keys.shape[0],), UNKNOWN_ID, dtype=torch.long, device=keys.device)
        keys, ids = keys.detach(), ids.to(keys.device).long()
        if gather:
            keys, ids = gather_rows(keys), gather_rows(ids)
        n = keys.shape[0]
        if n == 0:
            return
        if n > self.size:
            keys, ids, n = keys[-self.size :], ids[-self.size :], self.size
        p = int(self.ptr)
        idx = (torch.arange(n, device=self.keys.device) + p) % self.size
        self.keys[idx] = keys.to(self.keys.dtype)
        self.ids[idx] = ids
        self.ptr.fill_((p + n) % self.size)


def queue_info_nce(
    query: Tensor,
    positive: Tensor,
    negatives: Tensor,
    temperature: float,
    neg_valid: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """InfoNCE of each query against its positive and a shared set of negatives (HSSL Eq. 1, M2S Eq. 3).

    query, positive [W, D]; negatives [K, D]; all L2-normalised here. neg_valid [W, K] or [K] bool says
    which negatives count for each query (empty slots, the query's own shot). Returns (loss, chance):
    loss = mean_w -log exp(q.k+/tau) / (exp(q.k+/tau) + sum_valid exp(q.p/tau)), chance = mean_w
    ln(1 + valid negatives of w), the loss of a model that scores all candidates alike. W = 0 gives
    zeros (the loss stays connected to the graph).
    """
    if query.shape != positive.shape or query.dim() != 2 or negatives.dim() != 2:
        raise ValueError(
            f"queue_info_nce: expected query, positive [W, D] and negatives [K, D], got "
            f"{tuple(query.shape)}, {tuple(positive.shape)}, {tuple(negatives.shape)}"
        )
    if query.shape[0] == 0:
        zero = (query.sum() + positive.sum()).float() * 0.0
        return zero, zero.detach()
    q = F.normalize(query.float(), dim=-1)
    k = F.normalize(positive.float(), dim=-1)
    p = F.normalize(negatives.float(), dim=-1)
    pos = (q * k).sum(-1, keepdim=True)  # [W, 1]
    neg = q @ p.T  # [W, K]
    if neg_valid is None:
        neg_valid = torch.ones(neg.shape, dtype=torch.bool, device=neg.device)
    neg_valid = neg_valid.expand_as(neg)
    neg = neg.masked_fill(~neg_valid, float("-inf"))
    logits = torch.cat([pos, neg], dim=1) / temperature
    loss = -torch.log_softmax(logits, dim=1)[:, 0].mean()
    chance = torch.log1p(neg_valid.sum(1).float()).mean()
    return loss, chance.detach()


def l2_prediction_loss(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """HSSL's L2 variant: mean ||pred - target||^2 of the L2-normalised vectors (= 2 - 2 cos).

    Returns (loss, chance), chance = the loss of predicting the normalised mean target of the set for
    every token (what a model that ignores the context can reach). W = 0 gives zeros.
    """
    if pred.shape[0] == 0:
        zero = (pred.sum() + target.sum()).float() * 0.0
        return zero, zero.detach()
    p = F.normalize(pred.float(), dim=-1)
    t = F.normalize(target.float(), dim=-1)
    loss = (p - t).pow(2).sum(-1).mean()
    mean = F.normalize(t.mean(0, keepdim=True), dim=-1)
    chance = (mean - t).pow(2).sum(-1).mean()
    return loss, chance.detach()


def exclude_same(query_ids: Tensor, queue_ids: Tensor) -> Tensor:
    """[W, K] bool: queue slot j is a valid negative of query w (filled, and not w's own shot)."""
    filled = (queue_ids != EMPTY_ID)[None, :]
    same = (query_ids[:, None] == queue_ids[None, :]) & (query_ids[:, None] >= 0)
    return filled & ~same


__all__: Sequence[str] = (
    "EMPTY_ID",
    "UNKNOWN_ID",
    "FeatureQueue",
    "exclude_same",
    "gather_rows",
    "l2_prediction_loss",
    "queue_info_nce",
    "shot_ids",
)
