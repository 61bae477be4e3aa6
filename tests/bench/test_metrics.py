"""Metrics against sklearn and torchmetrics references."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, mean_squared_error
from torchmetrics.retrieval import RetrievalHitRate

from lmp_bench import metrics


@pytest.fixture
def cls():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, 300)
    pred = np.where(rng.random(300) < 0.6, target, rng.integers(0, 5, 300))
    return pred, target


def test_accuracy_matches_sklearn(cls):
    pred, target = cls
    assert metrics.accuracy(pred, target) == pytest.approx(accuracy_score(target, pred))
    scores = np.eye(5)[pred] + 0.01  # [N, C] scores -> argmax
    assert metrics.accuracy(torch.tensor(scores), torch.tensor(target)) == pytest.approx(
        accuracy_score(target, pred)
    )


def test_per_class_accuracy_matches_sklearn(cls):
    pred, target = cls
    ref = balanced_accuracy_score(target, pred)
    assert metrics.per_class_accuracy(pred, target) == pytest.approx(ref)
    # imbalanced: differs from plain accuracy
    t = np.array([0] * 90 + [1] * 10)
    p = np.zeros(100, dtype=int)
    assert metrics.per_class_accuracy(p, t) == pytest.approx(0.5)
    assert metrics.accuracy(p, t) == pytest.approx(0.9)


def test_per_class_accuracy_ignores_classes_absent_from_targets():
    # declared-but-unused classes (LVU director/writer) predicted by mistake count as errors, not as classes
    t = np.array([0, 0, 1, 1])
    p = np.array([0, 7, 1, 1])
    with pytest.warns(UserWarning):
        ref = balanced_accuracy_score(t, p)
    assert metrics.per_class_accuracy(p, t) == pytest.approx(ref) == pytest.approx(0.75)


def test_mse_matches_sklearn():
    rng = np.random.default_rng(1)
    y, p = rng.normal(size=200), rng.normal(size=200)
    assert metrics.mse(p, y) == pytest.approx(mean_squared_error(y, p))
    with pytest.raises(ValueError, match="3 predictions for 2 targets"):
        metrics.mse([1, 2, 3], [1, 2])


def test_retrieval_matches_torchmetrics_and_argsort():
    rng = np.random.default_rng(2)
    q, c = 50, 80
    sim = rng.normal(size=(q, c))
    gt = rng.integers(0, c, q)
    sim[np.arange(q), gt] += 1.5  # some signal
    out = metrics.retrieval_metrics(sim, gt)
    # reference ranks from a full sort
    order = np.argsort(-sim, axis=1)
    ref_rank = np.array([int(np.where(order[i] == gt[i])[0][0]) + 1 for i in range(q)])
    np.testing.assert_array_equal(metrics.retrieval_ranks(sim, gt), ref_rank)
    assert out["median_rank"] == pytest.approx(np.median(ref_rank))
    assert out["mean_rank"] == pytest.approx(ref_rank.mean())
    indexes = torch.arange(q).repeat_interleave(c)
    target = torch.zeros(q, c, dtype=torch.bool)
    target[torch.arange(q), torch.tensor(gt)] = True
    for k in (1, 5, 10):
        hit = RetrievalHitRate(top_k=k)(torch.tensor(sim).flatten(), target.flatten(), indexes=indexes)
        assert out[f"R@{k}"] == pytest.approx(float(hit))
    assert 0 < out["R@1"] < out["R@5"] < out["R@10"] < 1


def test_retrieval_diagonal_default_and_ties():
    sim = np.eye(4)
    assert metrics.retrieval_metrics(sim) == {
        "R@1": 1.0,
        "R@5": 1.0,
        "R@10": 1.0,
        "median_rank": 1.0,
        "mean_rank": 1.0,
    }
    # a constant embedding gets the worst rank, not a lucky first place
    flat = metrics.retrieval_ranks(np.zeros((4, 4)))
    np.testing.assert_array_equal(flat, [4, 4, 4, 4])
    with pytest.raises(ValueError, match="one candidate index"):
        metrics.retrieval_ranks(np.eye(3), gt=[0, 1, 3])
