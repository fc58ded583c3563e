"""The InfoNCE denominator against a queue, streamed: log Σ_i exp(q_bᵀ n_i) without the [B, ν] logits.

MoCo's, MiCE's and TCC's likelihoods all normalise a positive term by a sum over a queue of ν past
keys (MiCE Eq. 9 per expert: log Ẑ(x_n, k) = log Σ_i exp(q_{i,k}ᵀ(f_{n,k} + μ_k)/τ)). Formed
whole, the logits are a [B, K, ν] tensor (256 x 10 x 2048 floats for MiCE on the cpu profile) that
log_softmax, its backward, autograd's zero-filled select gradient and the casts each read and write
again; the profiler put those memory passes at 60-70 % of MiCE's and TCC's CPU step
(benchmarks/throughput.py --profile); streaming them made the measured float32 step 13 % (MiCE)
and 18 % (TCC) faster on the 2-core Intel CPU (results/benchmarks/throughput_cpu*.md). Here the
queue is visited in chunks that stay in cache: the forward keeps only the [B] log-sum-exps, and
the backward recomputes each chunk's products (as attention kernels do), with

    ∂ lse_b / ∂ q_b = Σ_i softmax_i(q_bᵀ n_i) n_i,      ∂ lse_b / ∂ n_i = softmax_i(q_bᵀ n_i) q_b.

Float32 at least (autocast off inside, whatever the caller's state); float64 inputs stay float64.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["queue_logsumexp"]

CHUNK_ELEMENTS = 1 << 18  # floats of one [G, B, C] block of products: 1 MiB, cache-sized


def _chunk(groups: int, batch: int, length: int) -> int:
    return max(64, min(length, CHUNK_ELEMENTS // max(groups * batch, 1)))


class _QueueLogSumExp(torch.autograd.Function):
    """lse[g, b] = log Σ_i exp(q[g, b] · n[g, i]) for q ``[G, B, d]``, n ``[G, ν, d]``."""

    @staticmethod
    def forward(ctx, q: Tensor, n: Tensor) -> Tensor:
        size = _chunk(q.shape[0], q.shape[1], n.shape[1])
        parts = [torch.logsumexp(torch.bmm(q, n[:, c:c + size].transpose(1, 2)), dim=-1)
                 for c in range(0, n.shape[1], size)]
        lse = parts[0] if len(parts) == 1 else torch.logsumexp(torch.stack(parts, dim=-1), dim=-1)
        ctx.save_for_backward(q, n, lse)
        ctx.size = size
        return lse

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, n, lse = ctx.saved_tensors
        need_q, need_n = ctx.needs_input_grad
        grad_q = torch.zeros_like(q) if need_q else None
        grad_n = torch.empty_like(n) if need_n else None
        with torch.autocast(device_type=q.device.type, enabled=False):
            for c in range(0, n.shape[1], ctx.size):
                nc = n[:, c:c + ctx.size]
                p = torch.bmm(q, nc.transpose(1, 2)).sub_(lse[..., None]).exp_().mul_(grad[..., None])
                if need_q:
                    grad_q.baddbmm_(p, nc)
                if need_n:
                    torch.bmm(p.transpose(1, 2), q, out=grad_n[:, c:c + ctx.size])
        return grad_q, grad_n


def queue_logsumexp(query: Tensor, queue: Tensor) -> Tensor:
    """log Σ_i exp(queryᵀ queue_i) per query, in float32 or wider (streamed over the queue; module doc).

    Args:
        query: ``[B, d]`` against a shared queue ``[ν, d]`` (MoCo, TCC), or ``[B, G, d]`` against
            a per-group queue ``[ν, G, d]`` (MiCE's K experts, group g of each query meets group g
            of each queue entry).
    Returns:
        ``[B]`` or ``[B, G]``.
    """
    if queue.shape[0] == 0:
        raise ValueError("queue_logsumexp needs a non-empty queue")
    flat = query.dim() == 2  # one group: [1, B, d] and [1, ν, d] without a transpose or a copy
    q, n = (query[None], queue[None]) if flat else (query.transpose(0, 1), queue.transpose(0, 1))
    if q.shape[0] != n.shape[0] or q.shape[2] != n.shape[2]:
        raise ValueError(f"query {tuple(query.shape)} and queue {tuple(queue.shape)} do not match")
    dtype = torch.promote_types(torch.promote_types(q.dtype, n.dtype), torch.float32)  # float64 stays float64
    with torch.autocast(device_type=q.device.type, enabled=False):
        lse = _QueueLogSumExp.apply(q.to(dtype).contiguous(), n.to(dtype).contiguous())
    return lse[0] if flat else lse.transpose(0, 1)
