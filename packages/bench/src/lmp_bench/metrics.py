"""Evaluation metrics of the paper's section 4, on plain arrays (numpy or torch).

- `accuracy`: top-1 accuracy (LVU classification, shot ordering, next shot selection).
- `per_class_accuracy`: the mean over classes of each class's recall (AVE); classes absent from
  the targets are left out of the mean, so declared-but-unused labels (LVU director/writer) do not
  drag it to zero (sklearn's `balanced_accuracy_score`).
- `mse`: mean squared error (LVU user engagement).
- `retrieval_ranks` / `retrieval_metrics`: 1-based rank of each query's ground-truth candidate in a
  similarity matrix, and R@K, median and mean rank from those (scene <-> soundtrack, description ->
  scene). Ties are counted pessimistically (a candidate scoring equal to the ground truth ranks above
  it), so a constant embedding scores the worst rank rather than a lucky first place.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, mean_squared_error


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_pair(pred: np.ndarray, target: np.ndarray, what: str) -> None:
    if pred.shape[0] != target.shape[0]:
        raise ValueError(f"{what}: {pred.shape[0]} predictions for {target.shape[0]} targets")
    if target.shape[0] == 0:
        raise ValueError(f"{what}: no samples to score")


def _labels(pred) -> np.ndarray:
    """Class ids from ids [N] or scores [N, C] (argmax)."""
    p = _np(pred)
    return p.argmax(axis=1) if p.ndim == 2 else p.astype(np.int64)


def accuracy(pred, target) -> float:
    """Top-1 accuracy; `pred` is class ids [N] or scores [N, C]."""
    p, t = _labels(pred), _np(target).astype(np.int64)
    _check_pair(p, t, "accuracy")
    return float(accuracy_score(t, p))


def per_class_accuracy(pred, target) -> float:
    """Average per-class accuracy (mean recall over the classes present in `target`)."""
    p, t = _labels(pred), _np(target).astype(np.int64)
    _check_pair(p, t, "per_class_accuracy")
    with warnings.catch_warnings():  # predicted classes absent from the targets are left out, by design
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(t, p))


def mse(pred, target) -> float:
    """Mean squared error."""
    p, t = _np(pred).astype(np.float64).reshape(-1), _np(target).astype(np.float64).reshape(-1)
    _check_pair(p, t, "mse")
    return float(mean_squared_error(t, p))


def retrieval_ranks(similarity, gt=None) -> np.ndarray:
    """1-based rank of each query's ground truth; `similarity` [Q, C] (higher = closer).

    `gt[q]` is the ground-truth candidate of query q (default: q, i.e. the diagonal).
    """
    s = _np(similarity).astype(np.float64)
    if s.ndim != 2:
        raise ValueError(f"similarity must be [queries, candidates], got shape {s.shape}")
    q = np.arange(s.shape[0])
    g = q if gt is None else _np(gt).astype(np.int64)
    if g.shape != q.shape or (g < 0).any() or (g >= s.shape[1]).any():
        raise ValueError(f"gt must hold one candidate index in [0, {s.shape[1]}) per query")
    pos = s[q, g][:, None]
    return 1 + (s > pos).sum(axis=1) + ((s == pos).sum(axis=1) - 1)


def retrieval_metrics(similarity, gt=None, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """R@K (fraction of queries whose ground truth ranks within K), median and mean rank."""
    r = retrieval_ranks(similarity, gt)
    out = {f"R@{k}": float((r <= k).mean()) for k in ks}
    out["median_rank"] = float(np.median(r))
    out["mean_rank"] = float(r.mean())
    return out
