"""von Mises-Fisher (vMF) distributions on the unit sphere S^{d-1} (SiamMM §3, §4, App. C.1).

SiamMM Eq. 3-4: f(v | mu, kappa) = c_d(kappa) exp(kappa mu^T v) with

    c_d(kappa) = kappa^{d/2-1} / ((2 pi)^{d/2} I_{d/2-1}(kappa)),

I_nu the modified Bessel function of the first kind. The maximum-likelihood estimates
from (soft-)assigned unit vectors are (Eq. 5-7; Banerjee et al. 2005):

    r_k = sum_i p(k|v_i) v_i / sum_i p(k|v_i)            (5)
    mu_k = r_k / ||r_k||                                  (6)
    kappa_k = (||r_k|| d - ||r_k||^3) / (1 - ||r_k||^2)   (7)

and App. C.1 / Eq. 16 re-measures ||r_k|| after a PCA projection for kappa only.

Everything here accepts numpy arrays or torch tensors and returns the same kind. The
Bessel function is evaluated in float64 through ``scipy.special.ive`` (exponentially
scaled, so large kappa does not overflow), with an asymptotic fallback (Debye's uniform
expansion for large order, the leading power series for tiny kappa) wherever ``ive``
underflows (large d, small kappa), so log c_d(kappa) is finite for any d >= 1, kappa >= 0.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import gammaln, ive

from mixlab.mixture._kind import as_numpy, as_torch, float_dtype, like

__all__ = [
    "log_bessel_iv",
    "vmf_log_normalizer",
    "vmf_mean_resultant_length",
    "banerjee_kappa",
    "vmf_log_density",
    "vmf_mle",
    "pca_kappa",
    "pca_components",
    "vmf_sample",
]

_TINY = 1e-280  # below this, ive() is (close to) underflow: switch to asymptotics


# ----------------------------------------------------------------------------------------
# log I_nu(kappa), float64 numpy
# ----------------------------------------------------------------------------------------
def _log_iv_debye(nu: float, kappa: np.ndarray) -> np.ndarray:
    """Debye's uniform asymptotic expansion of log I_nu(nu z) (Abramowitz & Stegun 9.7.7),
    with the first three correction terms u_1..u_3; relative error O(nu^-4)."""
    z = kappa / nu
    s = np.sqrt(1.0 + z * z)
    t = 1.0 / s
    eta = s + np.log(z / (1.0 + s))
    t2 = t * t
    u1 = t * (3.0 - 5.0 * t2) / 24.0
    u2 = t2 * (81.0 - 462.0 * t2 + 385.0 * t2 * t2) / 1152.0
    u3 = t * t2 * (30375.0 - 369603.0 * t2 + 765765.0 * t2**2 - 425425.0 * t2**3) / 414720.0
    corr = 1.0 + u1 / nu + u2 / nu**2 + u3 / nu**3
    return nu * eta - 0.5 * np.log(2.0 * math.pi * nu) + 0.5 * np.log(t) + np.log(corr)


def log_bessel_iv(nu: float, kappa):
    """log I_nu(kappa) in float64 for real order ``nu`` and ``kappa >= 0`` (numpy or torch like ``kappa``).

    ``log(ive(nu, kappa)) + kappa`` where that is representable; otherwise (ive below
    1e-280, i.e. order large relative to kappa) the leading power series
    nu log(kappa/2) - log Gamma(nu+1) + log1p(kappa^2 / (4 (nu+1))) when
    kappa^2 / (4(nu+1)) < 1e-8 (next term ~1e-16 relative), else Debye's expansion
    (used only where nu is large, where it is accurate to ~nu^-4).
    """
    ref, kappa = kappa, as_numpy(kappa)
    nu = float(nu)
    if np.any(kappa < 0):
        raise ValueError("kappa must be >= 0")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        e = ive(nu, kappa)
        out = np.log(e) + kappa
        bad = ~(np.isfinite(e) & (e > _TINY))
        if np.any(bad):
            k = kappa[bad] if kappa.ndim else kappa
            x = k * k / (4.0 * (nu + 1.0))
            series = nu * np.log(k / 2.0) - gammaln(nu + 1.0) + np.log1p(x)
            debye = _log_iv_debye(nu, np.maximum(k, 1e-300)) if nu > 0 else series
            fix = np.where(x < 1e-8, series, debye)
            fix = np.where(k == 0, 0.0 if nu == 0 else -np.inf, fix)
            if kappa.ndim:
                out = out.copy()
                out[bad] = fix
            else:
                out = np.asarray(fix)
    return like(ref, out)


def _log_normalizer_np(d: int, kappa: np.ndarray) -> np.ndarray:
    nu = d / 2.0 - 1.0
    kappa = np.asarray(kappa, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        val = nu * np.log(kappa) - (d / 2.0) * math.log(2.0 * math.pi) - log_bessel_iv(nu, kappa)
    # kappa -> 0: the uniform density 1 / |S^{d-1}| = Gamma(d/2) / (2 pi^{d/2})
    log_uniform = gammaln(d / 2.0) - math.log(2.0) - (d / 2.0) * math.log(math.pi)
    return np.where(kappa == 0, log_uniform, val)


def _mean_resultant_np(d: int, kappa: np.ndarray) -> np.ndarray:
    """A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa) = E[mu^T v] = -d/dkappa log c_d(kappa)."""
    kappa = np.asarray(kappa, dtype=np.float64)
    nu = d / 2.0 - 1.0
    with np.errstate(invalid="ignore"):
        a = np.exp(log_bessel_iv(nu + 1.0, kappa) - log_bessel_iv(nu, kappa))
    return np.where(kappa == 0, 0.0, a)


class _LogNormalizer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kappa, d):
        ctx.d = d
        ctx.save_for_backward(kappa)
        return like(kappa, _log_normalizer_np(d, as_numpy(kappa)), kappa.dtype)

    @staticmethod
    def backward(ctx, grad):
        (kappa,) = ctx.saved_tensors
        return -grad * like(grad, _mean_resultant_np(ctx.d, as_numpy(kappa)), grad.dtype), None


def _array_or_float(kappa, out: np.ndarray):
    """A python float for a scalar ``kappa``, else the float64 array ``out``."""
    return out if isinstance(kappa, np.ndarray) or np.ndim(out) > 0 else float(out)


def _check_d(d) -> int:
    if int(d) != d or d < 1:
        raise ValueError(f"d={d} must be a positive integer (the ambient dimension)")
    return int(d)


def vmf_log_normalizer(d: int, kappa):
    """log c_d(kappa) of SiamMM Eq. 4 (the log of the vMF normalising constant on S^{d-1}).

        log c_d(kappa) = (d/2 - 1) log kappa - (d/2) log(2 pi) - log I_{d/2-1}(kappa),

    with log I via ``scipy.special.ive`` (log I = log ive + kappa) and asymptotic
    fallbacks, so it is finite for large d and kappa (e.g. d = 128, kappa = 1e4) and for
    kappa = 0 (the uniform density, log Gamma(d/2) - log 2 - (d/2) log pi).

    Args:
        d: ambient dimension (the sphere is S^{d-1} in R^d).
        kappa: concentration >= 0: python float (returns float), numpy array (returns
            float64 array) or torch tensor (returns a tensor of the same dtype/device,
            differentiable: d/dkappa log c_d = -A_d(kappa) = -I_{d/2}/I_{d/2-1}).
    """
    d = _check_d(d)
    if isinstance(kappa, torch.Tensor):
        return _LogNormalizer.apply(kappa, d)
    return _array_or_float(kappa, _log_normalizer_np(d, kappa))


def vmf_mean_resultant_length(d: int, kappa):
    """A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa): the expected cosine E[mu^T v] of a
    vMF(mu, kappa) sample, i.e. the population value of ||r|| in Eq. 5 (Eq. 7 inverts it
    approximately). Same input kinds as :func:`vmf_log_normalizer` (no gradient)."""
    a = _mean_resultant_np(_check_d(d), as_numpy(kappa))
    if isinstance(kappa, torch.Tensor):
        return like(kappa, a, kappa.dtype)
    return _array_or_float(kappa, a)


def vmf_log_density(x, mu, kappa):
    """log f(x | mu, kappa) = log c_d(kappa) + kappa mu^T x (SiamMM Eq. 3).

    Args:
        x: ``[N, d]`` unit vectors.
        mu: ``[d]`` (returns ``[N]``) or ``[K, d]`` unit mean directions (returns ``[N, K]``).
        kappa: scalar, or ``[K]`` with ``mu`` ``[K, d]``.

    numpy in -> numpy out; torch in -> torch out (differentiable in x, mu and kappa).
    """
    if isinstance(x, torch.Tensor) or isinstance(mu, torch.Tensor):
        x = as_torch(x)
        mu, kappa = (as_torch(a, x.dtype, x.device) for a in (mu, kappa))
    else:
        x, mu, kappa = (as_numpy(a) for a in (x, mu, kappa))
    dots = x @ mu.T if mu.ndim == 2 else x @ mu
    return vmf_log_normalizer(x.shape[-1], kappa) + kappa * dots


# ----------------------------------------------------------------------------------------
# Maximum likelihood (Eq. 5-7) and the PCA variant (Eq. 16)
# ----------------------------------------------------------------------------------------
_CHUNK = 8192  # rows per block of the sparse accumulation: memory O(chunk * H * d), not O(N * K)


def _resultants(x, weights, labels, K, normalize, index=None, chunk_size: int = _CHUNK):
    """Mean resultant vectors r (Eq. 5) in float64 torch on x's device. Returns (r, squeeze, xt), xt the
    (normalised) points in float64.

    Hard ``labels`` and sparse ``weights`` [N, H] with ``index`` [N, H] (the H components each point is
    spread over) are accumulated as per-cluster sufficient statistics (sum_i w_ik x_i and sum_i w_ik,
    blocks of ``chunk_size`` points), in O(N d + K d) memory; a dense [N, K] ``weights`` is a matrix
    product. Both give the same r up to float summation order."""
    xt = as_torch(x, torch.float64).detach()
    if xt.ndim != 2:
        raise ValueError(f"x must be [N, d], got shape {tuple(xt.shape)}")
    if normalize:
        xt = torch.nn.functional.normalize(xt, dim=1)
    N, d = xt.shape
    if labels is not None and weights is not None:
        raise ValueError("pass either weights or labels, not both")
    if index is not None and (weights is None or labels is not None):
        raise ValueError("index needs weights [N, H] (the weight of each listed component)")
    squeeze = False
    if labels is not None:
        lab = as_torch(labels, torch.int64, xt.device).reshape(-1)
        if lab.numel() != N:
            raise ValueError(f"labels has {lab.numel()} entries for {N} points")
        if K is None:
            K = int(lab.max().item()) + 1 if N else 0
        if N and (lab.min() < 0 or lab.max() >= K):
            raise ValueError(f"labels must lie in 0..K-1 (K={K})")
        sums = torch.zeros(K, d, dtype=torch.float64, device=xt.device).index_add_(0, lab, xt)
        mass = torch.bincount(lab, minlength=K).to(torch.float64)
        return sums / mass.clamp_min(1e-300)[:, None], squeeze, xt
    if index is not None:
        idx = as_torch(index, torch.int64, xt.device)
        w = as_torch(weights, torch.float64, xt.device).detach()
        if idx.ndim != 2 or idx.shape[0] != N or w.shape != idx.shape:
            raise ValueError(f"weights and index must both be [N={N}, H], got {tuple(w.shape)} and {tuple(idx.shape)}")
        if K is None:
            K = int(idx.max().item()) + 1 if N else 0
        if N and (idx.min() < 0 or idx.max() >= K):
            raise ValueError(f"index must lie in 0..K-1 (K={K})")
        if torch.any(w < 0):
            raise ValueError("weights must be non-negative")
        sums = torch.zeros(K, d, dtype=torch.float64, device=xt.device)
        mass = torch.zeros(K, dtype=torch.float64, device=xt.device)
        step = max(1, int(chunk_size))
        for s in range(0, N, step):
            wc, ic = w[s:s + step], idx[s:s + step].reshape(-1)
            sums.index_add_(0, ic, (wc[:, :, None] * xt[s:s + step, None, :]).reshape(-1, d))
            mass.index_add_(0, ic, wc.reshape(-1))
        return sums / mass.clamp_min(1e-300)[:, None], squeeze, xt
    if weights is None:
        w = torch.ones(N, 1, dtype=torch.float64, device=xt.device)
        squeeze = True
    else:
        w = as_torch(weights, torch.float64, xt.device).detach()
        if w.ndim == 1:
            w = w[:, None]
            squeeze = True
        if w.ndim != 2 or w.shape[0] != N:
            raise ValueError(f"weights must be [N] or [N, K] with N={N}, got {tuple(w.shape)}")
        if torch.any(w < 0):
            raise ValueError("weights must be non-negative")
    r = (w.T @ xt) / w.sum(0).clamp_min(1e-300)[:, None]  # [K, d]; 0 for empty clusters
    return r, squeeze, xt


def banerjee_kappa(R, d: int, eps: float = 1e-7):
    """Banerjee et al.'s closed-form approximation to the root of A_d(kappa) = R (SiamMM Eq. 7 / Eq. 16):
    kappa = (R d - R^3) / (1 - R^2), R clamped to [0, 1 - eps]. Torch in, torch out; numpy otherwise."""
    if not isinstance(R, torch.Tensor):
        return banerjee_kappa(torch.from_numpy(as_numpy(R)), d, eps).numpy()
    R = R.clamp(0.0, 1.0 - eps)
    return (R * d - R**3) / (1.0 - R * R)


def vmf_mle(x, weights=None, *, labels=None, index=None, K: int | None = None, normalize: bool = True,
            eps: float = 1e-7, chunk_size: int = _CHUNK):
    """vMF maximum likelihood (SiamMM Eq. 5-7, Banerjee et al. 2005 approximation).

        r = sum_i w_i x_i / sum_i w_i,  mu = r / ||r||,  kappa = ||r|| (d - ||r||^2) / (1 - ||r||^2).

    Args:
        x: ``[N, d]`` points on the unit sphere (re-normalised when ``normalize``).
        weights: None (one component from all points), ``[N]`` non-negative weights (one
            component), or ``[N, K]`` soft responsibilities p(k|x_i) (K components).
        labels: alternatively, hard assignments ``[N]`` in 0..K-1 (one-hot responsibilities;
            ``K`` defaults to max+1), accumulated per cluster without an [N, K] matrix.
        index: with ``weights`` ``[N, H]``: sparse responsibilities, point i gives weight
            ``weights[i, h]`` to component ``index[i, h]`` (e.g. its H nearest centroids) and 0 to
            the others; accumulated in blocks of ``chunk_size`` points, O(N d + K d) memory.
        eps: ||r|| is clamped to at most 1 - eps so identical points give a large finite kappa.

    Returns:
        ``(mu, kappa)``: ``[d]`` and scalar for a single component, ``[K, d]`` and ``[K]``
        otherwise; numpy in -> numpy out, torch in -> torch out (x's float dtype; its device).
        A component with zero total weight gets mu = 0 and kappa = 0 (uniform).
    """
    r, squeeze, _ = _resultants(x, weights, labels, K, normalize, index, chunk_size)
    R = r.norm(dim=1)
    mu = torch.where(R[:, None] > 0, r / R.clamp_min(1e-300)[:, None], torch.zeros_like(r))
    kappa = banerjee_kappa(R, r.shape[1], eps)
    if squeeze:
        mu, kappa = mu[0], kappa[0]
    dtype = float_dtype(x)
    return like(x, mu, dtype), like(x, kappa, dtype)


def pca_components(x, n_components: int, *, center: bool = False):
    """Top ``n_components`` principal directions of ``x`` ``[N, d]`` as rows ``[n, d]``:
    eigenvectors of the second moment x^T x / N (default), or of the covariance when
    ``center``; float64, numpy or torch like ``x``. Used by :func:`pca_kappa`."""
    xt = as_torch(x, torch.float64).detach()
    if center:
        xt = xt - xt.mean(0, keepdim=True)
    cov = xt.T @ xt / max(xt.shape[0], 1)
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    n = min(int(n_components), xt.shape[1])
    return like(x, evecs[:, -n:].flip(-1).T.contiguous())


def pca_kappa(
    x,
    weights=None,
    *,
    labels=None,
    index=None,
    K: int | None = None,
    n_components: int = 150,
    components=None,
    center: bool = False,
    normalize: bool = True,
    eps: float = 1e-7,
    chunk_size: int = _CHUNK,
):
    """Concentration with PCA-reduced dimensionality (SiamMM App. C.1, Eq. 16).

    Embedding coordinates are correlated, so the nominal d in Eq. 7 overstates the
    effective dimension. App. C.1 projects the mean resultant vector r_k onto the first
    d^PCA principal components and re-measures its length there:

        kappa_k^PCA = (||r_k^PCA|| d^PCA - ||r_k^PCA||^3) / (1 - ||r_k^PCA||^2)     (16)

    Choices (the paper leaves them implicit): the principal directions are those of the
    embeddings ``x`` themselves, from their *uncentred* second moment x^T x / N (or pass
    ``components`` ``[d^PCA, d]`` with orthonormal rows, e.g. fitted once per epoch).
    Uncentred because r_k is uncentred: on nearly parallel embeddings (an untrained
    network, or one tight vMF) the shared mean direction carries most of ||r_k||, and
    centring would project it away (5,000 draws of a vMF with kappa = 2000 in d = 128:
    Eq. 7 gives 1994, Eq. 16 with 64 centred components 1.3, uncentred 990). ``center``
    keeps the covariance variant as an option. r_k^PCA = P r_k is an orthogonal projection of the *uncentred* r_k (Eq. 5
    in the original space), so ||r_k^PCA|| <= ||r_k|| ("reserves more than 80% of the
    norm" with 150 of 256 components in the paper); d^PCA = ``n_components`` (150 in
    the paper), capped at d, in which case this equals :func:`vmf_mle`'s kappa.
    Only kappa is reduced; the mean directions stay those of :func:`vmf_mle`.

    Args: as :func:`vmf_mle` (``labels`` and ``weights`` + ``index`` in O(N d + K d) memory), plus
    ``n_components``, ``components``, ``center``.

    Returns:
        kappa: scalar or ``[K]``, same kind (numpy/torch) as ``x``.
    """
    r, squeeze, xt = _resultants(x, weights, labels, K, normalize, index, chunk_size)
    if components is None:
        P = pca_components(xt, n_components, center=center)
    else:
        P = as_torch(components, torch.float64, r.device).detach()
        if P.ndim != 2 or P.shape[1] != r.shape[1]:
            raise ValueError(f"components must be [n, d={r.shape[1]}], got {tuple(P.shape)}")
    kappa = banerjee_kappa((r @ P.T).norm(dim=1), P.shape[0], eps)
    return like(x, kappa[0] if squeeze else kappa, float_dtype(x))


# ----------------------------------------------------------------------------------------
# Sampling (Wood 1994)
# ----------------------------------------------------------------------------------------
def vmf_sample(mu, kappa: float, n: int, *, seed: int | None = 0, generator: np.random.Generator | None = None):
    """Draw ``n`` samples from vMF(mu, kappa) on S^{d-1} by Wood's (1994) rejection sampler.

    The cosine w = mu^T v is drawn by rejection from a Beta((d-1)/2, (d-1)/2) envelope,
    the tangent direction uniformly on the sphere orthogonal to mu; v = w mu + sqrt(1-w^2) t.
    Works for d >= 2 and any kappa >= 0 (kappa = 0 is uniform). Deterministic in ``seed``
    (or pass a numpy ``generator``). ``mu`` ``[d]`` numpy or torch; returns ``[n, d]`` of
    the same kind (float64 numpy, or mu's dtype/device for torch).
    """
    m = as_numpy(mu)
    if m.ndim != 1 or m.shape[0] < 2:
        raise ValueError("mu must be a [d] vector with d >= 2")
    kappa = float(kappa)
    if kappa < 0:
        raise ValueError("kappa must be >= 0")
    m = m / np.linalg.norm(m)
    d = m.shape[0]
    rng = generator if generator is not None else np.random.default_rng(seed)

    b = (d - 1.0) / (2.0 * kappa + math.sqrt(4.0 * kappa * kappa + (d - 1.0) ** 2))
    x0 = (1.0 - b) / (1.0 + b)
    c = kappa * x0 + (d - 1.0) * math.log(1.0 - x0 * x0)
    w = np.empty(n)
    filled = 0
    while filled < n:
        m_try = max(16, int(1.3 * (n - filled)))
        z = rng.beta((d - 1.0) / 2.0, (d - 1.0) / 2.0, size=m_try)
        ww = (1.0 - (1.0 + b) * z) / (1.0 - (1.0 - b) * z)
        u = rng.random(m_try)
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = kappa * ww + (d - 1.0) * np.log(1.0 - x0 * ww) - c >= np.log(u)
        acc = ww[ok][: n - filled]
        w[filled : filled + acc.size] = acc
        filled += acc.size
    t = rng.standard_normal((n, d))
    t -= (t @ m)[:, None] * m[None, :]
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    v = w[:, None] * m[None, :] + np.sqrt(np.clip(1.0 - w * w, 0.0, None))[:, None] * t
    return like(mu, v, float_dtype(mu)) if isinstance(mu, torch.Tensor) else v
