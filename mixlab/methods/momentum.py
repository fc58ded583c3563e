"""The pieces of momentum contrast that MiCE, MoCo, SiamMM and TCC share: an EMA teacher and a FIFO queue.

* :func:`make_teacher` / :func:`ema_update_`: the teacher network f_θ' is an exponential moving
  average of the student f_θ, θ' <- m θ' + (1 - m) θ (MoCo; MiCE App. D, m = 0.999).
* :class:`MomentumTeacher`: the momentum m per step, constant or raised from a base to a final
  value by a half-cosine over training (BYOL / MoCo v3), driven by the engine's step count;
  :func:`check_teacher_momentum` validates the two config fields every such method has.
* :func:`shuffled_forward`: MoCo's shuffle-BN, so that under DDP the teacher's BatchNorm cannot
  read which keys belong to this rank's queries (one process: a plain forward).
* :class:`Queue`: a FIFO dictionary of past teacher embeddings q (MoCo Eq. 2: ν × d; MiCE §5.2,
  Eq. 9: ν × K × d). Its contents and its write pointer are buffers, so a checkpoint holds them.
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mixlab.methods.base import StepProgress
from mixlab.utils import distributed as dist
from mixlab.utils.checks import ConfigError

__all__ = ["make_teacher", "ema_update_", "MomentumTeacher", "check_teacher_momentum", "shuffled_forward", "Queue"]


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of ``student`` (θ' = θ at initialisation, MiCE Algorithm 1 line 1)."""
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, m: float) -> None:
    """In place: θ' <- m θ' + (1 - m) θ for every parameter (MiCE App. D, MoCo).

    Buffers (BatchNorm running statistics) are *not* averaged: like MoCo's key encoder, the
    teacher runs its own forward passes in train mode and keeps its own running statistics.
    ``teacher`` and ``student`` must have the same parameter layout (``make_teacher``).
    """
    t_params = list(teacher.parameters())
    s_params = list(student.parameters())
    if len(t_params) != len(s_params):
        raise ValueError("teacher and student have different parameter layouts")
    if not t_params:
        return
    s_params = [p.detach() for p in s_params]
    if all(t.dtype == s.dtype and t.device == s.device for t, s in zip(t_params, s_params)):
        torch._foreach_lerp_(t_params, s_params, 1.0 - m)  # t + (1-m)(s - t) = m t + (1-m) s
    else:  # pragma: no cover - mixed dtypes/devices
        for t, s in zip(t_params, s_params):
            t.lerp_(s.to(t), 1.0 - m)


class MomentumTeacher:
    """The EMA schedule of a teacher: m_t = final - (final - base) (cos(π t / T) + 1) / 2 at step t of T
    (BYOL Eq. in §3.2, MoCo v3: base 0.99 -> final 1), or m_t = base when ``final`` is None."""

    def __init__(self, base: float, final: float | None = None):
        self.base, self.final = base, final

    def momentum(self, progress: StepProgress) -> float:
        if self.final is None:
            return self.base
        return self.final - (self.final - self.base) * (math.cos(math.pi * progress.fraction) + 1.0) / 2.0

    def update_(self, teacher: nn.Module, student: nn.Module, progress: StepProgress) -> None:
        """θ' <- m_t θ' + (1 - m_t) θ (:func:`ema_update_`)."""
        ema_update_(teacher, student, self.momentum(progress))


def check_teacher_momentum(cfg) -> None:
    """``cfg.teacher_momentum`` in [0, 1) and ``cfg.teacher_momentum_final`` None or in [base, 1]."""
    base, final = cfg.teacher_momentum, cfg.teacher_momentum_final
    if not 0.0 <= base < 1.0:
        raise ConfigError(f"method.teacher_momentum={base!r} must be in [0, 1)")
    if final is not None and not base <= final <= 1.0:
        raise ConfigError(f"method.teacher_momentum_final={final!r} must be in [teacher_momentum={base}, 1]"
                          " (or null for a constant momentum)")


@torch.no_grad()
def shuffled_forward(teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``teacher(x)`` with shuffle-BN (MoCo §3.3): under DDP the global batch is permuted across
    ranks (rank 0 draws the permutation), each rank encodes one shard, and the outputs are
    gathered and un-permuted, so BatchNorm statistics mix keys of every rank; a tuple output is
    un-permuted item by item. Equal per-rank batch sizes, as the engine's sampler gives. On one
    process this is exactly ``teacher(x)``."""
    if not dist.is_distributed():
        return teacher(x)
    b = x.shape[0]
    everything = dist.all_gather_cat(x)
    perm = dist.broadcast_(torch.randperm(len(everything), device=x.device))
    shard = everything[perm[dist.rank() * b:(dist.rank() + 1) * b]]

    def unshuffle(y: torch.Tensor) -> torch.Tensor:
        gathered = dist.all_gather_cat(y.contiguous())
        restored = torch.empty_like(gathered)
        restored[perm] = gathered
        return restored[dist.rank() * b:(dist.rank() + 1) * b]

    out = teacher(shard)
    return tuple(unshuffle(y) for y in out) if isinstance(out, tuple) else unshuffle(out)


class Queue(nn.Module):
    """FIFO queue of ``size`` entries of shape ``item_shape`` (buffers ``data`` and ``ptr``).

    ``data[i]`` is the i-th slot; ``ptr`` is the slot the next entry goes to (a 0-dim int64
    buffer, checkpointed with the module). :meth:`push` writes a batch at ``ptr``, ``ptr + 1``, ...
    wrapping modulo ``size`` (any batch size, also one that does not divide ``size``), so the
    oldest entries are overwritten first. Under DDP the batch is first gathered from all ranks,
    which keeps every rank's queue identical (the keys of the whole global batch are enqueued).

    Initial contents (MoCo's choice, kept by MiCE): random unit vectors along the last axis
    (``normalize=True``) drawn from torch's global RNG, so the engine's seed fixes them.
    """

    def __init__(self, size: int, item_shape: Sequence[int], normalize: bool = True):
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be >= 1, got {size}")
        data = torch.randn(size, *item_shape)
        if normalize:
            data = F.normalize(data, dim=-1)
        self.normalize = normalize
        self.register_buffer("data", data)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.data.shape[0]

    @torch.no_grad()
    def push(self, items: torch.Tensor, gather: bool = True) -> None:
        """Enqueue ``items`` ``[B, *item_shape]`` (newest last), dequeuing the oldest B."""
        if gather:
            items = dist.all_gather_cat(items)
        items = items.detach().to(self.data.dtype)
        if items.shape[1:] != self.data.shape[1:]:
            raise ValueError(f"queue items have shape {tuple(items.shape[1:])}, expected {tuple(self.data.shape[1:])}")
        total = items.shape[0]
        ptr = int(self.ptr)
        # item j of the batch goes to slot (ptr + j) mod size, exactly as if pushed one by one;
        # when the batch is longer than the queue only its newest `size` items survive
        skip = max(0, total - self.size)
        idx = (ptr + skip + torch.arange(total - skip, device=self.data.device)) % self.size
        self.data[idx] = items[skip:]
        self.ptr.fill_((ptr + total) % self.size)

    def forward(self) -> torch.Tensor:
        """A copy of the current contents: a loss may read it and the same ``training_step`` push
        the new keys (in place) before the backward pass."""
        return self.data.detach().clone()
