"""TCC ("You Never Cluster Alone", Shen et al. 2021) as small pure functions.

Only the supplementary material is available; equation numbers below
refer to it. The model has one categorical cluster variable per image with a learned inference
model ``q(k|x)``, sampled with the Gumbel-softmax trick, that links two tracks:

* **Instance level** (Eq. 1-2): the ELBO

      E_eps[log p(i | x, c)] - KL(q(k|x) || p(k)),   p(k) = 1/K,   c = GumbelSoftmax(log q, eps),

  where ``log p(i|x,c)`` is a contrastive (instance-discrimination) log-likelihood of image ``i``
  whose query depends on both ``x`` and the sampled cluster ``c`` (§B.2.1).
* **Cluster level** (Eq. 6, bottom): ``r_k = L2Normalize(sum_i pi_i(k) f(x_i))`` for each view;
  ``r_k`` of one view is contrasted with ``r_k`` of the other, the other clusters as negatives.
  Eq. 6 (top) is the CC alternative ``r_k = [pi_1(k), ..., pi_B(k)]``.

What the supplement fixes and what mixlab chooses is spelled out in each docstring ("mixlab's
choice"). Everything is in log space where probabilities are involved.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mixlab.mixture.em import kl_categorical

__all__ = [
    "sample_gumbel", "gumbel_softmax", "kl_to_uniform", "assignment_log_probs", "instance_query",
    "instance_elbo", "cluster_representations", "cluster_contrastive_loss",
    "marginal_entropy", "assignment_kl", "simplex_assign_temperature", "cluster_contrast_temperature",
    "concrete_temperature",
]


def sample_gumbel(shape, *, generator: torch.Generator | None = None, device=None,
                  dtype=torch.float32, eps: float = 1e-10) -> Tensor:
    """Standard Gumbel noise ``-log(-log U)``, ``U ~ Uniform(0, 1)``, from torch's RNG."""
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    neg_log_u = (-torch.log(u.clamp_min(eps))).clamp_min(eps)
    return -torch.log(neg_log_u)


def gumbel_softmax(log_q: Tensor, temperature: float, *, noise: Tensor | None = None,
                   hard: bool = False) -> Tensor:
    """Relaxed one-hot sample ``c = softmax((log q + eps) / lambda)`` (Jang et al.; Maddison et al.),
    the reparametrization of ``E_{q(k|x)}`` in supplement Eq. (2).

    Args:
        log_q: ``[B, K]`` log q(k|x) (any logits that differ from it by a per-row constant give the
            same sample).
        temperature: lambda > 0. As lambda -> 0 the sample tends to the one-hot ``argmax(log q +
            eps)``, whose law is exactly q (the Gumbel-max trick); large lambda flattens it.
        noise: ``[B, K]`` Gumbel noise (see :func:`sample_gumbel`); ``None`` means *no noise*, the
            deterministic variant ``softmax(log q / lambda)``.
        hard: straight-through estimator: the forward value is the one-hot argmax, the gradient is
            that of the soft sample.

    Returns:
        ``[B, K]`` rows on the simplex (differentiable in ``log_q``).
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    z = log_q if noise is None else log_q + noise
    soft = torch.softmax(z / temperature, dim=-1)
    if not hard:
        return soft
    one_hot = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return one_hot + soft - soft.detach()


def kl_to_uniform(log_q: Tensor) -> Tensor:
    """KL(q(k|x) || p(k)) with the uniform surrogate prior p(k) = 1/K (supplement §A, Eq. 2):
    ``sum_k q_k log q_k + log K = log K - H(q)``, per row ``[B]``."""
    K = log_q.shape[-1]
    return kl_categorical(log_q, torch.full_like(log_q, -math.log(K)))


def assignment_kl(log_q: Tensor, kind: str = "marginal") -> Tensor:
    """The KL term of the instance ELBO, per row ``[B]``, in one of two forms.

    * ``"sample"``: KL(q(k|x_i) || 1/K) per image, supplement Eq. (2) as written. Averaged over
      the data it is E_x KL(q || U) = I(x; k) + KL(q_bar || U): besides balancing the clusters it
      charges every nat of information the assignment carries about the image, so with beta = 1
      it pushes q towards the uniform (the flat head the audit measured).
    * ``"marginal"``: KL(q_bar || 1/K) with q_bar = mean_i q(k|x_i) over the batch (the same for
      every row): the uniform surrogate prior then constrains only what it can describe, the
      cluster proportions, and leaves I(x; k) to the likelihood terms.
    """
    if kind == "sample":
        return kl_to_uniform(log_q)
    if kind == "marginal":
        log_mean = torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(log_q.shape[0])
        return kl_to_uniform(log_mean).expand(log_q.shape[0])
    raise ValueError(f"kind={kind!r}: choose 'marginal' or 'sample'")


def simplex_assign_temperature(K: int, confidence: float = 0.99, negatives: int | None = None) -> float:
    """The largest temperature t of q(k|x) = softmax(<mu_k, h>/t) at which q can reach
    ``confidence`` on one cluster: h = mu_k with the K prototypes a regular simplex (cosine
    -1/(K-1) between them, the MMD initialisation), i.e. solving
    1 / (1 + n exp(-(K/(K-1)) / t)) = confidence with n = ``negatives`` (K - 1 by default):

        t = (K / (K-1)) / log(n confidence / (1 - confidence)).

    A larger t caps max_k q below ``confidence`` whatever the network does (t = 1, K = 10: 0.45)."""
    negatives = K - 1 if negatives is None else negatives
    if K < 2 or negatives < 1 or not 0 < confidence < 1:
        raise ValueError(f"K={K} must be >= 2, negatives={negatives} >= 1 and confidence={confidence} in (0, 1)")
    return (K / (K - 1)) / math.log(negatives * confidence / (1 - confidence))


def cluster_contrast_temperature(K: int, confidence: float = 0.99) -> float:
    """tau_c of :func:`cluster_contrastive_loss` by the rule of t (:func:`simplex_assign_temperature`):
    the largest tau_c at which the positive can reach ``confidence`` against its 2K - 2 negatives
    when each view's r_k form a regular simplex (K = 10: 0.148; CC's tau_c = 1 caps it at 0.12)."""
    return simplex_assign_temperature(K, confidence, negatives=2 * K - 2)


def concrete_temperature(K: int) -> float:
    """Gumbel-softmax temperature lambda = 1/(K-1): the largest at which the Concrete density of
    K categories is log-convex (Maddison, Mnih & Teh, "The Concrete Distribution", ICLR 2017,
    Proposition 1(d)), so the relaxed sample puts its mass near the vertices, not the centre."""
    if K < 2:
        raise ValueError(f"K={K} must be >= 2")
    return 1.0 / (K - 1)


def assignment_log_probs(h: Tensor, prototypes: Tensor, temperature: float) -> Tensor:
    """Inference model ``log q(k|x) = log_softmax_k(<mu_k, h> / t)`` with L2-normalized embedding
    ``h`` ``[B, d]`` and prototypes ``mu`` ``[K, d]`` (normalized here). mixlab's choice: the main
    paper's exact parametrization of q is not in the supplement; a cosine softmax over learned
    prototypes is the "prototypes {mu_k} query the relevance pi(k)" reading of §B.2.2."""
    mu = F.normalize(prototypes, dim=-1)
    return torch.log_softmax(F.normalize(h, dim=-1) @ mu.t() / temperature, dim=-1)


def instance_query(c: Tensor, prototypes: Tensor, v: Tensor, alpha: float) -> Tensor:
    """Query of the instance likelihood that depends on both x and c (§B.2.1):
    ``z = L2Normalize(sum_k c_k mu_k + alpha * v)``, ``c`` ``[B, K]``, ``mu`` ``[K, d]`` (normalized
    here), ``v`` ``[B, d]`` the L2-normalized instance vector of x. mixlab's choice of form;
    ``alpha`` weighs the image against its cluster (``alpha -> inf``: plain InfoNCE on v,
    ``alpha = 0``: the query sees only c, the CC/VIB special case of Eq. 5)."""
    mu = F.normalize(prototypes, dim=-1)
    return F.normalize(c @ mu + alpha * F.normalize(v, dim=-1), dim=-1)


def instance_elbo(log_lik: Tensor, log_q: Tensor, kl_weight: float = 1.0) -> Tensor:
    """Instance-level ELBO of supplement Eq. (2) per row ``[B]``:
    ``log p(i|x,c) - beta * KL(q(k|x) || 1/K)`` with one Gumbel sample standing in for E_eps.
    ``beta = 1`` is the ELBO (Eq. 1); Eq. 5 reads it as the information bottleneck with beta = 1."""
    return log_lik - kl_weight * kl_to_uniform(log_q)


def cluster_representations(pi: Tensor, features: Tensor | None = None, kind: str = "tcc") -> Tensor:
    """Cluster representations of one view (supplement Eq. 6), ``[K, d]`` (TCC) or ``[K, B]`` (CC).

    * ``"tcc"``: ``r_k = L2Normalize(sum_i pi_i(k) f(x_i))`` with ``pi`` ``[B, K]`` the (relaxed)
      assignments and ``features`` ``[B, d]``. The weights are *not* normalized over i (§B.2.2).
      A sum over the batch: permuting the batch (rows of ``pi`` and ``features`` together) leaves
      every r_k unchanged.
    * ``"cc"``: ``r_k = [pi_1(k), ..., pi_B(k)]`` (CC, Li et al.), L2-normalized as CC's cosine
      similarity does. Its coordinates are indexed by batch position, so permuting the batch
      permutes the coordinates of r_k: the vector changes ("absolutely different vectors").
      Inner products between two views permuted *the same way* are unchanged; r_k compared
      with the r_k of another batch or another ordering is not.
    """
    if kind == "tcc":
        if features is None:
            raise ValueError("kind='tcc' needs features")
        return F.normalize(pi.t() @ features, dim=-1)
    if kind == "cc":
        return F.normalize(pi.t(), dim=-1)
    raise ValueError(f"kind={kind!r}: choose 'tcc' or 'cc'")


def cluster_contrastive_loss(r1: Tensor, r2: Tensor, temperature: float) -> Tensor:
    """Cluster-level contrast of two views' representations ``[K, d]`` (TCC's "cluster augmentation
    equivalents"): for each of the 2K cluster vectors, the same cluster of the other view is the
    positive and the other 2K - 2 clusters (both views) are the negatives (NT-Xent). Returns the
    mean of ``-log p(positive)`` over the 2K anchors. mixlab's choice: the exact normalizer is
    in the main paper; this is the symmetric form CC uses for its cluster head."""
    K = r1.shape[0]
    r = torch.cat([r1, r2], dim=0)
    sim = r @ r.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * K, dtype=torch.bool, device=r.device), float("-inf"))
    target = torch.cat([torch.arange(K, 2 * K), torch.arange(0, K)]).to(r.device)
    return F.cross_entropy(sim, target)


def marginal_entropy(log_q: Tensor) -> Tensor:
    """Entropy H(mean_i q(k|x_i)) of the batch-marginal assignment (scalar). An optional
    anti-collapse term (CC uses it); not part of TCC's objective as the supplement states it."""
    log_mean = torch.logsumexp(log_q, dim=0) - math.log(log_q.shape[0])
    return -(log_mean.exp() * log_mean).sum()
