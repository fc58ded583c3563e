"""Choosing K without labels: SiamMM's Eq. 11 merging applied to learned embeddings."""
import numpy as np
import pytest

from mixlab.workbook import choose_k


def split_groups(seed=0, groups=4, splits=3, per=30, d=8):
    """``groups`` far-apart directions, each split into ``splits`` close sub-clusters (K0 = 12)."""
    rng = np.random.default_rng(seed)
    axes = np.eye(d)[:groups] * 10
    x, sub, true = [], [], []
    for g in range(groups):
        for s in range(splits):
            centre = axes[g] + rng.normal(0, 1.0, d)
            x.append(centre + rng.normal(0, 0.1, (per, d)))
            sub += [g * splits + s] * per
            true += [g] * per
    return np.concatenate(x), np.array(sub), np.array(true)


def test_first_round_merges_only_within_true_groups():
    x, sub, true = split_groups()
    old_to_new, trajectory = choose_k.merge_on_embeddings(x, sub, zeta=-1.2, max_rounds=1)
    assert trajectory[0] == 12 and trajectory[1] < 12, "the closest sub-clusters merge"
    for g in np.unique(old_to_new):
        members = np.flatnonzero(old_to_new == g)
        assert len(set(members // 3)) == 1, f"merged sub-clusters {members} of different groups"


def test_merging_stops_and_empty_clusters_map_to_minus_one():
    x, sub, _ = split_groups(seed=1)
    labels = np.where(sub == 0, 13, sub)  # cluster 0 empty, 13 used
    old_to_new, trajectory = choose_k.merge_on_embeddings(x, labels, zeta=-1.2)
    assert old_to_new[0] == -1 and old_to_new[13] >= 0
    assert trajectory == sorted(trajectory, reverse=True) and trajectory[-1] >= 2
    assert len(set(trajectory)) == len(trajectory), "each recorded round merged something"


def test_group_assignments_follow_each_images_own_cluster():
    flat = np.full((3, 4), 0.25) + np.array([[0.01, 0, 0, -0.01], [0, 0.01, -0.01, 0], [-0.01, 0, 0.01, 0]])
    mapping = np.array([0, 0, 0, 1])  # a big group {0, 1, 2} and a small one {3}
    cluster, prob = choose_k.group_assignments(flat, mapping)
    assert cluster.tolist() == [0, 0, 0]
    np.testing.assert_allclose(prob, [0.76, 0.75, 0.75])
    cluster, _ = choose_k.group_assignments(np.hstack([flat, np.zeros((3, 2))]), mapping)
    assert cluster.tolist() == [0, 0, 0], "posterior columns of clusters no image chose are ignored"
    own = np.array([[0.24, 0.24, 0.24, 0.28]])  # summed, group 0 holds 0.72: argmax of the sum would say 0
    cluster, prob = choose_k.group_assignments(own, mapping)
    assert cluster.tolist() == [1] and prob[0] == pytest.approx(0.28), "not swallowed by the larger group"


def test_overrides_and_bad_k():
    assert choose_k.overrides("siammm", "smoke", None)["method"]["merge"] is True
    assert choose_k.overrides("siammm", "smoke", 7)["method"] == {"n_clusters": 7, "merge": False}
    k0 = choose_k.settings("smoke")["k0"]
    assert choose_k.overrides("mice", "smoke", None)["method"]["embed_dim"] >= k0 - 1
    with pytest.raises(ValueError, match="n_clusters"):
        choose_k.overrides("moco", "smoke", 1)
