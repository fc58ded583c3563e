"""Centers of the Max-Mahalanobis distribution (MMD): MiCE's fixed gating prototypes.

MiCE (§5.2, Appendix B, Algorithm 2, following Pang et al. 2018/2020) fixes the K gating
prototypes omega to K unit vectors in R^d with *maximal mutual distance*: the smallest
possible largest pairwise inner product. For K <= d + 1 the optimum is the regular
simplex, whose K vertices all have pairwise inner product exactly -1/(K-1) (the sum of
the K unit vectors is 0, so sum_{i != j} <w_i, w_j> = -K, which forces every pair to the
common value -1/(K-1) at the min-max). Algorithm 2 is not an iterative optimiser: it is a
closed-form, Gram-Schmidt-like construction of that simplex,

    omega_1 = e_1;  for i = 2..K:  omega_ij = -[1/(K-1) + omega_i^T omega_j] / omega_jj  (j < i)
                                   omega_ii = sqrt(1 - ||omega_i||^2),

which puts the simplex in a lower-triangular layout inside the first K-1 coordinates.
:func:`mmd_centers` runs Algorithm 2 exactly and then (by default) applies a seeded
random rotation of R^d, so the prototypes are not axis-aligned; any rotation keeps the
inner products, hence the optimality. ``seed=None`` returns Algorithm 2's own layout.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.linalg import solve_triangular

__all__ = ["mmd_centers", "mmd_algorithm2"]


def _check(K: int, d: int) -> None:
    if int(K) != K or K < 1:
        raise ValueError(f"K={K} must be a positive integer")
    if int(d) != d or d < 1:
        raise ValueError(f"d={d} must be a positive integer")
    if K > d + 1:
        raise ValueError(
            f"K={K} MMD prototypes need K <= d+1 (d={d}); raise the embedding dimension to at least K-1"
        )


def mmd_algorithm2(K: int, d: int) -> np.ndarray:
    """MiCE Appendix B, Algorithm 2, verbatim, in float64: ``[K, d]`` with omega_1 = e_1.

    Row i only uses coordinates 0..i (lower-triangular). The K vertices of the simplex span
    K - 1 dimensions, so the last row's diagonal entry is exactly 0 in exact arithmetic (its
    first K - 1 coordinates already have unit norm); Algorithm 2's sqrt(1 - ||w||^2) gives
    sqrt(rounding error) ~ 1e-8 there, which breaks sum_k w_k = 0 by as much, so it is set to 0
    (for K = d + 1 that coordinate lies outside R^d anyway).
    """
    _check(K, d)
    w = np.zeros((K, max(d, K)), dtype=np.float64)
    w[0, 0] = 1.0
    if K == 1:
        return w[:, :d]
    c = 1.0 / (K - 1)
    for i in range(1, K):
        # The inner loop over j (lines 2-4) is forward substitution in the lower-triangular
        # system W[:i, :i] w_i = -c 1, solved here in one call (same arithmetic order).
        w[i, :i] = solve_triangular(w[:i, :i], np.full(i, -c), lower=True)
        if i < K - 1:  # the last row's diagonal is exactly 0 (see above)
            w[i, i] = math.sqrt(max(0.0, 1.0 - float(w[i] @ w[i])))
    assert not w[:, d:].any()
    return w[:, :d]


def _random_rotation(d: int, seed: int) -> np.ndarray:
    """A Haar-random orthogonal d x d matrix (QR of a Gaussian with sign fix), seeded."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))[None, :]


def mmd_centers(
    K: int,
    d: int,
    *,
    seed: int | None = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    steps: int | None = None,
    lr: float | None = None,
) -> torch.Tensor:
    """K maximal-mutual-distance unit vectors in R^d (MiCE Algorithm 2, Appendix B).

    Returns ``[K, d]`` rows of unit norm with pairwise inner product exactly -1/(K-1)
    (the regular simplex, the exact optimum of max_{i != j} <w_i, w_j> on the sphere for
    K <= d+1). Computed in float64 by :func:`mmd_algorithm2`, then rotated by a Haar-random
    orthogonal matrix drawn from ``seed`` (deterministic in ``seed``; ``seed=None`` keeps
    Algorithm 2's layout with omega_1 = e_1). K = 1 gives a single unit vector.

    ``steps`` and ``lr`` are accepted for compatibility with iterative (gradient-descent)
    MMD solvers and ignored: Algorithm 2 is closed form and already exact.

    Raises:
        ValueError: if K > d + 1 (no K equiangular unit vectors at -1/(K-1) exist).
    """
    del steps, lr
    w = mmd_algorithm2(K, d)
    if seed is not None:
        w = w @ _random_rotation(d, seed).T
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    return torch.as_tensor(w, dtype=dtype, device=device)
