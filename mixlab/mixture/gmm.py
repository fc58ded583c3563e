"""EM for a finite Gaussian mixture in R^m (full covariances), in log space.

The textbook case every method in mixlab generalises (NMM Eq. 1-2; SiamMM Eq. 2; the
teaching notebook ``notebooks/em_elbo_primer.py`` §1):

    p(x) = sum_k pi_k N(x | m_k, S_k).

E-step: q(k | x_n) = p(k | x_n) (Bayes' rule) through :func:`mixlab.mixture.em.posterior_and_elbo`,
so the posterior and the ELBO it attains are the *same code* MiCE uses (Eq. 8/10).
M-step: the closed-form maximiser of Q(theta | theta^t) = sum_n sum_k q_nk log[pi_k N(x_n | m_k, S_k)]
(NMM Eq. 1-2):

    pi_k = N_k / N,  m_k = sum_n q_nk x_n / N_k,  S_k = sum_n q_nk (x_n - m_k)(x_n - m_k)^T / N_k + reg I,

with N_k = sum_n q_nk. Inputs may be numpy or torch; outputs are float64 CPU torch tensors. This is
classical EM with closed-form steps, so nothing here needs autograd (the Gaussian densities are
evaluated with numpy's LAPACK).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mixlab.mixture.em import posterior_and_elbo

__all__ = ["GMMParams", "gaussian_log_density", "gmm_log_joint", "gmm_e_step", "gmm_m_step", "gmm_em_step", "gmm_init", "gmm_fit"]


@dataclass
class GMMParams:
    """Mixture parameters: ``log_pi`` ``[K]``, ``means`` ``[K, m]``, ``covs`` ``[K, m, m]`` (float64 torch)."""

    log_pi: torch.Tensor
    means: torch.Tensor
    covs: torch.Tensor

    @property
    def K(self) -> int:
        return int(self.means.shape[0])


def _t(x) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.to(torch.float64)
    return t[:, None] if t.ndim == 1 else t  # 1-D data -> [N, 1]


def gaussian_log_density(x, means, covs) -> torch.Tensor:
    """log N(x_n | m_k, S_k) for every point and component: ``[N, K]``.

    ``x`` ``[N, m]`` (or ``[N]`` for 1-D data), ``means`` ``[K, m]``, ``covs`` ``[K, m, m]``.
    Uses a Cholesky factor: log N = -1/2 (m log 2pi + log|S| + ||L^{-1}(x - m)||^2).
    Returns a float64 torch tensor (computed in numpy: not differentiable).
    """
    x = _t(x).numpy()
    means = torch.as_tensor(means, dtype=torch.float64).numpy()
    covs = torch.as_tensor(covs, dtype=torch.float64).numpy()
    m = x.shape[1]
    # numpy's LAPACK, not torch.linalg: for these tiny batched factorisations torch's threaded
    # kernels cost milliseconds per call on a busy 2-core machine, numpy's microseconds.
    L = np.linalg.cholesky(covs)  # [K, m, m]
    diff = x[None, :, :] - means[:, None, :]  # [K, N, m]
    sol = np.linalg.solve(L, diff.transpose(0, 2, 1))  # [K, m, N]; L is triangular, solve is exact
    maha = (sol**2).sum(1)  # [K, N]
    logdet = 2.0 * np.log(np.diagonal(L, axis1=-2, axis2=-1)).sum(-1)  # [K]
    return torch.from_numpy((-0.5 * (m * math.log(2 * math.pi) + logdet[:, None] + maha)).T.copy())


def gmm_log_joint(x, params: GMMParams) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log_prior, log_lik)`` ``[N, K]``: log pi_k broadcast over points and log N(x_n | m_k, S_k)."""
    x = _t(x)
    log_lik = gaussian_log_density(x, params.means, params.covs)
    return params.log_pi.expand_as(log_lik), log_lik


def gmm_e_step(x, params: GMMParams) -> tuple[torch.Tensor, torch.Tensor]:
    """E-step: ``(log_q [N, K], loglik [N])``, the exact posterior and log p(x_n)
    (= the ELBO at that posterior), via :func:`~mixlab.mixture.em.posterior_and_elbo`."""
    log_prior, log_lik = gmm_log_joint(x, params)
    return posterior_and_elbo(log_prior, log_lik)


def gmm_m_step(x, q, *, reg: float = 1e-6) -> GMMParams:
    """M-step: closed-form argmax of Q(theta | theta^t) for responsibilities ``q`` ``[N, K]``.

    ``reg`` is added to the diagonal of each covariance (mixlab's choice, keeps S_k positive
    definite when a component collapses onto a point); with ``reg = 0`` it is the exact maximiser.
    """
    x = _t(x)
    q = torch.as_tensor(q, dtype=torch.float64)
    Nk = q.sum(0).clamp_min(1e-300)  # [K]
    means = (q.T @ x) / Nk[:, None]
    diff = x[None, :, :] - means[:, None, :]  # [K, N, m]
    covs = torch.einsum("kn,kni,knj->kij", q.T, diff, diff) / Nk[:, None, None]
    covs = covs + reg * torch.eye(x.shape[1], dtype=torch.float64)
    return GMMParams(torch.log(Nk / q.shape[0]), means, covs)


def gmm_em_step(x, params: GMMParams, *, reg: float = 1e-6) -> tuple[GMMParams, torch.Tensor]:
    """One EM iteration. Returns ``(new_params, mean_loglik)`` where ``mean_loglik`` is
    (1/N) sum_n log p(x_n | theta^t) under the *incoming* parameters (EM guarantees the next
    call's value is >= this one)."""
    log_q, ll = gmm_e_step(x, params)
    return gmm_m_step(x, log_q.exp(), reg=reg), ll.mean()


def gmm_init(x, K: int, *, seed: int = 0) -> GMMParams:
    """K distinct data points as means, the data covariance for every component, uniform weights."""
    x = _t(x)
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(x.shape[0], generator=g)[:K]
    cov = torch.atleast_2d(torch.cov(x.T)) + 1e-6 * torch.eye(x.shape[1], dtype=torch.float64)
    return GMMParams(torch.full((K,), -math.log(K), dtype=torch.float64), x[idx].clone(), cov.expand(K, -1, -1).clone())


def gmm_fit(x, K: int, *, iters: int = 50, seed: int = 0, reg: float = 1e-6, params: GMMParams | None = None):
    """Run ``iters`` EM iterations from :func:`gmm_init` (or ``params``).

    Returns ``(params, history)`` with ``history[t]`` the mean log-likelihood before iteration t
    and the last entry the mean log-likelihood of the returned parameters (length ``iters + 1``).
    """
    x = _t(x)
    params = gmm_init(x, K, seed=seed) if params is None else params
    history = []
    for _ in range(iters):
        params, ll = gmm_em_step(x, params, reg=reg)
        history.append(float(ll))
    history.append(float(gmm_e_step(x, params)[1].mean()))
    return params, history
