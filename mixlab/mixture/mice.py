"""MiCE's model and its scalable EM (Tsai, Li & Zhu, ICLR 2021), as pure functions in log space.

Notation (paper §4-5): for image x_n with surrogate label y_n (its index),

* gating embedding g_n ∈ R^d and fixed gating prototypes ω_k (Eq. 4):
  p(z_n = k | x_n) = softmax_k(ω_kᵀ g_n / κ);
* student embeddings f_{n,k} and teacher embeddings v_{y_n,k} ∈ R^d, one per expert k, and expert
  prototypes μ_k (Eq. 6): Φ(x_n, y_n, k) = exp(v_{y_n,k}ᵀ (f_{n,k} + μ_k) / τ) -- an
  *instance-level* term v·f and a *class-level* term v·μ;
* the expert p(y_n | x_n, k) = Φ / Z (Eq. 5), with Z estimated from a queue q ∈ R^{ν×K×d} of past
  teacher embeddings (Eq. 9): Ẑ = Φ(x_n, y_n, k) + Σ_i exp(q_{i,k}ᵀ (f_{n,k} + μ_k) / τ);
* approximate posterior (Eq. 10) and ELBO (Eq. 11), computed by
  :func:`mixlab.mixture.posterior_and_elbo` from ``log_prior`` and ``log_lik = log Φ - log Ẑ``;
* the end-of-epoch analytical update of μ (Eq. 13, App. A.2) from hard assignments (A1).

All embeddings and prototypes live on the unit sphere; every function here L2-normalizes its
inputs itself, so raw network outputs may be passed. Shapes: B batch, K experts, d dimensions,
ν queue length.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mixlab.mixture.em import posterior_and_elbo
from mixlab.mixture.queue_lse import queue_logsumexp

__all__ = [
    "gating_log_prior",
    "expert_logits",
    "expert_log_likelihood",
    "mice_objective",
    "hard_assignments",
    "assignment_sums",
    "analytical_mu",
]


def gating_log_prior(g: Tensor, omega: Tensor, kappa: float, uniform: bool = False) -> Tensor:
    """Gating function, Eq. (4): log p(z = k | x) = log_softmax_k(ω_kᵀ g / κ), ``[B, K]``.

    Args:
        g: ``[B, d]`` gating embeddings (normalized here).
        omega: ``[K, d]`` gating prototypes (normalized here; MiCE fixes them to the MMD centers).
        kappa: gating temperature κ.
        uniform: Assumption A3 (κ -> ∞): the prior is exactly 1/K for every input (ablation (1) of
            Tab. 3); returned as a constant ``-log K`` that carries no gradient to g or ω.
    """
    K = omega.shape[0]
    if uniform:
        return torch.full((g.shape[0], K), -math.log(K), dtype=g.dtype, device=g.device)
    logits = F.normalize(g, dim=-1) @ F.normalize(omega, dim=-1).T / kappa
    return torch.log_softmax(logits, dim=-1)


def expert_logits(f: Tensor, v: Tensor, mu: Tensor | None, queue: Tensor | None, tau: float,
                  class_level: bool = True) -> Tensor:
    """Logits of the K experts, ``[B, K, 1 + ν]``: entry 0 is the positive log Φ (Eq. 6), entries
    1..ν the queue terms of Ẑ (Eq. 9).

        logits[n, k, 0]   = v_{y_n,k}ᵀ (f_{n,k} + μ_k) / τ           (log Φ, Eq. 6)
        logits[n, k, 1+i] = q_{i,k}ᵀ   (f_{n,k} + μ_k) / τ           (queue terms of Ẑ, Eq. 9)

    Args:
        f: ``[B, K, d]`` student embeddings f_{n,k}.
        v: ``[B, K, d]`` teacher embeddings v_{y_n,k} (no gradient should flow into them).
        mu: ``[K, d]`` expert prototypes μ_k; ignored when ``class_level=False``.
        queue: ``[ν, K, d]`` past teacher embeddings, or ``None`` for Assumption A2 (the model is
            self-normalized, Z ≡ c; then only the positive column is returned).
        tau: expert temperature τ.
        class_level: include the class-level term v·μ (Eq. 6); ``False`` is Assumption A5
            (instance-level only, ablation (4) of Tab. 3).
    """
    pos, key = _expert_terms(f, v, mu, tau, class_level)
    if queue is None:
        return pos[..., None]
    return torch.cat([pos[..., None], torch.einsum("ikd,bkd->bki", F.normalize(queue, dim=-1), key)], dim=-1)


def _expert_terms(f: Tensor, v: Tensor, mu: Tensor | None, tau: float,
                  class_level: bool) -> tuple[Tensor, Tensor]:
    """The positive column ``[B, K]`` of :func:`expert_logits` and the ``[B, K, d]`` key
    (f_{n,k} + μ_k)/τ the queue terms are products with (1/τ scales the key, not the products)."""
    f = F.normalize(f, dim=-1)
    v = F.normalize(v, dim=-1)
    key = f + F.normalize(mu, dim=-1).unsqueeze(0) if class_level else f  # f_{n,k} + μ_k, [B, K, d]
    key = key / tau
    return (v * key).sum(-1), key


def expert_log_likelihood(f: Tensor, v: Tensor, mu: Tensor | None, queue: Tensor | None, tau: float,
                          class_level: bool = True) -> Tensor:
    """log p̂(y_n | x_n, k) = log Φ(x_n, y_n, k) - log Ẑ(x_n, k), Eq. (5) with Eq. (6) and Eq. (9),
    ``[B, K]``, computed as ``logits[..., 0] - logaddexp(logits[..., 0], log Σ_i exp(queue terms))``
    with the queue sum streamed by :func:`mixlab.mixture.queue_lse.queue_logsumexp` (never forming Φ
    nor the ``[B, K, ν]`` logits).

    With ``queue=None`` (Assumption A2, Z ≡ c) it returns log Φ, i.e. the constant c is taken as 1;
    a constant shifts every expert alike and changes neither the posterior (Eq. 10) nor Eq. (13).
    Arguments as in :func:`expert_logits`.
    """
    pos, key = _expert_terms(f, v, mu, tau, class_level)
    if queue is None:
        return pos
    return pos - torch.logaddexp(pos, queue_logsumexp(key, F.normalize(queue, dim=-1)))


def mice_objective(f: Tensor, v: Tensor, g: Tensor, mu: Tensor, omega: Tensor, queue: Tensor | None, *,
                   tau: float, kappa: float, uniform_prior: bool = False, class_level: bool = True) -> dict:
    """One MiCE E-step and the ELBO it attains for a batch.

    Returns a dict of ``[B, K]`` tensors ``log_prior`` (Eq. 4), ``log_lik`` (Eq. 5/6/9), ``log_q``
    (approximate posterior, Eq. 10) and the ``[B]`` tensor ``elbo`` (Eq. 11). The training loss is
    ``-elbo.mean()`` (the per-sample form of Eq. 12, divided by N).

    The ELBO at the posterior of Eq. (10) equals ``logsumexp_k(log_prior + log_lik)``: the KL gap of
    Eq. (7) vanishes there. Its gradient w.r.t. (θ, ψ, μ) is the M-step gradient with q held fixed,
    because ∂ELBO/∂q = 0 at the posterior (on the simplex); so back-propagating through ``elbo``
    equals the paper's Algorithm 1, which back-propagates Σ q (log gating + log experts - log q).
    """
    log_prior = gating_log_prior(g, omega, kappa, uniform=uniform_prior)
    log_lik = expert_log_likelihood(f, v, mu, queue, tau, class_level)
    log_q, elbo = posterior_and_elbo(log_prior, log_lik)
    return {"log_prior": log_prior, "log_lik": log_lik, "log_q": log_q, "elbo": elbo}


def hard_assignments(log_q: Tensor) -> Tensor:
    """Assumption A1: ẑ_n = argmax_k q(k | x_n, y_n), ``[B]`` int64."""
    return log_q.argmax(dim=-1)


def assignment_sums(v: Tensor, z_hat: Tensor, n_clusters: int) -> tuple[Tensor, Tensor]:
    """The sufficient statistics of Eq. (13) for one batch: μ̂_k = Σ_{n: ẑ_n = k} v_{y_n,k}.

    Args:
        v: ``[B, K, d]`` teacher embeddings (expert k's own embedding is used for cluster k; under
            Assumption A4 they coincide) or ``[B, d]`` shared embeddings.
        z_hat: ``[B]`` hard assignments (A1).

    Returns:
        ``(sums [K, d], counts [K])``; add these up over the epoch (and over processes) before
        calling :func:`analytical_mu`.
    """
    v = F.normalize(v, dim=-1)
    one_hot = F.one_hot(z_hat, n_clusters).to(v.dtype)                  # [B, K]
    if v.dim() == 2:
        sums = one_hot.T @ v
    else:
        sums = torch.einsum("bk,bkd->kd", one_hot, v)
    return sums, one_hot.sum(0)


def analytical_mu(sums: Tensor, counts: Tensor, prev_mu: Tensor, empty_mu: str = "zero") -> tuple[Tensor, Tensor]:
    """Analytical update of the expert prototypes, Eq. (13) (derivation App. A.2, Eq. 14-16):

        μ_k = μ̂_k / ||μ̂_k||_2,   μ̂_k = Σ_{n: ẑ_n = k} v_{y_n,k}.

    It maximises the ELBO in μ_k under A1 (hard q) and A2 (self-normalized Φ) subject to
    ||μ_k|| = 1; under A3-A4 it is the M-step of spherical k-means (Theorem 4). A cluster that
    received no point (``counts[k] == 0``), or whose sum vanishes, has no maximiser (the ELBO
    under A1 does not depend on μ_k). ``empty_mu="zero"`` (default, what the authors' code does:
    it normalizes the zero sum to zero) sets μ_k = 0: the class-level term v·μ_k of Eq. 6 is then
    neutral for that expert, so points can return to it on their instance term and the next Eq. 13
    re-estimates μ_k; ``"keep"`` keeps ``prev_mu[k]`` (normalized), a stale prototype that keeps
    repelling the points it no longer fits, so the cluster tends to stay empty.

    Returns:
        ``(mu [K, d], empty [K] bool)``.
    """
    if empty_mu not in ("zero", "keep"):
        raise ValueError(f"empty_mu={empty_mu!r}: choose 'zero' or 'keep'")
    fill = F.normalize(prev_mu.to(sums.dtype), dim=-1) if empty_mu == "keep" else torch.zeros_like(sums)
    norm = sums.norm(dim=-1, keepdim=True)
    empty = (counts <= 0) | (norm.squeeze(-1) <= 1e-12)
    new = sums / norm.clamp_min(1e-12)
    return torch.where(empty.unsqueeze(-1), fill, new), empty
