"""E-step and evidence lower bound (ELBO) of a finite mixture, in log space.

The model is a mixture over a discrete latent cluster ``k`` given an input ``x`` and an
observation ``y``:

    p(y | x) = sum_k p(k | x) p(y | x, k),

with a *prior* (MiCE's gating network) ``log p(k|x)`` and a per-cluster *likelihood*
(MiCE's experts) ``log p(y|x,k)``. For any variational distribution ``q(k)`` over the K
clusters (MiCE Eq. 7, Eq. 11):

    ELBO(q) = E_q[log p(y|x,k)] - KL(q || p(k|x))
            = sum_k q(k) [log p(k|x) + log p(y|x,k) - log q(k)]
            = log p(y|x) - KL(q || p(k|y,x))          <= log p(y|x),

with equality exactly at the posterior q = p(k|y,x) (MiCE Eq. 8; Eq. 10 when the
likelihood uses the queue estimate Z-hat of Eq. 9). In MiCE the "likelihood" is the
log of the self-normalised score Phi / Z-hat (Eq. 9-11), so it need not be a normalised
density in y; the identities above hold for any real ``log_lik``.

All functions take ``[B, K]`` tensors (torch; numpy arrays are accepted and returned as
numpy) and reduce over the last axis. Everything stays in log space (``logsumexp``,
``log_softmax``), so very negative or very large scores do not overflow.
"""

from __future__ import annotations

import torch

from mixlab.mixture._kind import as_torch, first_numpy, like

__all__ = ["posterior_and_elbo", "elbo", "kl_categorical", "log_marginal"]


def _xlogy_terms(log_q: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """sum_k q_k * value_k with the convention 0 * anything = 0 (q_k = 0 where log_q = -inf)."""
    q = log_q.exp()
    # mask *before* multiplying so that 0 * inf never forms (no NaN in forward or backward)
    value = torch.where(q > 0, value, torch.zeros_like(value))
    return (q * value).sum(dim=-1)


def log_marginal(log_prior, log_lik):
    """log p(y|x) = logsumexp_k [log p(k|x) + log p(y|x,k)], shape ``[B]``."""
    ref = first_numpy(log_prior, log_lik)
    return like(ref, torch.logsumexp(as_torch(log_prior) + as_torch(log_lik), dim=-1))


def posterior_and_elbo(log_prior, log_lik):
    """Exact E-step: posterior over clusters and the ELBO it attains.

    MiCE Eq. 8 (posterior, Bayes' rule) and Eq. 10 (the same with the queue estimate
    Z-hat of Eq. 9 folded into ``log_lik``); the ELBO of Eq. 7 / Eq. 11 evaluated at that
    posterior equals the log marginal likelihood, because the KL gap vanishes.

    Args:
        log_prior: ``[B, K]`` log p(k|x), normalised over K (the gating output).
        log_lik: ``[B, K]`` log p(y|x,k) (MiCE: log Phi(x, y, k) - log Z-hat(x, k), i.e.
            possibly unnormalised scores).

    Returns:
        ``(log_q, elbo)``: ``log_q = log_softmax(log_prior + log_lik)`` ``[B, K]`` and
        ``elbo = logsumexp(log_prior + log_lik)`` ``[B]``. Differentiable; detach
        ``log_q`` yourself for a classical EM M-step with q held fixed.
    """
    ref = first_numpy(log_prior, log_lik)
    log_joint = as_torch(log_prior) + as_torch(log_lik)
    lse = torch.logsumexp(log_joint, dim=-1)
    return like(ref, log_joint - lse.unsqueeze(-1)), like(ref, lse)


def elbo(log_q, log_prior, log_lik):
    """ELBO of an arbitrary variational distribution q (MiCE Eq. 7; Eq. 11 with Z-hat).

        ELBO(q) = sum_k q_k [log p(k|x) + log p(y|x,k) - log q_k]
                = E_q[log p(y|x,k)] - KL(q || p(k|x)).

    It is <= ``log_marginal(log_prior, log_lik)`` with gap exactly
    ``kl_categorical(log_q, log_posterior)``; equality at ``log_q`` from
    :func:`posterior_and_elbo`. Entries with q_k = 0 contribute 0.

    Args:
        log_q: ``[B, K]`` log q(k), normalised over K (may contain -inf).
        log_prior, log_lik: ``[B, K]`` as in :func:`posterior_and_elbo`.

    Returns:
        ``[B]`` ELBO per row.
    """
    log_q_t = as_torch(log_q)
    value = as_torch(log_prior) + as_torch(log_lik) - log_q_t
    return like(first_numpy(log_q, log_prior, log_lik), _xlogy_terms(log_q_t, value))


def kl_categorical(log_q, log_p):
    """KL(q || p) = sum_k q_k (log q_k - log p_k) over the last axis, ``[B]``.

    Both arguments are normalised log-probabilities; terms with q_k = 0 are 0 and a
    q_k > 0 where p_k = 0 gives +inf.
    """
    log_q_t = as_torch(log_q)
    return like(first_numpy(log_q, log_p), _xlogy_terms(log_q_t, log_q_t - as_torch(log_p)))
