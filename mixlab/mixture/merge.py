"""Cluster merging by standardised pairwise centroid distance (SiamMM §4.2, Eq. 11).

With mean directions mu_k and pairwise distances Z_ij = ||mu_i - mu_j||_2, clusters i and j
are merged when

    (Z_ij - E{Z}) / SE{Z} < zeta                                              (11)

where E and SE are the mean and standard deviation of the pairwise distances over all
pairs i < j (SiamMM uses zeta = -1.2, about the 10th percentile of the standardised
distances, applied once per epoch, Algorithm 1 "Merge", starting from a large K).

The paper does not spell out how overlapping pairs or the merged centroid are handled,
nor when merging stops; the choices here (documented, and switchable):

- Eq. 11 re-standardised at every call always finds pairs below zeta (it ranks the pairs
  against each other), so repeated calls merge down to any floor. ``threshold`` instead
  takes a fixed distance, e.g. :func:`distance_threshold` E{Z} + zeta SE{Z} measured once
  on the first (over-seeded) centroids: later calls merge only pairs that are closer than
  the first call's zeta-quantile, and merging stops by itself.

- ``mode="pairs"`` (default): closest-first greedy matching: candidate pairs are visited
  in increasing distance and merged when neither cluster has been merged yet in this
  call, so one call at most halves K and repeated calls (one per epoch) give the gradual
  "merging curve" of the paper. Transitive chaining through the 10% closest pairs would
  otherwise collapse a large K to a handful of clusters in one step.
- ``mode="components"``: all pairs passing Eq. 11 are merged transitively (connected
  components / single linkage).
- The merged centroid is the size-weighted mean of the members' centroids,
  sum_i n_i r_i / sum_i n_i: for mean resultant vectors r_k (Eq. 5, what Algorithm 1
  merges) with n_k points each, this is exactly the r of the union. Without ``sizes`` the
  members weigh equally. With ``normalize`` (default) the result is projected back onto
  the sphere (a mean direction mu, Eq. 6, ready to warm-start spherical k-means).

Memory: pair distances are computed in blocks of rows (about 2^20 similarities each, one matrix
product), so E{Z}, SE{Z} and the pairs below the threshold need O(K d) plus the kept pairs, never
the K^2/2 x d arrays of gathered centroid pairs (24 GiB at K = 5000, d = 128).
"""

from __future__ import annotations

import numpy as np
import torch

from mixlab.mixture._kind import as_numpy, float_dtype, like

__all__ = ["distance_threshold", "merge_clusters", "pairwise_zscores"]


def _unit(c: np.ndarray) -> np.ndarray:
    return c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-300)


def _equidistant(mean: float, se: float) -> bool:
    """All distances equal up to float32 rounding (e.g. MMD centers): nothing to standardise."""
    return se <= 1e-6 * max(mean, 1e-12)


_BLOCK_ELEMENTS = 1 << 20  # entries of one block of pairwise similarities (8 MiB in float64)


def _upper_distances(mu: np.ndarray):
    """Blocks ``(s, dist, upper)`` of Z_ij = ||mu_i - mu_j||: ``dist`` ``[e - s, K - s]`` holds rows
    i = s..e-1 against columns j = s..K-1 (one float64 matrix product mu[s:e] mu[s:]^T of about
    ``_BLOCK_ELEMENTS`` entries) and ``upper`` marks the pairs i < j. Row-major order over the blocks
    is the order of ``np.triu_indices(K, 1)``; nothing of size K^2 or K^2 x d is ever formed."""
    K = mu.shape[0]
    step = max(1, _BLOCK_ELEMENTS // max(K, 1))
    for s in range(0, K, step):
        e = min(s + step, K)
        dist = np.sqrt(np.clip(2.0 - 2.0 * (mu[s:e] @ mu[s:].T), 0.0, None))
        upper = np.arange(s, K)[None, :] > np.arange(s, e)[:, None]
        yield s, dist, upper


def _distance_moments(mu: np.ndarray) -> tuple[int, float, float]:
    """(count, mean, standard deviation) of Z_ij over all pairs i < j, in one blocked pass (Chan et al.'s
    pairwise update of the mean and the sum of squared deviations): O(K) memory, and equal to
    ``dist.mean(), dist.std()`` of the dense array up to float summation order."""
    n, mean, m2 = 0, 0.0, 0.0
    for _, dist, upper in _upper_distances(mu):
        block = dist[upper]
        nb = block.size
        if not nb:
            continue
        mb = float(block.mean())
        m2b = float(((block - mb) ** 2).sum())
        delta = mb - mean
        tot = n + nb
        mean += delta * nb / tot
        m2 += m2b + delta * delta * n * nb / tot
        n = tot
    return n, mean, (m2 / n) ** 0.5 if n else float("nan")


def _pairs_below(mu: np.ndarray, thr: float):
    """``(i, j, dist)`` of the pairs i < j with Z_ij < ``thr`` (every pair for thr = inf, none for nan),
    in ``np.triu_indices`` order: memory O(K) per block plus the pairs kept (24 bytes each)."""
    ii, jj, dd = [np.empty(0, np.int64)], [np.empty(0, np.int64)], [np.empty(0)]
    for s, dist, upper in _upper_distances(mu):
        r, c = np.nonzero(upper & (dist < thr))  # False for every pair when thr is nan (equidistant)
        ii.append(r.astype(np.int64) + s)
        jj.append(c.astype(np.int64) + s)
        dd.append(dist[r, c])
    return np.concatenate(ii), np.concatenate(jj), np.concatenate(dd)


def pairwise_zscores(centroids):
    """Standardised pairwise distances of Eq. 11 over all pairs i < j (the output is O(K^2); computed
    in blocks, without a K^2 x d intermediate).

    Returns ``(i, j, z, dist)`` (int64 pair indices, float64 (Z_ij - E Z)/SE Z and Z_ij), numpy or
    torch like ``centroids``, with Z_ij = ||mu_i - mu_j|| on the normalised centroids. ``z`` is all zeros
    when every pair is equidistant (SE <= 1e-6 E, i.e. equal up to float32 rounding). Handy to draw the
    distribution and pick ``zeta``.
    """
    i, j, dist = _pairs_below(_unit(as_numpy(centroids)), float("inf"))
    z = np.zeros_like(dist)
    if dist.size and not _equidistant(dist.mean(), dist.std()):
        z = (dist - dist.mean()) / dist.std()
    return tuple(like(centroids, a) for a in (i, j, z, dist))


def _sampled_threshold(mu: np.ndarray, zeta: float, n_sample: int, seed: int) -> float:
    """E{Z} + zeta SE{Z} from ``n_sample`` random pairs (nan when all are equidistant); the pair
    distances are computed in blocks (memory O(n_sample), not O(n_sample d))."""
    K = mu.shape[0]
    rng = np.random.default_rng(seed)
    a = rng.integers(0, K, size=n_sample)
    b = rng.integers(0, K - 1, size=n_sample)
    b = b + (b >= a)  # uniform over ordered pairs with a != b
    ds = np.empty(n_sample)
    step = max(1, _BLOCK_ELEMENTS // max(mu.shape[1], 1))
    for s in range(0, n_sample, step):
        e = min(s + step, n_sample)
        ds[s:e] = np.sqrt(np.clip(2.0 - 2.0 * np.einsum("pd,pd->p", mu[a[s:e]], mu[b[s:e]]), 0.0, None))
    mean, se = ds.mean(), ds.std()
    return float("nan") if _equidistant(mean, se) else float(mean + zeta * se)


def distance_threshold(centroids, zeta: float, *, max_dense: int = 8192, n_sample_pairs: int = 1_000_000,
                       seed: int = 0) -> float:
    """Eq. 11 as a distance: z_ij < zeta  <=>  Z_ij < E{Z} + zeta SE{Z}.

    Exact over all pairs up to ``max_dense`` centroids (blocked: O(K) memory), else from
    ``n_sample_pairs`` random pairs. ``nan`` when there are fewer than 3 centroids or all pairs are
    equidistant (nothing to standardise: no pair passes)."""
    mu = _unit(as_numpy(centroids))
    if mu.shape[0] < 3:
        return float("nan")
    if mu.shape[0] > max_dense:
        return _sampled_threshold(mu, float(zeta), int(n_sample_pairs), int(seed))
    _, mean, se = _distance_moments(mu)
    return float("nan") if _equidistant(mean, se) else float(mean + zeta * se)


def _candidates_sparse(mu: np.ndarray, thr: float, knn: int):
    """Large K: pairs closer than ``thr`` among each centroid's ``knn`` nearest neighbours
    (blocked exact search, O(K) memory per block)."""
    K = mu.shape[0]
    if not np.isfinite(thr):
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    m = torch.from_numpy(mu)
    k = min(knn + 1, K)
    ii, jj, dd = [], [], []
    step = min(4096, max(1, _BLOCK_ELEMENTS // K))
    for s in range(0, K, step):
        sims, idx = (m[s : s + step] @ m.T).topk(k, dim=1)
        dist = torch.sqrt(torch.clamp(2.0 - 2.0 * sims, min=0.0))
        rows = torch.arange(s, s + sims.shape[0])[:, None].expand_as(idx)
        keep = (dist < thr) & (idx != rows)  # no self-pairs; duplicates removed below
        ii.append(torch.minimum(rows, idx)[keep])
        jj.append(torch.maximum(rows, idx)[keep])
        dd.append(dist[keep])
    i = torch.cat(ii).numpy()
    j = torch.cat(jj).numpy()
    d = torch.cat(dd).numpy()
    if i.size:
        _, first = np.unique(i * K + j, return_index=True)
        i, j, d = i[first], j[first], d[first]
    return i, j, d


def merge_clusters(
    centroids,
    zeta: float,
    *,
    sizes=None,
    mode: str = "pairs",
    normalize: bool = True,
    max_dense: int = 8192,
    knn: int = 16,
    n_sample_pairs: int = 1_000_000,
    seed: int = 0,
    threshold: float | None = None,
):
    """Merge clusters whose standardised centroid distance is below ``zeta`` (SiamMM Eq. 11).

    Args:
        centroids: ``[K, d]`` centroids (unit mean directions mu_k or mean resultant
            vectors r_k); distances are measured between their normalised versions.
        zeta: threshold on (Z_ij - E Z) / SE Z (SiamMM: -1.2). More negative merges less.
        sizes: optional ``[K]`` cluster sizes (or total responsibilities) weighting the
            merged centroid; equal weights if None.
        mode: ``"pairs"`` (closest-first disjoint pairs, at most K/2 merges per call) or
            ``"components"`` (transitive closure of all pairs passing Eq. 11).
        normalize: return unit-norm centroids (default) or the raw weighted means.
        max_dense: up to this K all K(K-1)/2 distances are used exactly (computed in blocks; only
            the pairs below the threshold are kept); above it, E and SE are estimated from
            ``n_sample_pairs`` random pairs (``seed``) and candidate pairs come from each
            centroid's ``knn`` nearest neighbours. Memory: O(K d) plus the kept pairs (24 bytes
            each, at most K(K-1)/2 up to ``max_dense``, K knn above), never O(K^2 d).
        threshold: a fixed distance replacing this call's E{Z} + zeta SE{Z} (``zeta`` is then
            unused): pairs with Z_ij < threshold merge (e.g. :func:`distance_threshold` of
            the first centroids, see the module docstring).

    Returns:
        ``(new_centroids, old_to_new)``: ``[K', d]`` and ``[K]`` int64 mapping old -> new
        cluster index, contiguous in 0..K'-1 and ordered by each group's smallest old
        index (untouched clusters keep their relative order). Same kind (numpy/torch,
        dtype, device) as ``centroids``. New sizes: ``np.bincount(old_to_new, weights=sizes)``.
        K < 3, or all pairs equidistant (SE ~ 0, e.g. MMD centers), merges nothing.
    """
    if mode not in ("pairs", "components"):
        raise ValueError(f"mode={mode!r} must be 'pairs' or 'components'")
    C = as_numpy(centroids)
    if C.ndim != 2:
        raise ValueError(f"centroids must be [K, d], got shape {C.shape}")
    K = C.shape[0]
    w = np.ones(K) if sizes is None else as_numpy(sizes).reshape(-1)
    if w.shape[0] != K:
        raise ValueError(f"sizes has {w.shape[0]} entries for K={K} centroids")
    if np.any(w < 0):
        raise ValueError("sizes must be non-negative")
    mu = _unit(C)

    if K < 3:
        i = j = np.empty(0, np.int64)
        dist = np.empty(0)
    else:
        thr = threshold if threshold is not None else distance_threshold(
            mu, zeta, max_dense=max_dense, n_sample_pairs=n_sample_pairs, seed=seed)
        if K <= max_dense:
            i, j, dist = _pairs_below(mu, float(thr))
        else:
            i, j, dist = _candidates_sparse(mu, float(thr), int(knn))

    # union-find over the accepted pairs
    parent = np.arange(K)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    order = np.argsort(dist, kind="stable")
    if mode == "pairs":
        used = np.zeros(K, dtype=bool)
        for p in order:
            a, b = int(i[p]), int(j[p])
            if not used[a] and not used[b]:
                used[a] = used[b] = True
                parent[b] = a
    else:
        for p in order:
            ra, rb = find(int(i[p])), find(int(j[p]))
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(a) for a in range(K)])
    # contiguous new ids ordered by each group's smallest old index
    _, first_idx, inv = np.unique(roots, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first_idx))
    old_to_new = rank[inv].astype(np.int64)
    Kn = int(old_to_new.max()) + 1 if K else 0

    mass = np.bincount(old_to_new, weights=w, minlength=Kn)
    count = np.bincount(old_to_new, minlength=Kn).astype(np.float64)
    summed = np.zeros((Kn, C.shape[1]))
    np.add.at(summed, old_to_new, w[:, None] * C)
    plain = np.zeros((Kn, C.shape[1]))
    np.add.at(plain, old_to_new, C)
    # groups whose sizes are all zero fall back to equal weights
    new = np.where(mass[:, None] > 0, summed / np.maximum(mass, 1e-300)[:, None], plain / count[:, None])
    if normalize:
        new = _unit(new)

    return like(centroids, new, float_dtype(centroids)), like(centroids, old_to_new)
