"""InfoNCE, the one contrastive log-likelihood that MoCo, MiCE, TCC and SiamMM share.

Per sample n, with query q_n, positive key k_n and negatives n_i (all on the unit sphere):

    log p(n) = log  exp(q_nᵀ k_n / τ) / (exp(q_nᵀ k_n / τ) + Σ_i exp(q_nᵀ n_i / τ)),

MoCo's Eq. (2) as MiCE writes it (Tsai, Li, Zhu, ICLR 2021), TCC's instance likelihood
log p(i | x, c) (Shen et al., "You Never Cluster Alone", NeurIPS 2021, supplement Eq. 2) and MoCo
v3's loss in SiamMM's "w/ negative inst." row (Wang, Huang, Liang, arXiv 2024, Tab. 4). The
negatives are a queue of past keys or, without one, the other keys of the batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mixlab.mixture.queue_lse import queue_logsumexp

__all__ = ["info_nce"]


def info_nce(query: Tensor, key: Tensor, queue: Tensor | None, tau: float, *, normalize: bool = True) -> Tensor:
    """InfoNCE log-probability of each positive key, ``[B]`` (the loss is its negative mean).

    Args:
        query: ``[B, d]`` queries q_n; key: ``[B, d]`` positive keys k_n.
        queue: ``[ν, d]`` negatives n_i; ``None`` or empty: the other keys of the batch, i.e. the
            diagonal of log_softmax(Q Kᵀ / τ).
        tau: temperature τ.
        normalize: L2-normalize the inputs here (raw network outputs may be passed); ``False``
            takes them as they are, for callers whose vectors are unit by construction (TCC).

    With a queue the denominator is streamed by :func:`mixlab.mixture.queue_lse.queue_logsumexp`
    (the ``[B, ν]`` logits are never formed).
    """
    if normalize:
        query, key = F.normalize(query, dim=-1), F.normalize(key, dim=-1)
        queue = None if queue is None else F.normalize(queue, dim=-1)
    query = query / tau
    if queue is None or queue.numel() == 0:
        return torch.diagonal(torch.log_softmax(query @ key.T, dim=-1))
    pos = (query * key).sum(-1)
    return pos - torch.logaddexp(pos, queue_logsumexp(query, queue))
