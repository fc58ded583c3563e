"""EM for a finite Gaussian mixture in R^m (full covariances), in log space.

The textbook case every method in mixlab generalises (NMM Eq. 1-2; SiamMM Eq. 2; the
teaching notebook ``notebooks/em_elbo_primer.py`` §1):

    p(x) = sum_k pi_k N(x | m_k, S_k).

E-step: q(k | x_n) = p(k | x_n) (Bayes' rule) through :func:`mixlab.mixture.em.posterior_and_elbo`,
so the posterior and the ELBO it attains are the *same code* MiCE uses (Eq. 8/10).
M-step: the closed-form maximiser of Q(theta | theta^t) = sum_n sum_k q_nk log[pi_k N(x_n | m_k, S_k)]
(NMM Eq. 1-2):

    pi_k = N_k / N,  m_k = sum_n q_nk x_n / N_k,  S_k = sum_n q_nk (x_n - m_k)(x_n - m_k)^T / N_k + reg I,

with N_k = sum_n q_nk. Inputs may be numpy or torch; outputs are float64, numpy or torch like the data
``x`` (torch: on x's device). This is classical EM with closed-form steps, so nothing here needs
autograd (the Gaussian densities are evaluated with numpy's LAPACK).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mixlab.mixture._kind import as_numpy, as_torch, like
from mixlab.mixture.em import posterior_and_elbo

__all__ = ["GMMParams", "gaussian_log_density", "gmm_log_joint", "gmm_e_step", "gmm_m_step", "gmm_em_step", "gmm_init", "gmm_fit"]


@dataclass
class GMMParams:
    """Mixture parameters: ``log_pi`` ``[K]``, ``means`` ``[K, m]``, ``covs`` ``[K, m, m]`` (float64,
    numpy or torch like the data they were fitted to)."""

    log_pi: torch.Tensor | np.ndarray
    means: torch.Tensor | np.ndarray
    covs: torch.Tensor | np.ndarray

    @property
    def K(self) -> int:
        return int(self.means.shape[0])

    def like(self, ref) -> GMMParams:
        """The same parameters, numpy or torch like ``ref`` (see :func:`mixlab.mixture._kind.like`)."""
        return GMMParams(like(ref, self.log_pi), like(ref, self.means), like(ref, self.covs))


def _points(x) -> torch.Tensor:
    """The data as a float64 tensor ``[N, m]`` (1-D data ``[N]`` as ``[N, 1]``)."""
    t = as_torch(x, torch.float64)
    return t[:, None] if t.ndim == 1 else t


def gaussian_log_density(x, means, covs):
    """log N(x_n | m_k, S_k) for every point and component: ``[N, K]``.

    ``x`` ``[N, m]`` (or ``[N]`` for 1-D data), ``means`` ``[K, m]``, ``covs`` ``[K, m, m]``.
    Uses a Cholesky factor: log N = -1/2 (m log 2pi + log|S| + ||L^{-1}(x - m)||^2).
    Returns float64, numpy or torch like ``x`` (computed in numpy: not differentiable).
    """
    xn, means, covs = as_numpy(_points(x)), as_numpy(means), as_numpy(covs)
    m = xn.shape[1]
    # numpy's LAPACK, not torch.linalg: for these tiny batched factorisations torch's threaded
    # kernels cost milliseconds per call on a busy 2-core machine, numpy's microseconds.
    L = np.linalg.cholesky(covs)  # [K, m, m]
    diff = xn[None, :, :] - means[:, None, :]  # [K, N, m]
    sol = np.linalg.solve(L, diff.transpose(0, 2, 1))  # [K, m, N]; L is triangular, solve is exact
    maha = (sol**2).sum(1)  # [K, N]
    logdet = 2.0 * np.log(np.diagonal(L, axis1=-2, axis2=-1)).sum(-1)  # [K]
    return like(x, (-0.5 * (m * math.log(2 * math.pi) + logdet[:, None] + maha)).T.copy())


def gmm_log_joint(x, params: GMMParams):
    """``(log_prior, log_lik)`` ``[N, K]``: log pi_k broadcast over points and log N(x_n | m_k, S_k)."""
    log_lik = gaussian_log_density(_points(x), params.means, params.covs)
    log_pi = as_torch(params.log_pi, device=log_lik.device)
    return like(x, log_pi.expand_as(log_lik)), like(x, log_lik)


def gmm_e_step(x, params: GMMParams):
    """E-step: ``(log_q [N, K], loglik [N])``, the exact posterior and log p(x_n)
    (= the ELBO at that posterior), via :func:`~mixlab.mixture.em.posterior_and_elbo`."""
    log_prior, log_lik = gmm_log_joint(x, params)
    return posterior_and_elbo(log_prior, log_lik)


def gmm_m_step(x, q, *, reg: float = 1e-6) -> GMMParams:
    """M-step: closed-form argmax of Q(theta | theta^t) for responsibilities ``q`` ``[N, K]``.

    ``reg`` is added to the diagonal of each covariance (mixlab's choice, keeps S_k positive
    definite when a component collapses onto a point); with ``reg = 0`` it is the exact maximiser.
    """
    xt = _points(x)
    q = as_torch(q, torch.float64, xt.device)
    Nk = q.sum(0).clamp_min(1e-300)  # [K]
    means = (q.T @ xt) / Nk[:, None]
    diff = xt[None, :, :] - means[:, None, :]  # [K, N, m]
    covs = torch.einsum("kn,kni,knj->kij", q.T, diff, diff) / Nk[:, None, None]
    covs = covs + reg * torch.eye(xt.shape[1], dtype=torch.float64, device=xt.device)
    return GMMParams(torch.log(Nk / q.shape[0]), means, covs).like(x)


def gmm_em_step(x, params: GMMParams, *, reg: float = 1e-6):
    """One EM iteration. Returns ``(new_params, mean_loglik)`` where ``mean_loglik`` is
    (1/N) sum_n log p(x_n | theta^t) under the *incoming* parameters (EM guarantees the next
    call's value is >= this one)."""
    xt = _points(x)
    log_q, ll = gmm_e_step(xt, params)
    return gmm_m_step(xt, log_q.exp(), reg=reg).like(x), like(x, ll.mean())


def gmm_init(x, K: int, *, seed: int = 0) -> GMMParams:
    """K distinct data points as means, the data covariance for every component, uniform weights."""
    xt = _points(x)
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(xt.shape[0], generator=g)[:K]
    cov = torch.atleast_2d(torch.cov(xt.T)) + 1e-6 * torch.eye(xt.shape[1], dtype=torch.float64, device=xt.device)
    log_pi = torch.full((K,), -math.log(K), dtype=torch.float64, device=xt.device)
    return GMMParams(log_pi, xt[idx].clone(), cov.expand(K, -1, -1).clone()).like(x)


def gmm_fit(x, K: int, *, iters: int = 50, seed: int = 0, reg: float = 1e-6, params: GMMParams | None = None):
    """Run ``iters`` EM iterations from :func:`gmm_init` (or ``params``).

    Returns ``(params, history)`` with ``history[t]`` the mean log-likelihood before iteration t
    and the last entry the mean log-likelihood of the returned parameters (length ``iters + 1``).
    """
    xt = _points(x)
    params = gmm_init(xt, K, seed=seed) if params is None else params
    history = []
    for _ in range(iters):
        params, ll = gmm_em_step(xt, params, reg=reg)
        history.append(float(ll))
    history.append(float(gmm_e_step(xt, params)[1].mean()))
    return params.like(x), history
