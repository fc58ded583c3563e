"""Helpers of the teaching notebook ``notebooks/em_elbo_primer.py``: numerical certificates that
report their slack, and the small experiments its figures draw (EM traces of a Gaussian mixture,
the error of Banerjee's kappa, the KL-to-uniform decomposition, the relaxed TCC bound).

Everything is built on :mod:`mixlab.mixture`, so the primer certifies the functions the methods
train with. No training state, CPU float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy.optimize import brentq, linear_sum_assignment

from mixlab.mixture import banerjee_kappa, elbo, gmm, vmf_mean_resultant_length
from mixlab.mixture.tcc import gumbel_softmax, kl_to_uniform
from mixlab.utils import io

__all__ = ["CertificateFailed", "Certificates", "EMTrace", "em_trace", "stopping_iteration", "exact_kappa",
           "banerjee_relative_error", "ellipse", "match_components", "kl_to_uniform_decomposition",
           "relaxed_instance_bound"]


class CertificateFailed(AssertionError):
    """A numerical certificate of the primer did not hold."""


@dataclass
class Certificates:
    """The primer's checks. ``equal`` certifies ``|gap| <= tol``; ``at_most`` certifies
    ``lhs <= rhs + tol`` elementwise and reports the *slack* ``min(rhs - lhs)`` (negative = violated),
    never a clamped zero. Every check is written to ``path`` (JSON) as it runs."""

    path: Path | None = None
    rows: dict = field(default_factory=dict)

    def _record(self, name: str, kind: str, value: float, tol: float, passed: bool, note: str) -> None:
        self.rows[name] = {"kind": kind, "value": value, "tol": tol, "passed": passed}
        if self.path is not None:
            io.write_json(self.path, self.rows)
        print(f"{'ok  ' if passed else 'FAIL'} {name:<66s} {note}")
        if not passed:
            raise CertificateFailed(f"{name}: {note}")

    def equal(self, name: str, gap, tol: float) -> float:
        """Certify that the largest ``|gap|`` is at most ``tol``; returns it."""
        value = float(np.max(np.abs(np.asarray(torch.as_tensor(gap).detach(), dtype=np.float64))))
        passed = bool(np.isfinite(value) and value <= tol)
        self._record(name, "equal", value, tol, passed, f"|gap| = {value:.2e}   (tol {tol:.1e})")
        return value

    def at_most(self, name: str, lhs, rhs, tol: float = 0.0) -> float:
        """Certify ``lhs <= rhs + tol`` everywhere; returns the slack ``min(rhs - lhs)``."""
        diff = np.asarray(torch.as_tensor(rhs).detach(), dtype=np.float64) - np.asarray(torch.as_tensor(lhs).detach(), dtype=np.float64)
        value = float(np.min(diff))
        passed = bool(np.isfinite(value) and value >= -tol)
        self._record(name, "at_most", value, tol, passed, f"slack = {value:+.2e}   (may dip to -{tol:.1e})")
        return value

    def table(self):
        """The checks as a pandas DataFrame (one row per check)."""
        import pandas as pd

        return pd.DataFrame.from_dict(self.rows, orient="index").rename_axis("check").reset_index()


@dataclass
class EMTrace:
    """One EM run of a Gaussian mixture. ``params[t]`` is theta^t (t = 0..T), ``log_q[t]`` the E-step
    posterior under theta^t, ``loglik[t]`` = l(theta^t)/N, ``elbo_here[t]`` = ELBO(q^t, theta^t)/N and
    ``elbo_next[t]`` = ELBO(q^t, theta^{t+1})/N (t = 0..T-1)."""

    params: list
    log_q: list
    loglik: np.ndarray
    elbo_here: np.ndarray
    elbo_next: np.ndarray

    @property
    def kl_next(self) -> np.ndarray:
        """KL(q^t || p(k | x, theta^{t+1})) per point: l(theta^{t+1}) - ELBO(q^t, theta^{t+1})."""
        return self.loglik[1:] - self.elbo_next


def _mean_step(x, params: gmm.GMMParams, log_q: torch.Tensor, eta: float) -> gmm.GMMParams:
    """Generalised M-step on the means only: m_k <- m_k + eta (mbar_k - m_k), weights and covariances
    fixed. It is the gradient step m_k + eta S_k grad_{m_k} Q / N_k, and raises Q iff 0 <= eta <= 2
    (Q is a concave quadratic in m_k with its maximum at the weighted mean mbar_k)."""
    mbar = gmm.gmm_m_step(x, log_q.exp(), reg=0.0).means
    return gmm.GMMParams(params.log_pi, params.means + eta * (mbar - params.means), params.covs)


def em_trace(x, K: int, iters: int, *, seed: int = 0, reg: float = 0.0, params: gmm.GMMParams | None = None,
             mean_step: float | None = None) -> EMTrace:
    """Run ``iters`` EM iterations (``gmm.gmm_e_step`` / ``gmm.gmm_m_step``) from ``gmm.gmm_init`` or
    ``params`` and record every quantity of the chain l(theta^{t+1}) >= ELBO(q^t, theta^{t+1}) >=
    ELBO(q^t, theta^t) = l(theta^t). ``mean_step`` replaces the M-step by :func:`_mean_step` (GEM)."""
    params = gmm.gmm_init(x, K, seed=seed) if params is None else params
    trace = EMTrace([params], [], [], [], [])
    for _ in range(iters):
        log_q, ll = gmm.gmm_e_step(x, params)
        new = gmm.gmm_m_step(x, log_q.exp(), reg=reg) if mean_step is None else _mean_step(x, params, log_q, mean_step)
        trace.loglik.append(float(ll.mean()))
        trace.elbo_here.append(float(elbo(log_q, *gmm.gmm_log_joint(x, params)).mean()))
        trace.elbo_next.append(float(elbo(log_q, *gmm.gmm_log_joint(x, new)).mean()))
        trace.log_q.append(log_q)
        trace.params.append(new)
        params = new
    trace.loglik.append(float(gmm.gmm_e_step(x, params)[1].mean()))
    trace.loglik, trace.elbo_here, trace.elbo_next = map(np.asarray, (trace.loglik, trace.elbo_here, trace.elbo_next))
    return trace


def stopping_iteration(loglik, tol: float) -> int:
    """The stopping rule "stop when one iteration raises l/N by less than ``tol``": the first t >= 1
    with loglik[t] - loglik[t-1] < tol, or len(loglik) - 1 if it never fires."""
    gains = np.diff(np.asarray(loglik))
    hits = np.flatnonzero(gains < tol)
    return int(hits[0] + 1) if hits.size else len(gains)


def exact_kappa(d: int, R: float) -> float:
    """The exact vMF maximum-likelihood kappa: the root of A_d(kappa) = R (SiamMM Eq. 7's target), 0 < R < 1."""
    if not 0.0 < R < 1.0:
        raise ValueError(f"mean resultant length R must lie in (0, 1), got {R}")
    return brentq(lambda k: float(vmf_mean_resultant_length(d, k)) - R, 1e-10, 1e8, xtol=1e-13, rtol=1e-14)


def banerjee_relative_error(d: int, R) -> np.ndarray:
    """|kappa_Banerjee(R) - kappa_exact(R)| / kappa_exact(R) for each R of a grid (Eq. 7 vs the root)."""
    R = np.atleast_1d(np.asarray(R, dtype=np.float64))
    exact = np.array([exact_kappa(d, float(r)) for r in R])
    return np.abs(banerjee_kappa(R, d) - exact) / exact


def ellipse(cov, n_std: float = 2.0) -> tuple[float, float, float]:
    """(width, height, angle in degrees) of the ``n_std``-standard-deviation ellipse of a 2x2 covariance
    (eigen-decomposition S = U diag(l) U^T: axes 2 n_std sqrt(l), rotated by U's first column)."""
    vals, vecs = np.linalg.eigh(np.asarray(cov, dtype=np.float64))
    w, h = 2 * n_std * np.sqrt(vals[::-1])
    return float(w), float(h), float(np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1])))


def match_components(reference, other) -> np.ndarray:
    """Permutation ``p`` with ``other[p]`` closest to ``reference`` (Hungarian on squared distances):
    label switching makes equally good EM solutions differ only by such a permutation."""
    a, b = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return linear_sum_assignment(cost)[1]


def kl_to_uniform_decomposition(log_q) -> dict:
    """The three terms of E_x KL(q(k|x) || U) = I(x; k) + KL(qbar || U) for a batch of posteriors
    ``log_q`` ``[B, K]`` (x uniform over the batch, qbar = mean_x q(k|x)): a per-sample KL to the
    uniform prior pushes down the mutual information as well as the marginal's imbalance."""
    log_q = torch.as_tensor(log_q, dtype=torch.float64)
    K = log_q.shape[-1]
    q = log_q.exp()
    qbar = q.mean(0)
    log_qbar = torch.log(qbar)
    mutual_info = (q * (log_q - log_qbar)).nan_to_num(0.0).sum(1).mean()
    return {"mean_kl": float(kl_to_uniform(log_q).mean()), "mutual_info": float(mutual_info),
            "marginal_kl": float((qbar * (log_qbar + math.log(K))).sum())}


def relaxed_instance_bound(log_q: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor], lam: float,
                           noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TCC's relaxed objective (supplement Eq. 2) per image: E_eps[f(c_lambda)] - KL(q || 1/K) with
    c_lambda = softmax((log q + eps)/lambda), estimated with the Gumbel ``noise`` ``[M, B, K]``.
    ``f`` maps ``[M, B, K]`` assignment vectors to ``[M, B]`` values of log p(i | x, c).
    Returns ``(mean [B], standard error [B])``."""
    c = gumbel_softmax(log_q.expand_as(noise), lam, noise=noise)
    values = f(c) - kl_to_uniform(log_q)
    return values.mean(0), values.std(0) / math.sqrt(noise.shape[0])
