"""Spherical k-means and nearest-centroid search through faiss.

Spherical k-means is the hard-assignment, shared-concentration limit of a vMF mixture
fitted by EM (SiamMM §3-4; MiCE §5.3 / App. C: the two-stage baseline MiCE generalises):
E-step = assign each unit vector to the centroid of largest cosine, M-step = the mean of
its members re-normalised to the sphere (SiamMM Eq. 5-6 with one-hot p(k|v)).

Notes on faiss (see DESIGN.md):
- ``faiss.Kmeans`` subsamples to 256 points per centroid by default; here
  ``max_points_per_centroid`` is set so that every point is used.
- ``spherical=True`` re-normalises centroids after each iteration but expects
  L2-normalised input; inputs are normalised here.
- SiamMM §4.3 "consistent centroids": pass the previous epoch's centroids as ``init`` to
  warm-start instead of re-initialising (faiss ``Kmeans.train(x, init_centroids=...)``).

numpy in -> numpy out, torch in -> torch out (x's device; float32 centroids, int64 labels).
faiss is an optional dependency (``pip install faiss-cpu``) imported on first use.
"""

from __future__ import annotations

import numpy as np

from mixlab.mixture._kind import as_numpy, like

__all__ = ["spherical_kmeans", "assign_nearest"]


def _faiss():
    try:
        import faiss  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "spherical k-means needs faiss: pip install faiss-cpu (or conda install -c pytorch faiss-cpu)"
        ) from e
    return faiss


def _unit_f32(a, name: str) -> np.ndarray:
    a = as_numpy(a, np.float32)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, d], got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return np.ascontiguousarray(a / np.maximum(norms, 1e-12), dtype=np.float32)


def assign_nearest(x, centroids, H: int = 1, *, normalize: bool = True):
    """The ``H`` centroids of largest cosine similarity for each point (exact search).

    faiss ``IndexFlatIP`` over the (L2-normalised, when ``normalize``) centroids, queried
    with the normalised points; the SiamMM E-step for hard (H = 1, Eq. 8) or top-H soft
    assignment (Eq. 10, the set M of the H nearest centroids).

    Returns:
        ``(sims, idx)``: ``[N, H]`` float32 cosine similarities, best first, and ``[N, H]``
        int64 centroid indices; same kind (numpy/torch, device) as ``x``.
    """
    faiss = _faiss()
    xn = _unit_f32(x, "x") if normalize else np.ascontiguousarray(as_numpy(x, np.float32))
    cn = _unit_f32(centroids, "centroids") if normalize else np.ascontiguousarray(as_numpy(centroids, np.float32))
    if xn.shape[1] != cn.shape[1]:
        raise ValueError(f"x has dimension {xn.shape[1]} but centroids have {cn.shape[1]}")
    K = cn.shape[0]
    if not 1 <= H <= K:
        raise ValueError(f"H={H} must be between 1 and the number of centroids K={K}")
    index = faiss.IndexFlatIP(cn.shape[1])
    index.add(cn)
    sims, idx = index.search(xn, int(H))
    return like(x, sims.astype(np.float32)), like(x, idx.astype(np.int64))


def spherical_kmeans(
    x,
    K: int,
    *,
    iters: int = 20,
    seed: int = 0,
    init=None,
    nredo: int = 1,
    verbose: bool = False,
):
    """Spherical k-means of the rows of ``x`` with faiss (cosine similarity, unit centroids).

    Args:
        x: ``[N, d]`` embeddings (numpy or torch); L2-normalised here.
        K: number of clusters, 1 <= K <= N.
        iters: Lloyd iterations (faiss ``niter``).
        seed: faiss seed (initial centroid sampling); deterministic for a given seed and
            thread count.
        init: optional ``[K, d]`` warm-start centroids (SiamMM §4.3 consistent centroids:
            the previous epoch's centroids); normalised here.
        nredo: independent restarts, the best objective kept (ignored in effect with ``init``).

    Returns:
        ``(centroids, labels)``: ``[K, d]`` float32 unit-norm centroids and ``[N]`` int64
        labels (index of the centroid of largest cosine), numpy or torch like ``x``.
    """
    faiss = _faiss()
    xn = _unit_f32(x, "x")
    N, d = xn.shape
    K = int(K)
    if K < 1:
        raise ValueError(f"K={K} must be >= 1")
    if K > N:
        raise ValueError(f"K={K} clusters need at least K points; got N={N}")
    if iters < 0:
        raise ValueError(f"iters={iters} must be >= 0")
    km = faiss.Kmeans(
        d,
        K,
        niter=int(iters),
        seed=int(seed),
        nredo=int(nredo),
        spherical=True,
        verbose=bool(verbose),
        max_points_per_centroid=N + 1,  # never subsample: use every point
        min_points_per_centroid=1,  # no "please provide at least ..." warning
    )
    if init is not None:
        cn = _unit_f32(init, "init")
        if cn.shape != (K, d):
            raise ValueError(f"init must have shape (K, d)={(K, d)}, got {cn.shape}")
        km.train(xn, init_centroids=cn)
    else:
        km.train(xn)
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    _, idx = assign_nearest(xn, centroids, 1)
    return like(x, centroids), like(x, np.ascontiguousarray(idx[:, 0]))
