"""Clustering without knowing K: start from a large K0 and merge by SiamMM's rule (Eq. 11).

SiamMM (Wang, Huang, Liang, arXiv 2024, §4.2) starts from a large K and, once per epoch, merges
clusters i, j whose standardised centroid distance is small,

    (Z_ij - E{Z}) / SE{Z} < zeta,    Z_ij = ||mu_i - mu_j||_2                         (11)

(:func:`mixlab.mixture.merge_clusters`). SiamMM does it during training (``method.merge``). For
the other methods :func:`merge_on_embeddings` applies the same rule after training, on the learned
embeddings: mu_k = the normalised mean resultant of the unit embeddings assigned to cluster k, one
round of Eq. 11 (closest-first disjoint pairs, size-weighted), repeated until a round merges
nothing, K reaches ``min_clusters`` or ``max_rounds`` rounds are done. Clusters are only ever
grouped: an image's merged cluster is the group of its own cluster, and its probability the sum of
its posterior over the group's members (:func:`group_assignments`). Run to convergence, Eq. 11
stops only where no standardised distance is below zeta, which for zeta = -1.2 is typically a
handful of clusters (with three clusters no z-score can reach -1.2); SiamMM itself merges once per
epoch, so its K depends on the number of epochs too.

K0 and zeta are SiamMM's own profile values (its ``n_clusters`` and ``zeta``), so every method
starts from the same K0 and merges by the same threshold (:func:`settings`). On a data set smaller
than the profile's, K0 keeps the paper's ratio of images per initial cluster (K = 100k for
ImageNet's 1,281,167 training images, about 13 each): K0 = min(profile's K0, N / 12.8).
"""
from __future__ import annotations

import numpy as np

from mixlab.mixture.merge import merge_clusters

__all__ = ["settings", "overrides", "merge_on_embeddings", "group_assignments", "siammm_trajectory"]


IMAGES_PER_INITIAL_CLUSTER = 1_281_167 / 100_000  # SiamMM's K0 = 100k on ImageNet's training images


def settings(profile: str, n_images: int | None = None) -> dict:
    """``{"k0", "zeta", "min_clusters"}``: SiamMM's initial K, Eq. 11 threshold and floor on
    ``profile``; K0 at most ``n_images`` / :data:`IMAGES_PER_INITIAL_CLUSTER` when given."""
    from mixlab.config import resolve

    p = resolve("siammm", profile).params
    k0 = p.n_clusters if n_images is None else max(2, min(p.n_clusters, round(n_images / IMAGES_PER_INITIAL_CLUSTER)))
    return {"k0": k0, "zeta": p.zeta, "min_clusters": p.min_clusters}


def overrides(method: str, profile: str, n_clusters: int | None, n_images: int | None = None) -> dict:
    """Method overrides for a run with ``n_clusters`` (None: K0 of :func:`settings` for
    ``n_images`` images, merged later).

    SiamMM with a given K trains without merging; with None it merges during training. MiCE's MMD
    prototypes need ``embed_dim >= K - 1``, so its embedding grows to K - 1 when K is larger.
    """
    from mixlab.config import resolve

    if n_clusters is not None and (not isinstance(n_clusters, int) or n_clusters < 2):
        raise ValueError(f"n_clusters={n_clusters!r} must be an integer >= 2, or null to start from K0 and merge")
    k = n_clusters or settings(profile, n_images)["k0"]
    out: dict = {"n_clusters": k}
    if method == "siammm":
        out["merge"] = n_clusters is None
    if method == "mice":
        out["embed_dim"] = max(resolve("mice", profile).params.embed_dim, k - 1)
    return {"method": out}


def merge_on_embeddings(embedding, labels, zeta: float, *, min_clusters: int = 2, max_rounds: int = 100):
    """Group the clusters of ``labels`` (``[N]``) by rounds of Eq. 11 on ``embedding`` (``[N, d]``).

    Returns ``(old_to_new, trajectory)``: ``old_to_new[k]`` is the final cluster of original cluster
    k (empty original clusters map to -1) and ``trajectory`` the number of non-empty clusters before
    each round and after the last.
    """
    x = np.asarray(embedding, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    labels = np.asarray(labels, dtype=np.int64)
    present, current = np.unique(labels, return_inverse=True)  # contiguous ids of non-empty clusters
    groups = np.arange(len(present))  # original non-empty cluster -> current cluster
    trajectory = [len(present)]
    for _ in range(max_rounds):
        K = groups.max() + 1
        if K <= min_clusters:
            break
        r = np.zeros((K, x.shape[1]))
        np.add.at(r, current, x)
        sizes = np.bincount(current, minlength=K).astype(np.float64)
        _, mapping = merge_clusters(r, zeta, sizes=sizes)
        mapping = np.asarray(mapping)
        if mapping.max() + 1 == K or mapping.max() + 1 < min_clusters:
            break
        groups, current = mapping[groups], mapping[current]
        trajectory.append(int(groups.max() + 1))
    old_to_new = np.full(int(labels.max()) + 1, -1, dtype=np.int64)
    old_to_new[present] = groups
    return old_to_new, trajectory


def group_assignments(posterior, old_to_new) -> tuple[np.ndarray, np.ndarray]:
    """``(cluster, probability)`` after grouping: cluster g = old_to_new[argmax_k q(k | x)] and
    probability = sum of q(k | x) over the original clusters k of g. (Not argmax_g of the grouped
    posterior: with flat posteriors that sum favours the largest group for every image.)"""
    post = np.asarray(posterior, dtype=np.float64)
    mapping = np.full(post.shape[1], -1, dtype=np.int64)  # clusters above the largest label are empty
    mapping[:len(old_to_new)] = np.asarray(old_to_new)[:post.shape[1]]
    cluster = mapping[post.argmax(1)]
    member = mapping[None, :] == cluster[:, None]
    return cluster, (post * member).sum(1)


def siammm_trajectory(log: list[dict], k0: int) -> list[int]:
    """K before training and after every epoch, from a SiamMM run's ``log.jsonl`` rows."""
    return [k0] + [int(row["K"]) for row in log if "K" in row]
