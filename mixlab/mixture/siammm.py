"""SiamMM's losses as small pure functions (Wang, Huang & Liang, arXiv 2024).

Equation numbers refer to the paper. The vMF pieces (Eq. 3-7, 16) live in :mod:`mixlab.mixture.vmf`,
merging (Eq. 11) in :mod:`mixlab.mixture.merge`, k-means / nearest-centroid search in
:mod:`mixlab.mixture.kmeans`; this module holds what only SiamMM uses:

* :func:`instance_distance` / :func:`symmetric_instance_loss`: D of Eq. 1 and L_inst of Eq. 12;
* :func:`log_assignment_weights`: the soft-assignment weights pi_k(v) of Eq. 10 (log space);
* :func:`cluster_loss`: the negative log-likelihood L^H of Eq. 9 over the H nearest centroids;
* :func:`nce1_loss` (Eq. 14, negative centroids) and :func:`nce2_loss` (Eq. 15, negative instances);
* :func:`vmf_mixture_log_posterior`: log p(k | z) of the vMF mixture (Eq. 2-3), for ``predict``;
* :func:`vmf_mixture_em_step`: the epoch's E-step (H nearest centroids, Eq. 9-10) and M-step (mu of
  Eq. 5-6, kappa of Eq. 7 or 16 and its modes, mixing weights) on the clustered embeddings.

Every loss returns one value per sample (``[B]``); the caller averages. Everything is in log
space (``logsumexp``, ``log_softmax``), so kappa in the hundreds does not overflow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mixlab.mixture.contrastive import info_nce
from mixlab.mixture.kmeans import assign_nearest
from mixlab.mixture.vmf import pca_kappa, vmf_log_normalizer, vmf_mle

__all__ = [
    "INSTANCE_LOSSES",
    "instance_distance",
    "symmetric_instance_loss",
    "log_assignment_weights",
    "cluster_loss",
    "nce1_loss",
    "nce2_loss",
    "vmf_mixture_log_posterior",
    "KAPPA_MODES",
    "vmf_mixture_em_step",
]

KAPPA_MODES = ("mle", "pca", "shared", "constant")

INSTANCE_LOSSES = ("byol", "cosine", "infonce", "none")


def instance_distance(v: Tensor, target: Tensor, kind: str = "byol", tau: float = 0.2) -> Tensor:
    """D(v, stopgrad(v^m)) of Eq. 1, one value per sample ``[B]``.

    The paper calls D "a distance metric" and follows MoCo v3 / BYOL without negatives; it does
    not write D out. Choices (``kind``):

    * ``"byol"`` (mixlab's default): BYOL's normalised squared distance
      ||v/|v| - t/|t| ||^2 = 2 - 2 cos(v, t) (Grill et al. 2020), >= 0, = 0 iff aligned;
    * ``"cosine"``: SimSiam's negative cosine -cos(v, t) (Chen & He 2021); same gradient up to x2;
    * ``"infonce"``: MoCo v3's contrastive loss 2 tau * CE(v t^T / tau, diagonal) with the other
      samples of the batch as negatives (the "SiamMM w/ negative inst." row of Table 4, §6.2);
      tau = 0.2 as in MoCo v3.

    ``target`` is detached here (the stop-gradient of Eq. 1).
    """
    t = F.normalize(target.detach().float(), dim=1)
    v = F.normalize(v.float(), dim=1)
    if kind == "byol":
        return 2.0 - 2.0 * (v * t).sum(1)
    if kind == "cosine":
        return -(v * t).sum(1)
    if kind == "infonce":
        return -2.0 * tau * info_nce(v, t, None, tau)
    raise ValueError(f"unknown instance loss {kind!r}; choose one of: byol, cosine, infonce")


def symmetric_instance_loss(v1: Tensor, v2: Tensor, v1m: Tensor, v2m: Tensor, kind: str = "byol",
                            tau: float = 0.2) -> Tensor:
    """L_inst = L(v1, v2^m) + L(v2, v1^m) (Eq. 12), per sample ``[B]``.

    ``v1, v2``: online predictions g(E(x_1)), g(E(x_2)); ``v1m, v2m``: momentum-encoder outputs
    E_m(x_1), E_m(x_2) (stop-gradient applied). A sum of the two directions, as Eq. 12 writes it.
    """
    return instance_distance(v1, v2m, kind, tau) + instance_distance(v2, v1m, kind, tau)


def log_assignment_weights(v: Tensor, mu: Tensor, log_alpha: Tensor, tau: float) -> Tensor:
    """log pi_k(v) over the H nearest centroids (Eq. 10), ``[B, H]``:

        pi_k(v) = alpha_k exp(mu_k^T v / tau) / sum_{l in M} alpha_l exp(mu_l^T v / tau).

    Args:
        v: ``[B, d]`` embeddings (normalised here).
        mu: ``[B, H, d]`` unit mean directions of each sample's H nearest centroids (the set M).
        log_alpha: ``[B, H]`` log cluster-size measures log alpha_k (0 for the paper's alpha = 1;
            ``-inf`` masks a slot out).
        tau: temperature > 0 (paper: 0.02). Large tau spreads the weight evenly over the H
            centroids, small tau puts it on the closest; H = 1 gives pi = 1, the hard
            assignment of Eq. 8.

    The weights sum to one over the H slots (a ``log_softmax``).
    """
    v = F.normalize(v.float(), dim=-1)
    sim = torch.einsum("bhd,bd->bh", mu.float(), v)
    return torch.log_softmax(log_alpha.float() + sim / tau, dim=1)


def cluster_loss(v: Tensor, mu: Tensor, kappa: Tensor, log_pi: Tensor,
                 log_normalizer: Tensor | None = None) -> Tensor:
    """The soft-assignment negative log-likelihood L^H of Eq. 9, per sample ``[B]``:

        L^H(v) = -log sum_{k in M} pi_k exp(kappa_k mu_k^T v)
               = -logsumexp_k (log pi_k + kappa_k mu_k^T v).

    Args:
        v: ``[B, d]`` embeddings (normalised here: the vMF lives on the sphere); the only
            argument that carries a gradient.
        mu: ``[B, H, d]`` mean directions mu-hat (Eq. 6) of the H nearest centroids (detached:
            "mu-hat and kappa-hat are fixed estimators and carry no gradient").
        kappa: ``[B, H]`` concentrations kappa-hat (Eq. 7 or Eq. 16; detached).
        log_pi: ``[B, H]`` log weights from :func:`log_assignment_weights` (detached by the
            caller or not; Eq. 9 does not say, see ``SiamMM.Config.pi_grad``).
        log_normalizer: optional ``[B, H]`` log c_d(kappa_k) (Eq. 4) added inside the sum, which
            makes L^H the exact mixture negative log-likelihood (Eq. 2-3) restricted to M. Eq. 9
            as written omits it (``None``); with equal kappa it only shifts the loss.

    With H = 1 (pi = 1) this is -kappa_A mu_A^T v, the hard-assignment loss of Eq. 8.
    """
    v = F.normalize(v.float(), dim=-1)
    logits = kappa.detach().float() * torch.einsum("bhd,bd->bh", mu.detach().float(), v)
    logits = logits + log_pi.float()
    if log_normalizer is not None:
        logits = logits + log_normalizer.detach().float()
    return -torch.logsumexp(logits, dim=1)


def nce1_loss(v: Tensor, mu: Tensor, kappa: Tensor, pos: Tensor, neg: Tensor | None = None) -> Tensor:
    """L^nce1 of Eq. 14 (negative centroids, as in PCL), per sample ``[B]``:

        -log exp(k_+ mu_+^T v) / (exp(k_+ mu_+^T v) + sum_{A-} exp(k_- mu_-^T v)),

    i.e. a cross-entropy over the centroid logits kappa_k mu_k^T v with target A+ (the H = 1
    assignment).

    Args:
        v: ``[B, d]`` embeddings (normalised here).
        mu: ``[K, d]`` all mean directions; kappa: ``[K]`` (both detached).
        pos: ``[B]`` index A+ of each sample's centroid.
        neg: negatives A-: ``None`` = every other centroid (K - 1 negatives), or ``[B, M]``
            indices per sample (entries equal to ``pos`` are ignored).
    """
    v = F.normalize(v.float(), dim=-1)
    mu, kappa = mu.detach().float(), kappa.detach().float()
    if neg is None:
        logits = kappa[None, :] * (v @ mu.T)  # [B, K]
        return F.cross_entropy(logits, pos, reduction="none")
    l_pos = kappa[pos] * (v * mu[pos]).sum(1)  # [B]
    l_neg = kappa[neg] * torch.einsum("bmd,bd->bm", mu[neg], v)  # [B, M]
    l_neg = l_neg.masked_fill(neg == pos[:, None], float("-inf"))
    logits = torch.cat([l_pos[:, None], l_neg], dim=1)
    return -torch.log_softmax(logits, dim=1)[:, 0]


def nce2_loss(v: Tensor, mu: Tensor, kappa: Tensor, assign: Tensor, negatives: Tensor | None = None,
              neg_assign: Tensor | None = None) -> Tensor:
    """L^nce2 of Eq. 15 (negative instances outside the cluster), per sample ``[B]``:

        -log exp(k_A mu_A^T v+) / (exp(k_A mu_A^T v+) + sum_{v-} exp(k_A mu_A^T v-)),

    where A = A(x) is the sample's cluster and the v- are embeddings of samples *not* in C_A.

    Args:
        v: ``[B, d]`` positive embeddings v+ (normalised here).
        mu: ``[K, d]``, kappa: ``[K]`` (detached).
        assign: ``[B]`` cluster A of each v+.
        negatives: ``[M, d]`` candidate negatives with clusters ``neg_assign`` ``[M]``; default
            (mixlab's choice, the paper does not say where v- come from) the batch itself, v and
            ``assign``. Candidates in the sample's own cluster are masked out. A sample with no
            valid negative gets loss 0.
    """
    v = F.normalize(v.float(), dim=-1)
    mu, kappa = mu.detach().float(), kappa.detach().float()
    if negatives is None:
        negatives, neg_assign = v, assign
    else:
        negatives = F.normalize(negatives.float(), dim=-1)
    w = kappa[assign][:, None] * mu[assign]  # [B, d]: kappa_A mu_A
    l_pos = (w * v).sum(1)  # [B]
    l_neg = w @ negatives.T  # [B, M]
    l_neg = l_neg.masked_fill(neg_assign[None, :] == assign[:, None], float("-inf"))
    logits = torch.cat([l_pos[:, None], l_neg], dim=1)
    return -torch.log_softmax(logits, dim=1)[:, 0]


def vmf_mixture_log_posterior(z: Tensor, mu: Tensor, kappa: Tensor, log_weights: Tensor,
                              normalizer: bool = True, kappa_dim: int | None = None) -> Tensor:
    """log p(k | z) of the vMF mixture f(z) = sum_k pi_k c_d(kappa_k) exp(kappa_k mu_k^T z) (Eq. 2-4).

        log p(k | z) = log_softmax_k (log pi_k + log c_d(kappa_k) + kappa_k mu_k^T z)

    Args:
        z: ``[B, d]`` embeddings (normalised here); mu: ``[K, d]``; kappa: ``[K]``;
        log_weights: ``[K]`` log mixing weights log pi_k (e.g. log cluster fractions).
        normalizer: include log c_d(kappa_k) (the exact posterior); ``False`` drops it, which
            is what Eq. 9 does inside the loss.
        kappa_dim: the dimension d of c_d, the one kappa was estimated in: d^PCA for Eq. 16
            (kappa and c_d(kappa) belong to the same d-dimensional vMF); default z's dimension.
    Returns ``[B, K]`` log posteriors (rows logsumexp to 0).
    """
    z = F.normalize(z.float(), dim=-1)
    kappa = kappa.float()
    logits = kappa[None, :] * (z @ mu.float().T) + log_weights.float()[None, :]
    if normalizer:
        logc = vmf_log_normalizer(kappa_dim or z.shape[1], kappa.detach().double()).to(logits)
        logits = logits + logc[None, :]
    return torch.log_softmax(logits, dim=1)


def vmf_mixture_em_step(z: Tensor, centroids: Tensor, *, n_nearest: int = 5, mstep: str = "hard",
                        alpha_mode: str = "uniform", tau: float = 0.02, kappa_mode: str = "pca",
                        pca_dim: int = 150, kappa_const: float = 10.0,
                        kappa_max: float | None = None, chunk_size: int = 8192) -> dict[str, Tensor]:
    """One E/M step of the vMF mixture on L2-normalised embeddings ``z`` ``[N, d]`` (CPU).

    E-step: components without a nearest member are dropped (no MLE, Eq. 5); A(x) = the H nearest
    of the remaining K centroids (``assign``, ``[N, H]`` best first); p(k|v) is one-hot on the
    nearest (``mstep="hard"``) or pi_k(v) of Eq. 10 over A(x) (``"soft"``, with alpha_k uniform or
    the cluster's fraction of the data). M-step: mu_k (Eq. 5-6) and kappa_k by Eq. 7 (``"mle"``),
    Eq. 16 (``"pca"``), the mean of the Eq. 16 estimates (``"shared"``) or ``kappa_const``
    (``"constant"``), capped at ``kappa_max``; log_frac = log of each component's share of p(k|v).
    Returns float32 ``mu`` ``[K, d]`` (unit rows), ``kappa`` ``[K]``, ``log_frac`` ``[K]`` and ``assign``.

    Memory O(N d + N H + K d): the nearest-centroid search is exact and blocked (faiss), and p(k|v),
    which is zero outside A(x), is never formed as an ``[N, K]`` matrix: the M-step accumulates each
    cluster's sufficient statistics (sum_i p(k|v_i) v_i and sum_i p(k|v_i)) over blocks of
    ``chunk_size`` points (:func:`mixlab.mixture.vmf.vmf_mle` with ``index``). The result equals the
    dense computation up to float summation order.
    """
    centroids = F.normalize(torch.as_tensor(centroids).float(), dim=1)
    _, nearest = assign_nearest(z, centroids, 1)
    counts = torch.bincount(nearest[:, 0], minlength=len(centroids))
    centroids = centroids[counts > 0]
    K = len(centroids)
    sims, idx = assign_nearest(z, centroids, min(n_nearest, K))
    labels = idx[:, 0]
    if mstep == "soft":
        log_alpha = torch.zeros_like(sims)
        if alpha_mode == "size":
            frac = torch.bincount(labels, minlength=K).double() / len(z)
            log_alpha = frac.log()[idx].float()
        pi = torch.softmax(log_alpha + sims / tau, dim=1).double()  # p(k|v) on A(x), [N, H]
        sparse = {"index": idx, "K": K, "chunk_size": chunk_size}
        mu, kappa = vmf_mle(z.double(), pi, **sparse)
        if kappa_mode in ("pca", "shared"):
            kappa = pca_kappa(z.double(), pi, n_components=pca_dim, **sparse)
        mass = torch.zeros(K, dtype=torch.float64).index_add_(0, idx.reshape(-1), pi.reshape(-1))
    else:
        mu, kappa = vmf_mle(z.double(), labels=labels, K=K)
        if kappa_mode in ("pca", "shared"):
            kappa = pca_kappa(z.double(), labels=labels, K=K, n_components=pca_dim)
        mass = torch.bincount(labels, minlength=K).double()
    if kappa_mode == "shared":
        kappa = torch.full((K,), float(kappa.mean()), dtype=torch.float64)
    if kappa_mode == "constant":
        kappa = torch.full((K,), kappa_const, dtype=torch.float64)
    if kappa_max is not None:
        kappa = kappa.clamp(max=kappa_max)
    return {"mu": F.normalize(mu.float(), dim=1), "kappa": kappa.float(),
            "log_frac": (mass / mass.sum()).clamp_min(1e-12).log().float(), "assign": idx}
