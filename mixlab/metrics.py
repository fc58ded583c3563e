"""Clustering metrics: ACC (Hungarian), majority ACC, NMI, ARI, AMI, cluster sizes.

All functions accept numpy arrays, torch tensors or sequences of integer labels; labels
need not be contiguous (they are re-indexed). Scores are fractions (not percentages).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import (
    adjusted_mutual_info_score,
    adjusted_rand_score,
    normalized_mutual_info_score,
    silhouette_score,
)

__all__ = ["contingency", "cluster_acc", "majority_acc", "evaluate", "cluster_sizes", "silhouette_cosine",
           "assignment_confidence", "participation_ratio", "duplicate_pairs", "posterior_entropy"]


def _labels(a, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(a, torch.Tensor):
            a = a.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    a = np.asarray(a)
    if a.ndim != 1:
        a = a.reshape(-1)
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integer labels, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    if t.size == 0:
        raise ValueError("empty label arrays")
    return t, p


def contingency(y_true, y_pred) -> np.ndarray:
    """``[n_clusters, n_classes]`` counts: entry (c, k) = #points in cluster c with class k
    (rows follow ``np.unique(y_pred)``, columns ``np.unique(y_true)``)."""
    t, p = _pair(y_true, y_pred)
    _, ti = np.unique(t, return_inverse=True)
    _, pi = np.unique(p, return_inverse=True)
    m = np.zeros((pi.max() + 1, ti.max() + 1), dtype=np.int64)
    np.add.at(m, (pi, ti), 1)
    return m


def cluster_acc(y_true, y_pred) -> float:
    """Unsupervised clustering accuracy: the best one-to-one map clusters -> classes.

    max over injective matchings (Hungarian algorithm, ``linear_sum_assignment`` on the
    contingency matrix, maximising matched counts) of the fraction of points whose cluster
    is matched to their class. Works for rectangular cases: with more clusters than
    classes the unmatched clusters count as wrong; with fewer, the unmatched classes do.
    """
    m = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(m, maximize=True)
    return float(m[rows, cols].sum() / m.sum())


def majority_acc(y_true, y_pred) -> float:
    """Accuracy when every cluster is labelled with its most frequent true class (many-to-
    one; SiamMM Table 3, following Tian et al. 2021). >= :func:`cluster_acc`."""
    m = contingency(y_true, y_pred)
    return float(m.max(axis=1).sum() / m.sum())


def evaluate(y_true, y_pred) -> dict:
    """``{"acc", "nmi", "ari", "ami"}`` as python floats (fractions, not percentages).

    acc: :func:`cluster_acc`; nmi: sklearn NMI with arithmetic averaging; ari, ami:
    chance-adjusted (1 = perfect, ~0 for random labels; they can be slightly negative).
    """
    t, p = _pair(y_true, y_pred)
    return {
        "acc": cluster_acc(t, p),
        "nmi": float(normalized_mutual_info_score(t, p, average_method="arithmetic")),
        "ari": float(adjusted_rand_score(t, p)),
        "ami": float(adjusted_mutual_info_score(t, p, average_method="arithmetic")),
    }


def cluster_sizes(y_pred, K: int | None = None) -> np.ndarray:
    """Points per cluster, ``np.bincount`` of non-negative labels 0..K-1 (length
    ``max(K, max label + 1)``; empty clusters are 0)."""
    p = _labels(y_pred, "y_pred")
    if p.size and p.min() < 0:
        raise ValueError("cluster labels must be non-negative")
    return np.bincount(p, minlength=0 if K is None else int(K)).astype(np.int64)


def silhouette_cosine(embedding, y_pred) -> float:
    """Mean silhouette (Rousseeuw 1987) of a partition under cosine distance, a label-free
    diagnostic logged with every evaluation (not used to choose settings: over MiCE's and MoCo's
    grids it was anti-correlated with ACC). ``nan`` when the partition has fewer than two
    non-empty clusters."""
    p = _labels(y_pred, "y_pred")
    emb = np.asarray(embedding.detach().cpu() if hasattr(embedding, "detach") else embedding, dtype=np.float64)
    if emb.shape[0] != p.size:
        raise ValueError(f"embedding has {emb.shape[0]} rows but y_pred has {p.size} labels")
    if np.unique(p).size < 2 or np.unique(p).size >= p.size:
        return float("nan")
    return float(silhouette_score(emb, p, metric="cosine"))


def assignment_confidence(posterior, collapse_fraction: float = 0.01) -> dict:
    """How much a posterior ``[N, K]`` says about each point, label-free:

        mean_max_q = mean_i max_k q(k|x_i),   kl_to_uniform = mean_i KL(q(.|x_i) || 1/K)
                                                            = log K - mean_i H(q(.|x_i)).

    ``collapsed`` is True when kl_to_uniform < ``collapse_fraction`` * log K (the assignments carry
    under 1 % of a one-hot's information): the argmax is then a tie-break, and the run's ACC is no
    score of the method but an artefact; report such runs as collapsed."""
    posterior = posterior.detach().cpu().numpy() if hasattr(posterior, "detach") else np.asarray(posterior)
    if posterior.ndim != 2 or posterior.shape[1] < 2:
        raise ValueError(f"posterior must be [N, K] with K >= 2, got shape {posterior.shape}")
    max_q, ent = [], []
    for start in range(0, len(posterior), 8192):  # float64 in row blocks: O(8192 K) extra memory
        q = posterior[start:start + 8192].astype(np.float64)
        q = q / q.sum(1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            ent.append(-np.where(q > 0, q * np.log(q), 0.0).sum(1))
        max_q.append(q.max(1))
    log_k = np.log(posterior.shape[1])
    kl = float(log_k - np.concatenate(ent).mean())
    return {"mean_max_q": float(np.concatenate(max_q).mean()), "kl_to_uniform": kl,
            "collapsed": bool(kl < collapse_fraction * log_k)}


# ---- label-free diagnostics of a representation, prototypes and a posterior (logged per epoch) ----
def _float64(x) -> np.ndarray:
    return np.asarray(x.detach().cpu().double() if hasattr(x, "detach") else x, dtype=np.float64)


def participation_ratio(x) -> float:
    """Effective dimension of the rows of ``x`` ``[N, d]``: the participation ratio of the eigenvalues
    lambda_1..lambda_d of their covariance C = (1/N) sum_i (x_i - xbar)(x_i - xbar)^T,

        PR = (sum_k lambda_k)^2 / sum_k lambda_k^2 = tr(C)^2 / ||C||_F^2,

    between 1 (all variance along one direction) and d (isotropic); ``nan`` when the rows do not vary.
    Pass L2-normalised embeddings for the effective dimension on the sphere."""
    a = _float64(x)
    if a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"x must be [N, d] with N >= 1, got shape {a.shape}")
    a = a - a.mean(0, keepdims=True)
    cov = a.T @ a / a.shape[0]
    sq = float((cov * cov).sum())
    return float(np.trace(cov) ** 2 / sq) if sq > 0 else float("nan")


def duplicate_pairs(vectors, threshold: float = 0.95) -> int:
    """Number of pairs i < j of rows of ``vectors`` ``[K, d]`` (e.g. cluster prototypes) whose cosine
    similarity cos(v_i, v_j) = v_i^T v_j / (|v_i| |v_j|) exceeds ``threshold``: duplicated
    prototypes, which split the posterior mass of one cluster between them."""
    v = _float64(vectors)
    if v.ndim != 2:
        raise ValueError(f"vectors must be [K, d], got shape {v.shape}")
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-300)
    i, j = np.triu_indices(v.shape[0], k=1)
    return int(((v @ v.T)[i, j] > threshold).sum())


def posterior_entropy(posterior, *, log: bool = False):
    """Entropy of each row of a posterior ``[N, K]``, H(q|x_i) = -sum_k q(k|x_i) log q(k|x_i) (nats;
    0 for a one-hot row, log K for a uniform one, 0 log 0 = 0). ``log``: the input is log q. Returns
    ``[N]``, a tensor (same device, float32 or wider) for a tensor, else a float64 array; the mean over
    rows is the mean H(q|x) of a run."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        torch = None
    if torch is not None and isinstance(posterior, torch.Tensor):
        p = posterior.detach()
        p = p.float() if p.dtype in (torch.float16, torch.bfloat16) else p
        logq = p if log else torch.log(p)
        q = p.exp() if log else p
        return -torch.where(q > 0, q * logq, torch.zeros_like(q)).sum(-1)
    a = np.asarray(posterior, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        logq = a if log else np.log(a)
        q = np.exp(a) if log else a
        return -np.where(q > 0, q * logq, 0.0).sum(-1)
