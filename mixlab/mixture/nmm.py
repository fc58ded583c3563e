"""Neural mixture models with EM (Tissera et al., "Neural Mixture Models with Expectation-Maximization
for End-to-end Deep Clustering") as pure functions.

The last layer of a network gives K *relevance scores* ``a_ij = g_theta(x_i)_j`` (§4). The
paper turns them into a mixture:

* §5 (unnumbered equation): normalize each cluster's score over the batch, without affine
  parameters, ``a*_ij = (a_ij - mu_j) / sigma_j`` with the *biased* batch variance;
  :func:`normalize_relevance`.
* §5: the cluster density ``h_j(x_i) = f(x_i | z=j) = sigmoid(a*_ij / gamma)``, gamma > 1 keeps the
  sigmoid in its near-linear region for every score the normalization allows (|a*| <= (n-1)/sqrt(n),
  Shiffler [26]; 11.23 for n = 128, hence gamma = 5; sqrt(n-1) with the biased sigma); :func:`log_density`, :func:`score_bound`,
  :func:`gamma_for_batch`. Because the batch mean of ``a*`` is 0, the batch mean of h is ~0.5
  for every cluster (Eq. 3), so by Monte Carlo (Eq. 4) every density has the same integral 0.5 V
  (Eq. 5): :func:`batch_mean_density`, :func:`monte_carlo_integral`.
* §6: with a uniform prior 1/K the posterior ``h_j / sum_k h_k`` is *approximated* by
  ``p_ij = softmax(a*_i)_j``; :func:`log_posterior` (``kind="density_ratio"`` gives the exact ratio).
* Eq. 6: the EM loss ``-(1/n) sum_i sum_j p_ij log h_j(x_i)`` with p held constant (E-step = forward,
  M-step = one gradient step); Eq. 7 adds ``log h_j(x_i^tr)`` of the transformed image, weighted by
  the *original* image's posterior; :func:`em_loss`.
* Eq. 8: the consistency step ``KL(p_i || q_i)``, q the posterior of the transformed image, p
  constant; :func:`consistency_loss`.
* §8.3 (Fig. 8): the images with the highest relevance per cluster (:func:`topk_by_relevance`) and an
  input synthesized by gradient ascent on one final-layer neuron before its activation
  (Simonyan et al. [47]; :func:`synthesize_input`).

Everything is computed in float32 and in log space (``logsigmoid``, ``log_softmax``).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .em import kl_categorical

__all__ = ["normalize_relevance", "score_bound", "gamma_for_batch", "log_density", "density",
           "log_posterior", "em_loss", "consistency_loss", "batch_mean_density",
           "monte_carlo_integral", "topk_by_relevance", "synthesize_input"]


def normalize_relevance(a: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor, Tensor]:
    """§5: ``a*_ij = (a_ij - mu_j) / sigma_j`` over the batch (rows), per cluster (columns).

    ``mu_j = (1/n) sum_i a_ij``, ``sigma_j^2 = (1/n) sum_i (a_ij - mu_j)^2`` (biased, as in the
    paper), ``eps`` added to the variance for stability. No affine parameters: §8.1 notes that a
    learnt scale/shift "can reverse the normalization effect". Differentiable through mu and sigma.

    Returns ``(a_star [n, K], mu [K], var [K])``.
    """
    a = a.float()
    mu = a.mean(0)
    var = a.var(0, unbiased=False)
    return (a - mu) / torch.sqrt(var + eps), mu, var


def score_bound(n: int, biased: bool = True) -> float:
    """Largest possible |a*_ij| after normalizing n values (one outlier, the rest equal).

    With the biased sigma of the §5 equation it is sqrt(n-1) (11.27 for n = 128); the paper quotes
    Shiffler's [26] (n-1)/sqrt(n) = 11.23, which holds for the unbiased (n-1) std
    (``biased=False``). The difference is immaterial for choosing gamma."""
    return math.sqrt(n - 1) if biased else (n - 1) / math.sqrt(n)


def gamma_for_batch(n: int, gamma: float = 5.0, ref_batch: int = 128) -> float:
    """gamma scaled with the batch size so that ``score_bound(n) / gamma`` equals the paper's
    ``score_bound(128) / 5 = 2.25`` (§5: "gamma is dependent on the batch-size"; the paper only
    gives gamma = 5 for n = 128, so this linear-in-the-bound rule is mixlab's choice)."""
    return gamma * score_bound(n) / score_bound(ref_batch)


def log_density(a_star: Tensor, gamma: float) -> Tensor:
    """§5: ``log h_j(x_i) = log sigmoid(a*_ij / gamma)`` (also the joint f(x, z | theta), §6)."""
    return F.logsigmoid(a_star.float() / gamma)


def density(a_star: Tensor, gamma: float) -> Tensor:
    """§5: the cluster density ``h_j(x_i) = sigmoid(a*_ij / gamma)``."""
    return torch.sigmoid(a_star.float() / gamma)


def log_posterior(a_star: Tensor, gamma: float | None = None, kind: str = "softmax") -> Tensor:
    """§6: the E-step posterior ``log p(z=j | x_i)`` under the uniform prior 1/K.

    ``kind="softmax"`` (the paper): ``log_softmax(a*_i)``, its "ease of numerical optimization"
    approximation of ``h_j / sum_k h_k``. ``kind="density_ratio"``: that exact ratio,
    ``log h_j - logsumexp_k log h_k`` (needs ``gamma``).
    """
    if kind == "softmax":
        return F.log_softmax(a_star.float(), dim=-1)
    if kind == "density_ratio":
        if gamma is None:
            raise ValueError("kind='density_ratio' needs gamma")
        log_h = log_density(a_star, gamma)
        return log_h - torch.logsumexp(log_h, dim=-1, keepdim=True)
    raise ValueError(f"unknown posterior kind {kind!r}; choose softmax or density_ratio")


def em_loss(log_p: Tensor, log_h: Tensor, log_h_tr: Tensor | None = None) -> Tensor:
    """Eq. 6 (and Eq. 7 when ``log_h_tr`` is given): the negative EM objective of Eq. 1 for a batch,

        L = -(1/n) sum_i sum_j p_ij [log h_j(x_i) (+ log h_j(x_i^tr))],

    with the posterior ``p = exp(log_p)`` held constant ("Keeping p_ij s constant, we backpropagate
    this loss", §6): it is detached here, so no gradient reaches the posterior path.
    """
    p = log_p.detach().exp()
    ll = log_h if log_h_tr is None else log_h + log_h_tr
    return -(p * ll).sum(-1).mean()


def consistency_loss(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Eq. 8: ``(1/n) sum_i KL(p_i || q_i) = (1/n) sum_i sum_j p_ij log(p_ij / q_ij)``, with p (the
    original image's posterior) held constant as a soft label for q (the transformed image's)."""
    return kl_categorical(log_p.detach(), log_q).mean()


def batch_mean_density(h: Tensor) -> Tensor:
    """Eq. 3 / Table 1: ``(1/n) sum_i h_j(x_i)`` per cluster j, ``[K]`` (0.5 with normalization)."""
    return h.float().mean(0)


def monte_carlo_integral(h_fn: Callable[[Tensor], Tensor], low, high, n: int = 4096,
                         generator: torch.Generator | None = None) -> Tensor:
    """Eq. 4: ``I_j ~= V (1/n) sum_i h_j(x_i)`` for x_i uniform in the box [low, high] (volume V).

    ``h_fn`` maps ``[n, m]`` points to ``[n, K]`` densities; returns ``[K]``. With the batch
    normalization and the near-linear sigmoid every I_j is ~0.5 V (Eq. 5) *when the batch is the
    uniform sample itself*; with running statistics from the data it measures how much of the box
    each density covers.
    """
    low = torch.as_tensor(low, dtype=torch.float32)
    high = torch.as_tensor(high, dtype=torch.float32)
    u = torch.rand(n, low.numel(), generator=generator)
    x = low + u * (high - low)
    volume = float(torch.prod(high - low))
    return volume * h_fn(x).float().mean(0)


def topk_by_relevance(scores: Tensor, k: int = 10) -> Tensor:
    """§8.3 / Fig. 8: for each cluster j the indices of the k samples with the highest relevance
    ``scores[:, j]``, best first; ``[K, k]``."""
    return scores.float().topk(min(k, scores.shape[0]), dim=0).indices.T.contiguous()


def synthesize_input(score_fn: Callable[[Tensor], Tensor], shape, *, steps: int = 200,
                     lr: float = 0.05, l2: float = 1e-3, seed: int = 0,
                     device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
    """§8.3 / Fig. 8: an input that maximizes a neuron by gradient ascent from random noise
    (Simonyan et al. [47]: ``argmax_I S(I) - l2 ||I - 0.5||^2``).

    ``score_fn`` maps a ``[1, *shape]`` image in [0, 1] to a scalar (or ``[1]``) response, e.g. the
    raw relevance ``a_ij`` of cluster j "before the activation" computed on the Sobel of the image.
    The image is parametrized as ``sigmoid(z)`` so that it stays in [0, 1] (mixlab's choice; the
    paper does not say how the input is constrained). Adam on z, ``steps`` steps. Returns
    ``(image [1, *shape], scores per step [steps])``.
    """
    g = torch.Generator().manual_seed(seed)
    z = (0.1 * torch.randn(1, *shape, generator=g)).to(device).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    trace = []
    for _ in range(steps):
        img = torch.sigmoid(z)
        s = score_fn(img).sum()
        obj = s - l2 * (img - 0.5).square().sum()
        opt.zero_grad(set_to_none=True)
        (-obj).backward()
        opt.step()
        trace.append(float(s.detach()))
    return torch.sigmoid(z).detach(), torch.tensor(trace)
