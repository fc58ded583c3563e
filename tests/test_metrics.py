"""Behavioural tests of mixlab.metrics: Hungarian ACC against brute force, ranges, kinds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mixlab.metrics import cluster_acc, cluster_sizes, contingency, evaluate, majority_acc, silhouette_cosine


def _brute_force_acc(y_true, y_pred) -> float:
    """Best injective map between clusters and classes, by enumeration."""
    clusters, classes = np.unique(y_pred), np.unique(y_true)
    n = len(y_true)
    best = 0
    if len(clusters) <= len(classes):  # injective clusters -> classes
        for image in itertools.permutations(classes, len(clusters)):
            m = dict(zip(clusters, image))
            best = max(best, sum(m[p] == t for p, t in zip(y_pred, y_true)))
    else:  # injective classes -> clusters; the other clusters are wrong
        for image in itertools.permutations(clusters, len(classes)):
            m = dict(zip(classes, image))
            best = max(best, sum(m[t] == p for p, t in zip(y_pred, y_true)))
    return best / n


@pytest.mark.parametrize("seed", range(40))
def test_cluster_acc_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(1, 6))
    n_clusters = int(rng.integers(1, 6))
    n = int(rng.integers(5, 40))
    y_true = rng.integers(0, n_classes, n)
    # correlated predictions so the optimum is not trivial; arbitrary (non-contiguous) ids
    y_pred = np.where(rng.random(n) < 0.6, y_true % n_clusters, rng.integers(0, n_clusters, n))
    y_pred = np.array([3, 17, -2, 40, 9])[y_pred]
    assert cluster_acc(y_true, y_pred) == pytest.approx(_brute_force_acc(y_true, y_pred), abs=1e-12)
    # majority ACC (many-to-one) is a relaxation of the one-to-one matching
    maj = majority_acc(y_true, y_pred)
    expected = sum(np.bincount(y_true[y_pred == c]).max() for c in np.unique(y_pred)) / n
    assert maj == pytest.approx(expected)
    assert maj >= cluster_acc(y_true, y_pred) - 1e-12


def test_cluster_acc_rectangular_examples():
    y = np.array([0, 0, 1, 1, 2, 2])
    # perfect but permuted
    assert cluster_acc(y, [2, 2, 0, 0, 1, 1]) == 1.0
    # over-clustering: class 0 split in two clusters; one half must count as wrong
    assert cluster_acc(y, [0, 3, 1, 1, 2, 2]) == pytest.approx(5 / 6)
    assert majority_acc(y, [0, 3, 1, 1, 2, 2]) == 1.0
    # under-clustering: everything in one cluster
    assert cluster_acc(y, [5] * 6) == pytest.approx(2 / 6)
    m = contingency(y, [0, 3, 1, 1, 2, 2])
    assert m.shape == (4, 3) and m.sum() == 6


def test_metrics_accept_torch_and_reject_bad_input():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    p = torch.tensor([1, 1, 0, 0, 2, 2])
    assert cluster_acc(y, p) == 1.0
    with pytest.raises(ValueError):
        cluster_acc([0, 1, 2], [0, 1])
    with pytest.raises(ValueError):
        cluster_acc([0.5, 1.0], [0, 1])


def test_evaluate_keys_and_ranges():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 500)
    perfect = evaluate(y, (y + 3) % 10)
    assert set(perfect) == {"acc", "nmi", "ari", "ami"}
    assert all(isinstance(v, float) for v in perfect.values())
    for k, v in perfect.items():
        assert v == pytest.approx(1.0), k
    rand = evaluate(y, rng.integers(0, 10, 500))
    assert 0.0 <= rand["acc"] <= 1.0 and 0.0 <= rand["nmi"] <= 1.0
    assert -0.5 <= rand["ari"] <= 1.0 and -1.0 <= rand["ami"] <= 1.0
    assert rand["acc"] < 0.3 and abs(rand["ari"]) < 0.05 and abs(rand["ami"]) < 0.05
    noisy = np.where(rng.random(500) < 0.7, y, rng.integers(0, 10, 500))
    mid = evaluate(torch.tensor(y), torch.tensor(noisy))
    for k in mid:
        assert rand[k] < mid[k] < perfect[k] + 1e-12, k


def test_cluster_sizes():
    np.testing.assert_array_equal(cluster_sizes([0, 2, 2, 3]), [1, 0, 2, 1])
    np.testing.assert_array_equal(cluster_sizes(torch.tensor([1, 1]), K=4), [0, 2, 0, 0])
    assert cluster_sizes([0, 1], K=5).dtype == np.int64
    with pytest.raises(ValueError):
        cluster_sizes([-1, 0])


def test_silhouette_cosine_ranks_separated_above_random_and_rejects_one_cluster():
    rng = np.random.default_rng(0)
    centers = np.eye(8)[:4] * 10
    y = np.repeat(np.arange(4), 50)
    emb = centers[y] + rng.normal(size=(200, 8))
    good = silhouette_cosine(emb, y)
    shuffled = silhouette_cosine(emb, rng.permutation(y))
    assert good > 0.7 and abs(shuffled) < 0.1
    assert np.isnan(silhouette_cosine(emb, np.zeros(200, dtype=int)))
    with pytest.raises(ValueError, match="rows"):
        silhouette_cosine(emb[:10], y)


def test_assignment_confidence_is_plain_json():
    import json

    from mixlab.metrics import assignment_confidence

    found = assignment_confidence(np.full((4, 3), 1 / 3))
    assert json.loads(json.dumps(found))["collapsed"] is True and type(found["collapsed"]) is bool
